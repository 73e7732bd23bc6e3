"""Statistics of the validation suite, over independent models only, and its one verdict table.

Every function takes one value per independent model (or per independent pair of models): no statistic pools
several variants of one model as if they were independent observations. The computations are scipy's and
scikit-learn's (``roc_auc_score``, ``bootstrap``, ``kendalltau``, ``ttest_1samp``, ``binomtest``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable here"


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided confidence interval (``level``) and, where it applies, a p-value."""

    value: float
    low: float
    high: float
    p_value: float = float("nan")
    level: float = 0.95

    def ci(self, digits: int = 2, scale: float = 1.0) -> str:
        return f"[{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"


def auroc(positives: Sequence[float], negatives: Sequence[float], n_boot: int = 2000, seed: int = 0) -> Estimate:
    """AUROC of ``positives`` (label 1, e.g. trained models) against ``negatives`` (e.g. random models).

    The value is ``sklearn.metrics.roc_auc_score``. CI: percentile bootstrap resampling each group separately
    (``scipy.stats.bootstrap``, vectorised through the Mann-Whitney U statistic, ``AUROC = U / (n_pos n_neg)``);
    p-value: one-sided Mann-Whitney U (positives larger). With perfect separation every resample gives 1 and the CI
    is [1, 1]; the p-value then says how much evidence the group sizes carry.
    """
    pos, neg = np.asarray(positives, float), np.asarray(negatives, float)
    value = float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))

    def statistic(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        return stats.mannwhitneyu(a, b, axis=axis).statistic / (a.shape[axis] * b.shape[axis])

    result = stats.bootstrap((pos, neg), statistic, vectorized=True, paired=False, n_resamples=n_boot,
                             method="percentile", rng=np.random.default_rng(seed))
    p = stats.mannwhitneyu(pos, neg, alternative="greater").pvalue
    return Estimate(value, float(result.confidence_interval.low), float(result.confidence_interval.high), float(p))


def mean_ci(values: Sequence[float], level: float = 0.95, popmean: float = 0.0,
            bounds: tuple[float, float] = (-np.inf, np.inf)) -> Estimate:
    """Mean of per-model values with a Student-t interval (clipped to ``bounds``, e.g. (0, 1) for rates); p-value of
    the two-sided t-test against ``popmean``."""
    v = np.asarray(values, float)
    if len(v) < 2 or np.ptp(v) == 0:
        return Estimate(float(v.mean()), float(v.mean()), float(v.mean()), float("nan"), level)
    test = stats.ttest_1samp(v, popmean)
    ci = test.confidence_interval(level)
    low, high = np.clip([ci.low, ci.high], *bounds)
    return Estimate(float(v.mean()), float(low), float(high), float(test.pvalue), level)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95,
                      bounds: tuple[float, float] = (-np.inf, np.inf)) -> Estimate:
    """Mean of ``a - b`` over paired models (same seed), with its t interval (clipped to ``bounds``) and paired
    t-test p-value."""
    return mean_ci(np.asarray(a, float) - np.asarray(b, float), level, bounds=bounds)


def equivalence(differences: Sequence[float], margin: float) -> Estimate:
    """Two one-sided t-tests (TOST) of ``|mean difference| < margin``.

    Returns the mean with its 90% interval (the interval TOST at 5% checks against ``[-margin, margin]``) and the
    TOST p-value (the larger of the two one-sided p-values; equivalence is shown when it is below 0.05).
    """
    d = np.asarray(differences, float)
    lower = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, margin, alternative="less").pvalue
    ci = mean_ci(d, level=0.90)
    return Estimate(float(d.mean()), ci.low, ci.high, float(max(lower, upper)), 0.90)


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two sequences (``scipy.stats.kendalltau``); NaN when either is constant."""
    return float(stats.kendalltau(x, y).statistic)


def proportion(successes: int, trials: int) -> Estimate:
    """A proportion with its Clopper-Pearson 95% interval."""
    ci = stats.binomtest(successes, trials).proportion_ci(0.95, method="exact")
    return Estimate(successes / trials, float(ci.low), float(ci.high))


@dataclass(frozen=True)
class Verdict:
    """One row of the verdict table."""

    claim: str
    statistic: str
    ci: str
    verdict: str
    note: str = ""


def verdict_table(rows: Sequence[Verdict]) -> str:
    """The one verdict table: claim | statistic | CI | verdict (notes below the table, numbered)."""
    header = ("claim", "statistic", "CI", "verdict")
    notes = [row.note for row in rows if row.note]
    cells, n = [], 0
    for row in rows:
        verdict = row.verdict
        if row.note:
            n += 1
            verdict += f" [{n}]"
        cells.append((row.claim, row.statistic, row.ci, verdict))
    widths = [max(len(header[i]), *(len(c[i]) for c in cells)) for i in range(4)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
    out += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(out)
