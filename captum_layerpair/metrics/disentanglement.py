"""Disentanglement score (Bertolini et al. 2022, section 3): do different embedding dimensions attend to
different places?

For one sample with per-unit maps ``M_k`` (the channel-aggregated layer-pair attribution of embedding
dimension ``k``, SPEC section 3), ``D(x) = mean_p Var_k(nu(M_k)(p))``: the population variance over the K units
of the normalised maps, averaged over positions ``p``. It is 0 when all units attend alike and largest when each
unit attends to its own region.
"""
from __future__ import annotations

from typing import Any

import torch

from captum_layerpair.aggregation import Transform, normalize
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.metrics._latent import LatentScore, Noise, check_attributions, check_normalization, unit_maps

__all__ = ["disentanglement_score", "DisentanglementScore"]


def disentanglement_score(A: torch.Tensor, transform: Transform = "abs", normalization: str = "minmax") -> torch.Tensor:
    """Disentanglement ``D(x) = mean_p Var_k(nu(M_k)(p))`` of precomputed layer-pair attributions.

    Parameters
    ----------
    A:
        Layer-pair attributions ``[N, K, C, *spatial]`` (``M_k`` sums the channels after ``transform``) or
        ``[N, K, F]`` for a 1-D source (``M_k = transform(A[:, k])``, each feature a position). ``K >= 2``.
    transform:
        ``"abs"``, ``"sqrt"``, ``"lin"``, ``"square"`` or a callable (SPEC section 3).
    normalization:
        ``"minmax"`` (maps in ``[0, 1]``, so ``D <= 1/4``) or ``"max"`` (``m / max|m|``, smooth for training).

    Returns
    -------
    ``[N]`` per-sample scores; differentiable where ``A`` is.
    """
    check_attributions(A)
    check_normalization(normalization)
    if A.shape[1] < 2:
        raise ValueError(f"disentanglement needs K >= 2 target units (the variance over one unit is undefined); "
                         f"got A of shape {tuple(A.shape)} with K = {A.shape[1]}")
    maps = normalize(unit_maps(A, transform), normalization, start_dim=2)  # [N, K, *P]
    return maps.var(dim=1, correction=0).flatten(1).mean(1)


class DisentanglementScore(LatentScore):
    """Disentanglement of a layer pair's target units (SPEC section 4), per sample and over datasets.

    Parameters
    ----------
    layer_pair:
        A ``LayerPairAttribution`` from a convolutional source to the embedding (K >= 2 units).
    transform, normalization:
        As in :func:`disentanglement_score`.
    noise:
        How the ``null`` baseline of :meth:`evaluate` draws its noise inputs (``"uniform"``, ``"gaussian"`` or a
        callable, as for ``InformativenessScore``).

    Examples
    --------
    >>> lp = LayerPairAttribution(encoder, "conv2", "embed", method="paper_expected_gradients")
    >>> D = DisentanglementScore(lp).score(x, attribute_to_source_input=True)        # [N]
    >>> print(DisentanglementScore(lp).evaluate(loader, random_model=True, null=True))
    """

    name = "disentanglement"
    higher_is_better = True
    is_differentiable = True
    description = "do different embedding dimensions attend to different places?"

    def __init__(self, layer_pair: LayerPairAttribution, transform: Transform = "abs",
                 normalization: str = "minmax", noise: Noise = "uniform") -> None:
        super().__init__(layer_pair, transform, normalization, noise)

    def score(self, inputs: torch.Tensor, **attribute_kwargs: Any) -> torch.Tensor:
        """Per-sample ``D`` ``[N]`` of ``inputs [N, ...]``; ``attribute_kwargs`` go to ``layer_pair.attribute``."""
        A = self.layer_pair.attribute(inputs, **attribute_kwargs)
        return disentanglement_score(A, self.transform, self.normalization).detach()
