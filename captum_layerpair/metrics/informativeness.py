"""Informativeness score (Bertolini et al. 2022, section 3): does the embedding attend to the data differently
than to noise?

With per-unit maps ``M_k`` (SPEC section 3) of a sample ``x`` and of a noise input ``xi`` of the same shape,
``I(x) = mean_p |nu(S(x))(p) - nu(S(xi))(p)|`` with ``S = sum_k M_k`` (or ``Var_k M_k`` for ``combine="var"``),
averaged over noise draws. It is 0 when the attribution looks the same on noise as on data. Input structure
alone (edges) already gives a non-zero score, so report it with the random-model and null baselines
(``InformativenessScore.evaluate(..., random_model=True, null=True)``).
"""
from __future__ import annotations

from typing import Any, Literal

import torch

from captum_layerpair.aggregation import Transform, normalize
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.metrics._latent import (LatentScore, Noise, check_attributions, check_normalization,
                                              make_noise, unit_maps)

__all__ = ["informativeness_score", "InformativenessScore"]

Combine = Literal["sum", "var"]
COMBINES = ("sum", "var")


def _combined_map(A: torch.Tensor, transform: Transform, normalization: str, combine: Combine) -> torch.Tensor:
    """``nu(sum_k M_k)`` (``nu(Var_k M_k)`` for ``combine="var"``) per sample: ``[N, *P]`` from ``[N, K, ...]``."""
    maps = unit_maps(A, transform)
    combined = maps.sum(1) if combine == "sum" else maps.var(1, correction=0)
    return normalize(combined, normalization, start_dim=1)


def informativeness_score(A_real: torch.Tensor, A_noise: torch.Tensor, transform: Transform = "abs",
                          normalization: str = "minmax", combine: Combine = "sum") -> torch.Tensor:
    """Informativeness ``I(x) = mean_p |nu(S(x))(p) - nu(S(xi))(p)|`` of precomputed layer-pair attributions.

    Parameters
    ----------
    A_real:
        Attributions of the data, ``[N, K, C, *spatial]`` or ``[N, K, F]`` (1-D source, each feature a position).
    A_noise:
        Attributions of noise inputs of the data's shape: ``A_real.shape`` (one draw) or ``[R, *A_real.shape]``
        (``R`` draws, whose scores are averaged).
    transform:
        ``"abs"``, ``"sqrt"``, ``"lin"``, ``"square"`` or a callable (SPEC section 3).
    normalization:
        ``"minmax"`` (then ``0 <= I <= 1``) or ``"max"`` (smooth, for training).
    combine:
        ``"sum"``: ``S = sum_k M_k``; ``"var"``: ``S = Var_k M_k`` (population variance over units).

    Returns
    -------
    ``[N]`` per-sample scores; differentiable where the attributions are.
    """
    check_attributions(A_real, "A_real")
    check_normalization(normalization)
    if combine not in COMBINES:
        raise ValueError(f"unknown combine {combine!r}; allowed: {list(COMBINES)}")
    if isinstance(A_noise, torch.Tensor) and A_noise.shape == A_real.shape:
        draws = A_noise.unsqueeze(0)
    elif isinstance(A_noise, torch.Tensor) and A_noise.dim() == A_real.dim() + 1 and A_noise.shape[1:] == A_real.shape:
        draws = A_noise
    else:
        got = tuple(A_noise.shape) if isinstance(A_noise, torch.Tensor) else type(A_noise).__name__
        raise ValueError(f"A_noise must have the shape of A_real {tuple(A_real.shape)} or [R, "
                         f"{', '.join(map(str, A_real.shape))}] for R noise draws; got {got}")
    check_attributions(draws.flatten(0, 1), "A_noise")
    real = _combined_map(A_real, transform, normalization, combine)  # [N, *P]
    noise = _combined_map(draws.flatten(0, 1), transform, normalization, combine).view(draws.shape[0], *real.shape)
    return (real.unsqueeze(0) - noise).abs().flatten(2).mean(2).mean(0)


class InformativenessScore(LatentScore):
    """Informativeness of a layer pair's target units (SPEC section 4), per sample and over datasets.

    Parameters
    ----------
    layer_pair:
        A ``LayerPairAttribution`` from a convolutional source to the embedding.
    transform, normalization, combine:
        As in :func:`informativeness_score`.
    noise:
        Noise inputs ``xi``: ``"uniform"`` (i.i.d. Uniform[0, 1), default), ``"gaussian"`` (normal with the batch's
        per-channel mean and standard deviation), or a callable ``inputs -> noise batch`` of the same shape.
        Draws use the global torch RNG (``torch.manual_seed`` makes scores reproducible).
    n_noise:
        Number of noise draws averaged per sample.

    Examples
    --------
    >>> lp = LayerPairAttribution(encoder, "conv2", "embed", method="paper_expected_gradients")
    >>> score = InformativenessScore(lp, n_noise=4)
    >>> I = score.score(x, attribute_to_source_input=True)                  # [N]
    >>> print(score.evaluate(loader, random_model=True, null=True, attribute_to_source_input=True))
    """

    name = "informativeness"
    higher_is_better = True
    is_differentiable = True
    description = "do the embedding's attributions on data differ from those on noise?"

    def __init__(self, layer_pair: LayerPairAttribution, transform: Transform = "abs",
                 normalization: str = "minmax", noise: Noise = "uniform", n_noise: int = 1,
                 combine: Combine = "sum") -> None:
        super().__init__(layer_pair, transform, normalization, noise)
        if isinstance(n_noise, bool) or not isinstance(n_noise, int) or n_noise < 1:
            raise ValueError(f"n_noise must be a positive int, got {n_noise!r}")
        if combine not in COMBINES:
            raise ValueError(f"unknown combine {combine!r}; allowed: {list(COMBINES)}")
        self.n_noise = n_noise
        self.combine = combine

    def score(self, inputs: torch.Tensor, **attribute_kwargs: Any) -> torch.Tensor:
        """Per-sample ``I`` ``[N]`` of ``inputs [N, ...]``, averaged over ``n_noise`` draws; ``attribute_kwargs``
        go to ``layer_pair.attribute`` (for the data and the noise alike)."""
        A_real = self.layer_pair.attribute(inputs, **attribute_kwargs)
        total = torch.zeros(A_real.shape[0], dtype=A_real.dtype, device=A_real.device)
        for _ in range(self.n_noise):
            A_noise = self.layer_pair.attribute(make_noise(inputs, self.noise), **attribute_kwargs)
            total += informativeness_score(A_real, A_noise, self.transform, self.normalization, self.combine)
        return (total / self.n_noise).detach()
