"""Per-sample values keyed by dataset index, as ``torchmetrics`` states: the accumulation behind every latent score.

Each state is a list reduced by concatenation (``dist_reduce_fx="cat"``), kept on the metric's device (``.to(device)``
moves it, so an NCCL-only process group works). ``compute()`` gathers the states of every process, sorts them by
dataset index and drops repeated indices (a padding sampler such as ``DistributedSampler`` scores some samples
twice), so 1, 2 or 4 processes give the same values in the same order.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from captum_layerpair.metrics.summary import ScoreSummary

__all__ = ["PerSampleMetric", "ScoreAccumulator", "as_indices"]


def as_indices(n: int, indices: Any) -> torch.Tensor:
    """``indices`` as ``[n]`` int64 dataset indices on the CPU; ``ValueError`` for anything else."""
    out = torch.as_tensor(indices).detach().cpu()
    if out.dtype.is_floating_point or out.dtype == torch.bool or out.shape != (n,):
        raise ValueError(f"indices must be {n} integer dataset indices (one per sample, shape [{n}]); got "
                         f"dtype {out.dtype} and shape {tuple(out.shape)}")
    return out.long()


class PerSampleMetric(Metric):
    """Base of metrics whose state is per-sample values with their dataset indices.

    Subclasses name their float states in ``value_states`` (the index state is ``indices``) and add samples with
    ``_append``; ``_collected()`` gives every process's samples, sorted by index and without repeats.
    ``**metric_kwargs`` go to ``torchmetrics.Metric`` (``process_group``, ``sync_on_compute``, ``compute_on_cpu``,
    ``dist_sync_fn``, ...).
    """

    full_state_update = False
    value_states: tuple[str, ...] = ("values",)

    def __init__(self, **metric_kwargs: Any) -> None:
        super().__init__(**metric_kwargs)
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        for state in self.value_states:
            self.add_state(state, default=[], dist_reduce_fx="cat")

    def _seen(self) -> int:
        """Samples accumulated on this process so far."""
        indices = self.indices
        return int(indices.numel()) if isinstance(indices, torch.Tensor) else sum(int(i.numel()) for i in indices)

    def _next_indices(self, n: int, indices: Any = None) -> torch.Tensor:
        """Dataset indices ``[n]`` (int64, CPU) of the next ``n`` samples: ``indices`` when given, else consecutive
        numbers after the samples already accumulated on this process (the dataset order of one process)."""
        if indices is None:
            start = self._seen()
            return torch.arange(start, start + n)
        return as_indices(n, indices)

    def _append(self, indices: torch.Tensor, **values: torch.Tensor | None) -> None:
        """Add samples: ``indices [n]`` and, for each name in ``value_states``, finite values ``[n]``."""
        for name in self.value_states:
            value = values.get(name)
            if value is None:
                continue
            if not isinstance(value, torch.Tensor) or value.shape != indices.shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"update() takes per-sample scores of shape [N]; got {got}")
            bad = ~torch.isfinite(value)
            if bad.any():
                raise ValueError(f"update() got {int(bad.sum())} non-finite {name}")
            getattr(self, name).append(value.detach().to(self.device, torch.float64))
        self.indices.append(indices.to(self.device))

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        # A process without samples sends typed empty states (torchmetrics would send its default float dtype,
        # which cannot be gathered with the int64 indices of the other processes).
        for name, dtype in (("indices", torch.int64), *((state, torch.float64) for state in self.value_states)):
            if isinstance(getattr(self, name), list) and not getattr(self, name):
                setattr(self, name, [torch.zeros(0, dtype=dtype, device=self.device)])
        super()._sync_dist(dist_sync_fn, process_group)

    def _collected(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(indices [n], {state: values [n]})`` of every process, sorted by index, each index once.

        A repeated index is a sample scored twice (a padding sampler); its values must agree (up to rounding
        between batch compositions), else two different samples carried the same index, which is an error.
        """
        def cat(state: Any, dtype: torch.dtype) -> torch.Tensor:
            if isinstance(state, list) and not state:
                return torch.zeros(0, dtype=dtype)
            return dim_zero_cat(state).cpu()

        indices = cat(self.indices, torch.int64)
        states = {name: cat(getattr(self, name), torch.float64) for name in self.value_states}
        states = {name: values for name, values in states.items() if values.numel() == indices.numel()}
        indices, order = torch.sort(indices, stable=True)
        states = {name: values[order] for name, values in states.items()}
        repeated = indices[1:] == indices[:-1]
        if repeated.any():
            for name, values in states.items():
                clash = repeated & ~torch.isclose(values[1:], values[:-1], rtol=1e-4, atol=1e-6)
                if clash.any():
                    i = int(clash.nonzero()[0])
                    raise ValueError(
                        f"dataset index {int(indices[i])} was scored twice with different {name} "
                        f"({float(values[i]):.6g} and {float(values[i + 1]):.6g}): two samples carry the same index. "
                        "When scoring across processes give each sample its dataset index: wrap the dataset in "
                        "IndexedDataset (or use shard_loader), or pass update(..., indices=...)")
            keep = torch.cat([torch.ones(1, dtype=torch.bool), ~repeated])
            indices, states = indices[keep], {name: values[keep] for name, values in states.items()}
        return indices, states


class ScoreAccumulator(PerSampleMetric):
    """Accumulate per-sample scores (computed by any function) over batches and processes; ``compute()`` gives a
    :class:`ScoreSummary` of every sample, sorted by dataset index.

    Parameters
    ----------
    name:
        Name carried into the summary.
    **metric_kwargs:
        ``torchmetrics.Metric`` options (``process_group``, ``sync_on_compute``, ...).

    Examples
    --------
    >>> acc = ScoreAccumulator("informativeness")
    >>> for batch in shard_loader(dataset, batch_size=64):
    ...     acc.update(my_score(batch.data[0]), indices=batch.index)
    >>> summary = acc.compute()          # the whole dataset, on every process
    """

    is_differentiable = False
    higher_is_better = None

    def __init__(self, name: str = "score", **metric_kwargs: Any) -> None:
        super().__init__(**metric_kwargs)
        self.name = name

    def update(self, values: torch.Tensor, indices: Any = None) -> None:
        """Add per-sample scores ``values [N]`` (finite) of the samples with dataset ``indices [N]`` (default:
        consecutive numbers after the samples already added on this process)."""
        if not isinstance(values, torch.Tensor) or values.dim() != 1:
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(f"update() takes per-sample scores of shape [N]; got {shape}")
        self._append(self._next_indices(len(values), indices), values=values)

    def compute(self) -> ScoreSummary:
        """Summary of every update so far (over all processes when ``torch.distributed`` is initialised)."""
        indices, states = self._collected()
        return ScoreSummary.of(self.name, states.get("values", torch.zeros(0)), indices)
