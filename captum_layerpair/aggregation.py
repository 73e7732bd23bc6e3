"""Transforms, reductions and normalisations of layer-pair attributions (SPEC section 3).

A layer-pair attribution ``A`` has shape ``[N, K, C, *spatial]`` for a convolutional source (``C`` channels) or
``[N, K, F]`` for a 1-D source. ``aggregate`` turns it into per-unit spatial maps (``over="channels"``), the
``K x C`` layer-pair matrix (``over="space"``), or just the transformed tensor (``over=None``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from captum_layerpair._checks import check_choice
from captum_layerpair._typing import Transform

__all__ = ["TRANSFORMS", "NORMALIZATIONS", "aggregate", "apply_transform", "normalize"]

TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "abs": torch.abs,
    "sqrt": lambda a: torch.sqrt(torch.abs(a)),
    "lin": lambda a: a,
    "square": torch.square,
}


def _minmax(flat: torch.Tensor) -> torch.Tensor:
    """``(m - min m) / (max m - min m)`` over the last dimension, 0 where the map is constant."""
    lo = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - lo
    return torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(flat))


def _max(flat: torch.Tensor) -> torch.Tensor:
    """``m / max |m|`` over the last dimension, 0 where the map is 0 everywhere (smooth almost everywhere)."""
    peak = flat.abs().amax(-1, keepdim=True)
    return torch.where(peak > 0, flat / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(flat))


NORMALIZATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"minmax": _minmax, "max": _max}
"""Normalisations nu of a map, each ``[..., P] -> [..., P]`` over the last dimension."""


def apply_transform(A: torch.Tensor, transform: Transform = "abs") -> torch.Tensor:
    """Apply the element-wise transform tau (``"abs"``, ``"sqrt"``, ``"lin"``, ``"square"`` or a callable)."""
    function = check_choice("transform", transform, TRANSFORMS, allow_callable=True)
    out = function(A)
    if not isinstance(out, torch.Tensor) or out.shape != A.shape:
        raise ValueError("a callable transform must return a tensor of the same shape as its input")
    return out


def aggregate(
    A: torch.Tensor,
    transform: Transform = "abs",
    over: Literal["channels", "space"] | None = "channels",
    layout: Literal["channels_first", "channels_last"] = "channels_first",
) -> torch.Tensor:
    """Aggregate a layer-pair attribution.

    Parameters
    ----------
    A:
        ``[N, K, C, *spatial]`` (convolutional source, ``layout="channels_first"``), ``[N, K, *positions, D]``
        (token source such as a transformer's ``[N, L, D]``, ``layout="channels_last"``) or ``[N, K, F]``
        (1-D source).
    transform:
        tau applied element-wise before summing: ``"abs"`` ``|a|``, ``"sqrt"`` ``sqrt(|a|)``, ``"lin"`` ``a``,
        ``"square"`` ``a**2``, or a callable returning a tensor of the same shape.
    over:
        ``"channels"``: ``M[n, k, *p] = sum_c tau(A[n, k, c, *p])``, shape ``[N, K, *spatial]`` (a spatial map
        per target unit; per-token maps ``[N, K, L]`` for a channels-last ``[N, K, L, D]``; for ``[N, K, F]``
        this sums the features, giving ``[N, K]``).
        ``"space"``: ``Q[n, k, c] = sum_p tau(A[n, k, c, p])``, shape ``[N, K, C]`` (the layer-pair matrix,
        ``[N, K, D]`` for a channels-last source; for ``[N, K, F]`` it is ``tau(A)`` itself).
        ``None``: ``tau(A)``, same shape as ``A``.
    layout:
        Where the source's channels are: ``"channels_first"`` (dimension 2 of ``A``) or ``"channels_last"`` (the
        last dimension), as ``LayerPairAttribution(..., source_layout=...)`` / ``lp.source.layout``.
    """
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"A must be a torch.Tensor of shape [N, K, C, *spatial] or [N, K, F], got {type(A).__name__}")
    if A.dim() < 3:
        raise ValueError(f"A must have shape [N, K, C, *spatial] or [N, K, F]; got shape {tuple(A.shape)}")
    if layout not in ("channels_first", "channels_last"):
        raise ValueError(f"unknown layout {layout!r}; allowed: 'channels_first', 'channels_last'")
    T = apply_transform(A, transform)
    if over is None:
        return T
    if layout == "channels_last":
        T = T.movedim(-1, 2)
    if over == "channels":
        return T.sum(dim=2)
    if over == "space":
        return T.flatten(3).sum(dim=3) if T.dim() > 3 else T
    raise ValueError(f"unknown over={over!r}; allowed: 'channels', 'space' or None")


def normalize(maps: torch.Tensor, normalization: str = "minmax", start_dim: int = 2) -> torch.Tensor:
    """Normalise each map (per sample and target unit) over its dimensions from ``start_dim`` on.

    ``"minmax"``: ``(m - min m) / (max m - min m)``, and 0 where the map is constant.
    ``"max"``: ``m / max |m|`` (0 where the map is 0 everywhere); smooth almost everywhere, for training.

    ``maps`` is e.g. ``[N, K, H, W]`` with ``start_dim=2``; the output has the same shape.
    """
    function = check_choice("normalization", normalization, NORMALIZATIONS)
    return function(maps.flatten(start_dim)).view_as(maps)
