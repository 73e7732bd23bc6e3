"""Per-unit maps of layer-pair attributions, as the latent scores read them, and the check of their input."""
from __future__ import annotations

from typing import Any

import torch

from captum_layerpair._typing import Transform
from captum_layerpair.aggregation import aggregate, apply_transform

__all__ = ["check_attributions", "unit_maps"]


def check_attributions(A: Any, name: str = "A") -> torch.Tensor:
    """Check a layer-pair attribution ``[N, K, C, *spatial]`` or ``[N, K, F]``: a finite tensor with >= 3 dims."""
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, K, C, *spatial] or [N, K, F], got {type(A).__name__}")
    if A.dim() < 3:
        raise ValueError(f"{name} must have shape [N, K, C, *spatial] or [N, K, F]; got shape {tuple(A.shape)}")
    if not A.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {A.dtype}")
    bad = ~torch.isfinite(A)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or inf values (shape {tuple(A.shape)}); the scores "
                         "of non-finite attributions are undefined (check the model's parameters and outputs)")
    return A


def unit_maps(A: torch.Tensor, transform: Transform = "abs", layout: str = "channels_first") -> torch.Tensor:
    """Per-unit maps ``M_k`` flattened over positions: ``[N, K, P]``.

    ``[N, K, C, *spatial]`` sums the channels after ``transform`` (``P = prod(spatial)``); with
    ``layout="channels_last"`` a token source ``[N, K, L, D]`` sums the features (``P = L`` tokens); a 1-D source
    ``[N, K, F]`` gives ``transform(A)`` itself (each feature a position).
    """
    maps = apply_transform(A, transform) if A.dim() == 3 else aggregate(A, transform, over="channels", layout=layout)
    return maps.flatten(2)
