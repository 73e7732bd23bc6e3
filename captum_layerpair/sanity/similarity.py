"""Per-sample similarity of two layer-pair attributions, for parameter-randomisation checks.

Every measure compares ``a`` and ``b`` of shape ``[N, K, *source_shape]`` sample by sample and returns ``[N]``:

* ``"spearman_abs"``: Spearman rank correlation of ``|a|`` and ``|b|`` (``scipy.stats.spearmanr``), the measure of
  Adebayo et al. (2018): does the ranking of what matters survive?
* ``"spearman"``: Spearman rank correlation of the signed values.
* ``"pearson"``: Pearson correlation (``scipy.stats.pearsonr``).
* ``"cosine"``: cosine similarity (``torch.nn.functional.cosine_similarity``).
* ``"ssim"``: structural similarity (``skimage.metrics.structural_similarity``) of the channel-aggregated maps
  ``M[n, k] = sum_c |A[n, k, c]|`` after min-max normalisation, averaged over the K target units; needs a
  source with spatial dimensions (``[N, K, C, H, W]`` or ``[N, K, C, L]``).

Identical attributions have similarity exactly 1 under every measure. Correlations are undefined for a constant
map; by convention they are 0 when the other map differs (a constant map shares no ranking with anything but
itself). The same holds for the cosine similarity of an all-zero map.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from captum_layerpair.aggregation import aggregate, normalize

__all__ = ["SimilarityFn", "SIMILARITIES", "spearman_abs", "spearman", "pearson", "cosine", "ssim",
           "resolve_similarities"]

SimilarityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SimilaritySpec = Union[str, SimilarityFn, Sequence[Union[str, SimilarityFn]], dict[str, SimilarityFn]]


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"similarity measures compare two tensors; got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"similarity measures compare two attributions of the same shape [N, K, *source_shape]; "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


def _per_sample(a: torch.Tensor, b: torch.Tensor, statistic: Callable[[np.ndarray, np.ndarray], float]) -> torch.Tensor:
    """Apply ``statistic`` to each flattened sample pair, with the constant-map convention of this module."""
    _check_pair(a, b)
    rows_a = a.detach().flatten(1).double().cpu().numpy()
    rows_b = b.detach().flatten(1).double().cpu().numpy()
    values = []
    for x, y in zip(rows_a, rows_b):
        if np.array_equal(x, y):
            values.append(1.0)
        elif np.ptp(x) == 0 or np.ptp(y) == 0:
            values.append(0.0)
        else:
            values.append(float(statistic(x, y)))
    return torch.tensor(values, dtype=torch.float64)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per sample of ``a, b: [N, ...]``; returns ``[N]`` (float64)."""
    return _per_sample(a, b, lambda x, y: stats.spearmanr(x, y).statistic)


def spearman_abs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per sample of ``|a|`` and ``|b|`` (``[N, ...]``); returns ``[N]`` (float64)."""
    _check_pair(a, b)
    return spearman(a.abs(), b.abs())


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample of ``a, b: [N, ...]``; returns ``[N]`` (float64)."""
    return _per_sample(a, b, lambda x, y: stats.pearsonr(x, y).statistic)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per sample of ``a, b: [N, ...]``; returns ``[N]`` (float64)."""
    _check_pair(a, b)
    x, y = a.detach().flatten(1).double(), b.detach().flatten(1).double()
    values = F.cosine_similarity(x, y, dim=1)
    values = torch.where((x == 0).all(1) | (y == 0).all(1), torch.zeros_like(values), values)
    return torch.where((x == y).all(1), torch.ones_like(values), values).cpu()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity per sample of the channel-aggregated, min-max normalised maps, mean over units.

    ``a, b: [N, K, C, *spatial]`` with one or two spatial dimensions, each at least 3 long; returns ``[N]``
    (float64). The window is 7 (the scikit-image default) or the largest odd size that fits the maps.
    """
    try:
        from skimage.metrics import structural_similarity
    except ImportError as error:
        raise ImportError("the 'ssim' similarity measure needs scikit-image: pip install scikit-image") from error
    _check_pair(a, b)
    if a.dim() < 4:
        raise ValueError(f"ssim compares spatial maps, so it needs attributions [N, K, C, *spatial] from a source "
                         f"with spatial dimensions; got shape {tuple(a.shape)}. Use 'spearman_abs', 'spearman', "
                         "'pearson' or 'cosine' for this source")
    maps_a = normalize(aggregate(a.detach().double(), "abs", "channels")).cpu().numpy()  # [N, K, *spatial]
    maps_b = normalize(aggregate(b.detach().double(), "abs", "channels")).cpu().numpy()
    side = min(maps_a.shape[2:])
    win_size = min(7, side if side % 2 else side - 1)
    if win_size < 3:
        raise ValueError(f"ssim needs channel-aggregated maps at least 3 wide; these are "
                         f"{'x'.join(map(str, maps_a.shape[2:]))}. Use another measure for this source")
    values = [[1.0 if np.array_equal(m, n) else structural_similarity(m, n, data_range=1.0, win_size=win_size)
               for m, n in zip(units_a, units_b)] for units_a, units_b in zip(maps_a, maps_b)]
    return torch.tensor(values, dtype=torch.float64).mean(1)


SIMILARITIES: dict[str, SimilarityFn] = {
    "spearman_abs": spearman_abs,
    "spearman": spearman,
    "pearson": pearson,
    "cosine": cosine,
    "ssim": ssim,
}


def resolve_similarities(similarity: SimilaritySpec) -> dict[str, SimilarityFn]:
    """Turn a measure name, a callable, a sequence of them or a ``{name: callable}`` dict into ``{name: fn}``.

    A callable receives two attributions ``[N, K, *source_shape]`` and returns ``[N]``; it is named after its
    ``__name__``.
    """
    if isinstance(similarity, dict):
        items = list(similarity.items())
    else:
        specs = [similarity] if isinstance(similarity, str) or callable(similarity) else list(similarity)
        items = [(spec, spec) if isinstance(spec, str) else (getattr(spec, "__name__", repr(spec)), spec)
                 for spec in specs]
    if not items:
        raise ValueError(f"give at least one similarity measure; allowed names: {', '.join(SIMILARITIES)}")
    measures: dict[str, SimilarityFn] = {}
    for name, spec in items:
        if isinstance(spec, str):
            if spec not in SIMILARITIES:
                raise ValueError(f"unknown similarity measure {spec!r}; allowed: {', '.join(SIMILARITIES)} or a "
                                 "callable (a, b) -> [N]")
            spec = SIMILARITIES[spec]
        elif not callable(spec):
            raise TypeError(f"a similarity measure must be a name or a callable; got {type(spec).__name__}")
        if name in measures:
            raise ValueError(f"similarity measure {name!r} is given twice")
        measures[name] = spec
    return measures

