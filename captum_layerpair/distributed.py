"""Evaluating over a dataset in one or several processes: dataset indices, sharding, batches, rank 0.

Metrics whose per-sample values must not depend on the batching or on the process (every random draw comes from a
seed and the sample's dataset index) need each sample's dataset index. ``IndexedDataset`` carries it through a
``DataLoader``; ``split_batch`` reads it back; ``shard_indices`` splits a dataset over ranks without padding (unlike
``torch.utils.data.DistributedSampler``, which repeats samples to even out the shards; metrics that gather values
with their indices drop such repeats).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

__all__ = ["IndexedDataset", "shard_indices", "split_batch", "get_rank", "get_world_size"]


def get_rank() -> int:
    """This process's rank in the default process group (0 without ``torch.distributed``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes in the default process group (1 without ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class IndexedDataset(Dataset):
    """Wrap a map-style dataset so that every item also carries its dataset index.

    Item ``i`` is ``{"inputs": x_i, "index": i}``, where ``x_i`` is the wrapped dataset's item (its first element
    when the item is a tuple or list, as a ``TensorDataset(x, y)`` gives). The default collate function turns a
    batch into ``{"inputs": [B, ...], "index": [B]}``, which ``split_batch`` (and every ``evaluate(loader)``
    that needs indices) reads.

    Examples
    --------
    >>> loader = DataLoader(IndexedDataset(TensorDataset(images, labels)), batch_size=32)
    >>> ModelParameterRandomization(lp).evaluate(loader)
    """

    def __init__(self, dataset: Any) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"IndexedDataset wraps a map-style dataset (with __getitem__ and __len__); got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        if isinstance(item, (tuple, list)):
            item = item[0]
        return {"inputs": item, "index": int(index)}


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> range:
    """Dataset indices of this rank's shard, without padding: ``range(rank, n, world_size)``.

    Every index belongs to exactly one rank; shards differ in length by at most one. Defaults: the current
    process's rank and world size. Use it with ``torch.utils.data.Subset(dataset, shard_indices(len(dataset)))``.
    """
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size) = [0, {world_size}); got {rank}")
    return range(rank, n, world_size)


def split_batch(batch: Any) -> tuple[Any, torch.Tensor | None]:
    """``(inputs, indices)`` of a batch; ``indices`` is ``None`` where the batch does not carry them.

    A batch is an input tensor, a tuple / list whose first item is the input (``(x, y)`` from a
    ``TensorDataset``), or a mapping with ``"inputs"`` and optionally ``"index"`` (from ``IndexedDataset``).
    """
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, Mapping) and "inputs" in batch:
        index = batch.get("index")
        return batch["inputs"], None if index is None else torch.as_tensor(index, dtype=torch.int64).reshape(-1)
    if isinstance(batch, Sequence) and not isinstance(batch, str) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], None
    raise TypeError("batches must be input tensors, tuples / lists whose first item is the input tensor, or mappings "
                    f"with an 'inputs' key (and an 'index' key, as IndexedDataset gives); got a {type(batch).__name__}")
