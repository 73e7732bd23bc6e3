"""``ScoreSummary``: a latent score over a dataset (mean, spread, per-sample values with their dataset indices) and
its baselines."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["ScoreSummary"]


@dataclass
class ScoreSummary:
    """Mean, spread and per-sample values of a latent score over a dataset, with optional baselines.

    Attributes
    ----------
    name: what was scored (``"informativeness"``, ``"disentanglement"``, ``"calibrated informativeness"``).
    mean: mean of the per-sample scores.
    std: sample standard deviation of the per-sample scores (``nan`` for one sample).
    values: ``[n]`` per-sample scores (float32), sorted by dataset index.
    random_model: the same score for a randomly re-initialised copy of the model, when asked for.
    null: the same score with every input replaced by noise (noise vs. noise for informativeness), when asked for.
    indices: ``[n]`` dataset indices (int64) of ``values``, ascending and unique (also across processes).
    calibrated: for informativeness with ``calibrate=True``, the calibrated score ``I(x) / I_null(x)`` per sample
        (a ``ScoreSummary`` whose mean is the calibrated mean; 1 means "as informative as noise"), else ``None``.
        Raw ``I`` is dominated by input structure; the calibrated score is the one to read first.
    """

    name: str
    mean: float
    std: float
    values: torch.Tensor
    random_model: ScoreSummary | None = None
    null: ScoreSummary | None = None
    indices: torch.Tensor | None = None
    calibrated: ScoreSummary | None = None

    @classmethod
    def of(cls, name: str, values: torch.Tensor, indices: torch.Tensor | None = None) -> ScoreSummary:
        """The summary of per-sample ``values [n]`` (mean and standard deviation in float64)."""
        n = values.numel()
        if n == 0:
            raise ValueError(f"no {name} scores to summarise: update() was never called (or got empty batches)")
        values = values.detach().double().cpu()
        std = float(values.std()) if n > 1 else math.nan
        index = None if indices is None else indices.detach().cpu().long()
        return cls(name, float(values.mean()), std, values.float(), indices=index)

    @property
    def n(self) -> int:
        """Number of scored samples."""
        return int(self.values.numel())

    def __str__(self) -> str:
        lines = []
        if self.calibrated is not None:
            lines.append(f"{self.calibrated.name}: {self.calibrated.mean:.4f} ± {self.calibrated.std:.4f} "
                         f"(mean ± std over n = {self.calibrated.n}; 1 = as informative as noise)")
        lines.append(f"{self.name}: {self.mean:.4f} ± {self.std:.4f} (mean ± std over n = {self.n})")
        if self.random_model is not None:
            calibrated = self.random_model.calibrated
            extra = f" (calibrated {calibrated.mean:.4f} ± {calibrated.std:.4f})" if calibrated is not None else ""
            lines.append(f"  random model: {self.random_model.mean:.4f} ± {self.random_model.std:.4f}{extra}")
        if self.null is not None:
            lines.append(f"  null (noise inputs): {self.null.mean:.4f} ± {self.null.std:.4f}")
        return "\n".join(lines)
