"""Dataset-drift detection from the informativeness score (Bertolini et al. 2022, section 3).

A representation attends to data differently than to noise; when inputs drift away from the training
distribution their informativeness drops. ``DriftDetector`` measures the relative change
``r(x) = (I_ref - I(x)) / I_ref`` against the mean informativeness ``I_ref`` of reference data, and flags a batch
whose mean relative change exceeds a threshold calibrated on held-out reference data, so that clean batches
raise a false alarm with probability ``false_alarm_rate`` (one-sided: only drops of informativeness count).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from captum_layerpair._checks import check_probability
from captum_layerpair.metrics import LatentScore, split_batch

__all__ = ["DriftResult", "DriftDetector"]


@dataclass
class DriftResult:
    """Relative informativeness change of one batch.

    Attributes
    ----------
    per_sample: ``[N]`` relative change ``(I_ref - I(x)) / I_ref`` of each sample (positive: less informative).
    mean, std: mean and sample standard deviation of ``per_sample`` (std is ``nan`` for one sample).
    threshold: the batch-mean threshold for a batch of this size, at the detector's false-alarm rate.
    p_value: fraction of clean (held-out reference) batches of this size whose mean change is at least ``mean``.
    drifted: ``mean > threshold``.
    sample_flags: ``[N]`` bool, samples whose change exceeds the per-sample threshold.
    false_alarm_rate: the rate the thresholds were calibrated for.
    """

    per_sample: torch.Tensor
    mean: float
    std: float
    threshold: float
    p_value: float
    drifted: bool
    sample_flags: torch.Tensor
    false_alarm_rate: float

    def __str__(self) -> str:
        verdict = "DRIFT" if self.drifted else "no drift"
        return (f"relative informativeness change {self.mean:+.4f} ± {self.std:.4f} (n = {self.per_sample.numel()}); "
                f"threshold {self.threshold:+.4f} at false-alarm rate {self.false_alarm_rate:g}, "
                f"p = {self.p_value:.3f}: {verdict}")


class DriftDetector:
    """Detect dataset drift as a drop of informativeness relative to reference data.

    Parameters
    ----------
    score:
        An ``InformativenessScore`` (any latent score with ``score(inputs) -> [N]`` works the same way).
    false_alarm_rate:
        Probability in ``(0, 1)`` that a clean batch (drawn like the reference data) is flagged.
    calibration_fraction:
        Share of the reference samples held out (at random, seeded) to calibrate the thresholds; the rest give
        ``I_ref``. Ignored when ``fit`` receives a separate ``calibration_loader``.
    n_bootstrap:
        Number of resampled clean batches used to calibrate the batch-mean threshold for each batch size.
    seed:
        Seed of the split and of the resampling.
    **attribute_kwargs:
        Passed to ``score.score`` (and so to ``layer_pair.attribute``).

    Notes
    -----
    The per-sample threshold is the ``1 - false_alarm_rate`` quantile of the held-out relative changes. The batch
    threshold for batch size ``B`` is the same quantile of a predictive null distribution of clean batch means:
    means of ``n_bootstrap`` batches of ``B`` held-out samples drawn with replacement, each shifted by a normal
    draw with the standard error of the held-out mean, because the held-out mean itself estimates the clean mean
    only up to that error (which matters when the calibration set is not much larger than ``B``). Held-out samples
    must be i.i.d. like the clean batches to come. The stated false-alarm rate is then the expected rate over
    calibration sets; a given calibration set's rate scatters around it (``benchmarks/drift.py`` measures it on
    fresh clean data).

    Examples
    --------
    >>> detector = DriftDetector(InformativenessScore(lp), false_alarm_rate=0.05).fit(reference_loader)
    >>> print(detector.relative_change(new_batch))
    """

    def __init__(self, score: LatentScore, false_alarm_rate: float = 0.05, calibration_fraction: float = 0.5,
                 n_bootstrap: int = 2000, seed: int = 0, **attribute_kwargs: Any) -> None:
        if not callable(getattr(score, "score", None)):
            raise TypeError(f"score must be an InformativenessScore (anything with score(inputs) -> [N]), got "
                            f"{type(score).__name__}")
        check_probability("false_alarm_rate", false_alarm_rate)
        check_probability("calibration_fraction", calibration_fraction)
        if n_bootstrap < 100:
            raise ValueError(f"n_bootstrap must be >= 100 for a usable quantile, got {n_bootstrap}")
        self.score = score
        self.false_alarm_rate = false_alarm_rate
        self.calibration_fraction = calibration_fraction
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.attribute_kwargs = attribute_kwargs
        self.reference_mean: float | None = None
        self.calibration_changes: torch.Tensor | None = None
        self.sample_threshold: float | None = None
        self._batch_null: dict[int, torch.Tensor] = {}
        self._n_fitted = 0

    def _scores(self, loader: Iterable[Any]) -> torch.Tensor:
        values, seen = [], self._n_fitted
        for batch in loader:
            inputs, indices = split_batch(batch)
            if isinstance(self.score, LatentScore):  # each reference sample gets its own noise draw
                indices = torch.arange(seen, seen + len(inputs)) if indices is None else indices
                scores = self.score.score(inputs, indices=indices, **self.attribute_kwargs)
            else:
                scores = self.score.score(inputs, **self.attribute_kwargs)
            values.append(scores.detach().cpu().double())
            seen += len(inputs)
        self._n_fitted = seen
        if not values:
            raise ValueError("the reference loader yielded no batches")
        return torch.cat(values)

    def fit(self, reference_loader: Iterable[Any], calibration_loader: Iterable[Any] | None = None) -> DriftDetector:
        """Compute ``I_ref`` and calibrate the thresholds.

        Parameters
        ----------
        reference_loader:
            Batches of clean inputs (tensors or tuples whose first item is the input).
        calibration_loader:
            Separate clean batches for the thresholds; without it ``calibration_fraction`` of the reference
            samples are held out.
        """
        self._n_fitted = 0
        reference = self._scores(reference_loader)
        if calibration_loader is None:
            gen = torch.Generator().manual_seed(self.seed)
            order = torch.randperm(len(reference), generator=gen)
            n_cal = int(round(self.calibration_fraction * len(reference)))
            if n_cal < 2 or len(reference) - n_cal < 1:
                raise ValueError(f"{len(reference)} reference samples are too few to hold out "
                                 f"calibration_fraction = {self.calibration_fraction} of them")
            calibration, reference = reference[order[:n_cal]], reference[order[n_cal:]]
        else:
            calibration = self._scores(calibration_loader)
        self.reference_mean = float(reference.mean())
        if self.reference_mean <= 0:
            raise ValueError(f"the reference informativeness is {self.reference_mean:g}; relative changes need a "
                             "positive reference")
        self.calibration_changes = (self.reference_mean - calibration) / self.reference_mean
        self.sample_threshold = float(torch.quantile(self.calibration_changes, 1 - self.false_alarm_rate))
        self._batch_null = {}
        return self

    def _null_means(self, batch_size: int) -> torch.Tensor:
        """Predictive null of clean batch means for ``batch_size``: ``[n_bootstrap]``, sorted."""
        if batch_size not in self._batch_null:
            changes = self.calibration_changes
            assert changes is not None
            gen = torch.Generator().manual_seed(self.seed + batch_size)
            index = torch.randint(len(changes), (self.n_bootstrap, batch_size), generator=gen)
            standard_error = changes.std() / len(changes) ** 0.5
            shift = standard_error * torch.randn(self.n_bootstrap, generator=gen, dtype=changes.dtype)
            self._batch_null[batch_size] = (changes[index].mean(1) + shift).sort().values
        return self._batch_null[batch_size]

    def relative_change(self, inputs: torch.Tensor) -> DriftResult:
        """Relative informativeness change ``(I_ref - I(x)) / I_ref`` of a batch ``inputs [N, ...]``."""
        if self.reference_mean is None:
            raise RuntimeError("call fit(reference_loader) before relative_change()")
        if isinstance(self.score, LatentScore):  # noise draws of their own, not those of the reference samples
            start = self._n_fitted
            scores = self.score.score(inputs, indices=torch.arange(start, start + len(inputs)), **self.attribute_kwargs)
        else:
            scores = self.score.score(inputs, **self.attribute_kwargs)
        per_sample = self.reference_mean - scores.double().cpu()
        per_sample = per_sample / self.reference_mean
        null = self._null_means(len(per_sample))
        mean = float(per_sample.mean())
        threshold = float(torch.quantile(null, 1 - self.false_alarm_rate))
        std = float(per_sample.std()) if len(per_sample) > 1 else float("nan")
        return DriftResult(per_sample=per_sample.float(), mean=mean, std=std, threshold=threshold,
                           p_value=float((null >= mean).double().mean()), drifted=mean > threshold,
                           sample_flags=per_sample > self.sample_threshold, false_alarm_rate=self.false_alarm_rate)
