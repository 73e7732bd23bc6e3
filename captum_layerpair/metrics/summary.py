"""Dataset-level score summaries and the accumulator that builds them, torchmetrics-style.

``ScoreAccumulator.update(values)`` adds per-sample scores; ``compute()`` returns a :class:`ScoreSummary`. Its
state (sum of values, sum of squares, count, and the per-sample values) is reduced across ``torch.distributed``
ranks in ``compute()`` when a process group is initialised: the sums and the count are summed, the values are
gathered (rank 0's first), so every rank gets the summary of the whole dataset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["ScoreSummary", "ScoreAccumulator"]


@dataclass
class ScoreSummary:
    """Mean, spread and per-sample values of a latent score over a dataset, with optional baselines.

    Attributes
    ----------
    name: what was scored (``"informativeness"``, ``"disentanglement"``).
    mean: mean of the per-sample scores.
    std: sample standard deviation of the per-sample scores (``nan`` for one sample).
    values: ``[n]`` per-sample scores, in dataset order (rank 0's samples first when distributed).
    random_model: the same score for a randomly re-initialised copy of the model, when asked for.
    null: the same score with every input replaced by noise (noise vs. noise for informativeness), when asked for.
    """

    name: str
    mean: float
    std: float
    values: torch.Tensor
    random_model: ScoreSummary | None = None
    null: ScoreSummary | None = None

    @property
    def n(self) -> int:
        """Number of scored samples."""
        return int(self.values.numel())

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.mean:.4f} ± {self.std:.4f} (mean ± std over n = {self.n})"]
        if self.random_model is not None:
            lines.append(f"  random model: {self.random_model.mean:.4f} ± {self.random_model.std:.4f}")
        if self.null is not None:
            lines.append(f"  null (noise inputs): {self.null.mean:.4f} ± {self.null.std:.4f}")
        return "\n".join(lines)


class ScoreAccumulator:
    """Accumulate per-sample scores over batches; ``compute()`` gives a :class:`ScoreSummary`.

    Parameters
    ----------
    name:
        Name carried into the summary.
    sync_on_compute:
        Reduce the state across ``torch.distributed`` ranks in ``compute()`` when a process group is
        initialised (every rank must then call ``compute()``).
    process_group:
        The group to reduce over (default: the whole world).

    Examples
    --------
    >>> acc = ScoreAccumulator("informativeness")
    >>> for x in loader:
    ...     acc.update(score.score(x))
    >>> summary = acc.compute()
    """

    def __init__(self, name: str = "score", sync_on_compute: bool = True,
                 process_group: dist.ProcessGroup | None = None) -> None:
        self.name = name
        self.sync_on_compute = sync_on_compute
        self.process_group = process_group
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self.total = torch.zeros((), dtype=torch.float64)
        self.total_sq = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.int64)
        self.values: list[torch.Tensor] = []

    def update(self, values: torch.Tensor) -> None:
        """Add per-sample scores ``[N]`` (finite)."""
        if not isinstance(values, torch.Tensor) or values.dim() != 1:
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(f"update() takes per-sample scores of shape [N]; got {shape}")
        if not torch.isfinite(values).all():
            raise ValueError(f"update() got {int((~torch.isfinite(values)).sum())} non-finite scores")
        values = values.detach().to("cpu", torch.float64)
        self.total += values.sum()
        self.total_sq += values.square().sum()
        self.count += values.numel()
        self.values.append(values)

    def _state(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        values = torch.cat(self.values) if self.values else torch.zeros(0, dtype=torch.float64)
        if not (self.sync_on_compute and dist.is_available() and dist.is_initialized()):
            return self.total, self.total_sq, self.count, values
        return _reduce_across_ranks(self.total, self.total_sq, self.count, values, self.process_group)

    def compute(self) -> ScoreSummary:
        """Summary of every update so far (over all ranks when distributed)."""
        total, total_sq, count, values = self._state()
        n = int(count)
        if n == 0:
            raise ValueError(f"no {self.name} scores to summarise: update() was never called (or got empty batches)")
        mean = float(total) / n
        std = math.sqrt(max(float(total_sq) - n * mean * mean, 0.0) / (n - 1)) if n > 1 else math.nan
        return ScoreSummary(self.name, mean, std, values.float())


def _reduce_across_ranks(total: torch.Tensor, total_sq: torch.Tensor, count: torch.Tensor, values: torch.Tensor,
                         group: dist.ProcessGroup | None) -> tuple[torch.Tensor, ...]:
    """Sum the sums and counts over ranks and gather every rank's values (padded to the longest, then cut)."""
    sums = torch.stack([total, total_sq, count.to(torch.float64)])
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    world = dist.get_world_size(group)
    lengths = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(lengths, torch.tensor([values.numel()]), group=group)
    longest = int(max(length.item() for length in lengths))
    padded = torch.zeros(longest, dtype=torch.float64)
    padded[:values.numel()] = values
    gathered = [torch.zeros(longest, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    values = torch.cat([g[:int(length.item())] for g, length in zip(gathered, lengths)])
    return sums[0], sums[1], sums[2].round().long(), values
