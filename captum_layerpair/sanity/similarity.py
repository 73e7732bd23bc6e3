"""Per-sample similarity of two layer-pair attributions, for parameter-randomisation checks.

Every measure compares ``a`` and ``b`` of shape ``[N, K, *source_shape]`` sample by sample and returns ``[N]``:

* ``"spearman_abs"``: Spearman rank correlation of ``|a|`` and ``|b|`` (``scipy.stats.spearmanr``), the measure of
  Adebayo et al. (2018): does the ranking of what matters survive?
* ``"spearman"``: Spearman rank correlation of the signed values.
* ``"pearson"``: Pearson correlation (``scipy.stats.pearsonr``).
* ``"cosine"``: cosine similarity (``torch.nn.functional.cosine_similarity``).
* ``"ssim"``: structural similarity (``skimage.metrics.structural_similarity``) of the channel-aggregated maps
  ``M[n, k] = sum_c |A[n, k, c]|`` after min-max normalisation, averaged over the K target units; needs a
  source with spatial dimensions (``[N, K, C, H, W]`` or ``[N, K, C, L]``), each at least 3 long.
* ``"spatial_spearman"``: Spearman rank correlation of the maps ``S[n] = sum_k sum_c |A[n, k, c]|`` (where the
  layer pair looks, whichever unit and channel): it does not pair units or channels by their index, so it also
  compares two models whose units are not aligned (two independently trained models); needs spatial dimensions.

``SIMILARITIES`` is the registry (name -> measure). A measure may carry ``check_source(source_shape)``, which
refuses a source it cannot compare (``source_shape`` without the batch dimension, e.g. ``(C, H, W)``) with one
clear ``ValueError``; ``check_sources`` runs these checks before any attribution is computed.

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

from captum_layerpair._checks import check_choice
from captum_layerpair.aggregation import aggregate, normalize

__all__ = ["SimilarityFn", "SIMILARITIES", "spearman_abs", "spearman", "pearson", "cosine", "ssim",
           "spatial_spearman", "resolve_similarities", "check_sources"]

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


def _spatial_problem(source_shape: Sequence[int], min_side: int) -> str | None:
    """Why maps over ``source_shape[1:]`` (a source ``(C, *spatial)``) cannot be compared, or ``None``."""
    spatial = tuple(source_shape[1:])
    if not spatial:
        return "compares spatial maps, so it needs a source with spatial dimensions"
    if len(spatial) > 2:
        return f"compares 1-D or 2-D maps; this source has {len(spatial)} spatial dimensions"
    if min(spatial) < min_side:
        return f"needs channel-aggregated maps at least {min_side} wide; these are {'x'.join(map(str, spatial))}"
    return None


def _spatial_check(name: str, min_side: int) -> Callable[..., None]:
    def check_source(source_shape: Sequence[int], attribution_shape: Sequence[int] | None = None) -> None:
        """Refuse a source ``(C, *spatial)`` (per sample) whose maps this measure cannot compare."""
        problem = _spatial_problem(source_shape, min_side)
        if problem:
            shown = (f"got shape {tuple(attribution_shape)} (attributions [N, K, C, *spatial])"
                     if attribution_shape is not None else f"got source shape {tuple(source_shape)} per sample "
                     "([C, H, W] or [C, L] needed)")
            raise ValueError(f"similarity measure {name!r} {problem}; {shown}. Use "
                             f"{', '.join(map(repr, _FLAT))} for this source")
    return check_source


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
    ssim.check_source(a.shape[2:], a.shape)  # type: ignore[attr-defined]
    maps_a = normalize(aggregate(a.detach().double(), "abs", "channels")).cpu().numpy()  # [N, K, *spatial]
    maps_b = normalize(aggregate(b.detach().double(), "abs", "channels")).cpu().numpy()
    side = min(maps_a.shape[2:])
    win_size = min(7, side if side % 2 else side - 1)
    values = [[1.0 if np.array_equal(m, n) else structural_similarity(m, n, data_range=1.0, win_size=win_size)
               for m, n in zip(units_a, units_b)] for units_a, units_b in zip(maps_a, maps_b)]
    return torch.tensor(values, dtype=torch.float64).mean(1)


def spatial_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per sample of ``sum_k sum_c |A|`` (``a, b: [N, K, C, *spatial]``): where the
    layer pair looks, whichever unit or channel; returns ``[N]`` (float64)."""
    _check_pair(a, b)
    spatial_spearman.check_source(a.shape[2:], a.shape)  # type: ignore[attr-defined]
    return spearman(a.abs().sum((1, 2)), b.abs().sum((1, 2)))


_FLAT = ("spearman_abs", "spearman", "pearson", "cosine")  # the measures that compare sources of any shape
ssim.check_source = _spatial_check("ssim", min_side=3)  # type: ignore[attr-defined]
spatial_spearman.check_source = _spatial_check("spatial_spearman", min_side=1)  # type: ignore[attr-defined]

SIMILARITIES: dict[str, SimilarityFn] = {
    "spearman_abs": spearman_abs,
    "spearman": spearman,
    "pearson": pearson,
    "cosine": cosine,
    "ssim": ssim,
    "spatial_spearman": spatial_spearman,
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
        items = [(spec if isinstance(spec, str) else getattr(spec, "__name__", repr(spec)), spec) for spec in specs]
    if not items:
        raise ValueError(f"give at least one similarity measure; allowed: {', '.join(map(repr, SIMILARITIES))}")
    measures: dict[str, SimilarityFn] = {}
    for name, spec in items:
        if not isinstance(spec, str) and not callable(spec):
            raise TypeError(f"a similarity measure must be a name or a callable; got {type(spec).__name__}")
        fn = check_choice("similarity measure", spec, SIMILARITIES, allow_callable=True,
                          callable_hint="a callable (a, b) -> [N]")
        if name in measures:
            raise ValueError(f"similarity measure {name!r} is given twice")
        measures[name] = fn
    return measures


def check_sources(measures: dict[str, SimilarityFn], source_shape: Sequence[int]) -> None:
    """Run every measure's ``check_source`` on the source shape ``(C, *spatial)`` (per sample), before any work."""
    for fn in measures.values():
        check = getattr(fn, "check_source", None)
        if callable(check):
            check(tuple(source_shape))
