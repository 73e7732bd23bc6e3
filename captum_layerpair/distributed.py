"""Evaluating over a dataset in one or several processes: dataset indices, sharding without padding, rank 0.

Per-sample random draws (noise inputs) come from the seed and the sample's dataset index, and results are sorted by
it, so scores do not depend on the batching or on the number of processes. ``IndexedDataset`` makes every item
carry its index; ``ShardSampler`` gives each process a contiguous share of the dataset, each sample exactly once
(``torch.utils.data.DistributedSampler`` pads the last share by repeating samples; the scores drop repeats by
index, but a padding-free sampler does no wasted work); ``shard_loader`` puts the two together.
"""
from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["Indexed", "IndexedDataset", "ShardSampler", "shard_loader", "shard_indices", "split_batch", "get_rank",
           "get_world_size"]


class Indexed(NamedTuple):
    """A dataset item (or, once collated, a batch) with its dataset index (``[B]`` int64 for a batch)."""

    data: Any
    index: Any


class IndexedDataset(Dataset):
    """Wrap a map-style dataset so that item ``i`` is ``Indexed(dataset[i], i)``.

    A ``DataLoader`` collates the items into ``Indexed(batch, indices [B])``, which every latent score's
    ``update``, ``score`` and ``evaluate`` understand.
    """

    def __init__(self, dataset: Any) -> None:
        if not hasattr(dataset, "__getitem__") or not isinstance(dataset, Sized):
            raise TypeError(f"IndexedDataset needs a map-style dataset (with __getitem__ and __len__), got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Indexed:
        return Indexed(self.dataset[index], index)


def get_rank() -> int:
    """This process's rank in the default ``torch.distributed`` group (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes in the default ``torch.distributed`` group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class ShardSampler(Sampler[int]):
    """This process's contiguous share of ``range(n)``: every index on exactly one process, no padding.

    Parameters
    ----------
    data:
        The dataset (or its length ``n``).
    num_replicas, rank:
        Number of processes and this process's rank (default: from ``torch.distributed``, else 1 and 0).
    batch_size:
        Make share boundaries multiples of ``batch_size``, so every process's batches are exactly the batches one
        process would form (whole batches are shared out); then even per-batch random draws of an attribution
        method (seeded by the batch's first index) match a single process.
    """

    def __init__(self, data: Sized | int, num_replicas: int | None = None, rank: int | None = None,
                 batch_size: int = 1) -> None:
        n = data if isinstance(data, int) else len(data)
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas}), got {self.rank}")
        blocks = -(-n // batch_size)
        first, last = (blocks * r // self.num_replicas for r in (self.rank, self.rank + 1))
        self.indices = range(min(first * batch_size, n), min(last * batch_size, n))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def shard_loader(dataset: Any, batch_size: int = 1, num_replicas: int | None = None, rank: int | None = None,
                 **loader_kwargs: Any) -> DataLoader:
    """A ``DataLoader`` over this process's share of ``dataset`` whose batches are ``Indexed(batch, indices)``.

    Shares are contiguous runs of whole batches (``ShardSampler(..., batch_size=batch_size)``), so per-sample
    scores on any number of processes equal those of one process. ``loader_kwargs`` go to ``DataLoader``
    (``num_workers``, ``collate_fn``, ...; not ``sampler`` or ``shuffle``).

    Examples
    --------
    >>> loader = shard_loader(test_set, batch_size=64)       # under torchrun: this rank's batches
    >>> summary = InformativenessScore(lp, calibrate=True).evaluate(loader, seed=0)   # the whole dataset
    """
    sampler = ShardSampler(dataset, num_replicas, rank, batch_size)
    return DataLoader(IndexedDataset(dataset), batch_size=batch_size, sampler=sampler, **loader_kwargs)


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
    """``(inputs, dataset indices or None)`` of a batch: an input tensor, a tuple / list whose first item is the
    input tensor (as a ``TensorDataset`` gives), or ``Indexed(one of those, indices)``."""
    if isinstance(batch, Indexed):
        inputs, _ = split_batch(batch.data)
        return inputs, torch.as_tensor(batch.index)
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], None
    raise TypeError("batches must be input tensors, tuples / lists whose first item is the input tensor (as a "
                    "TensorDataset gives), or Indexed(batch, indices) (as IndexedDataset gives); got a "
                    f"{type(batch).__name__}")
