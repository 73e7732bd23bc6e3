"""Disentanglement score (Bertolini et al. 2022, section 3): do different embedding dimensions attend to
different places?

For one sample with per-unit maps ``M_k`` (the channel-aggregated layer-pair attribution of embedding
dimension ``k``, SPEC section 3), ``D(x) = mean_p Var_k(nu(M_k)(p))``: the population variance over the K units
of the normalised maps, averaged over positions ``p``. It is 0 when all units attend alike and largest when each
unit attends to its own region.

What D measures is how *spatially different* the units' maps are, not factor-level disentanglement such as MIG:
mixing the embedding's dimensions (a rotation) changes MIG much more than D, and random encoders can score higher
than trained ones (issue 13). Read it as "do the units look at different places".
"""
from __future__ import annotations

from typing import Any

import torch

from captum_layerpair._checks import check_choice
from captum_layerpair._typing import Noise, Transform
from captum_layerpair.aggregation import NORMALIZATIONS, normalize
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.metrics.latent_score import Attribute, LatentScore, ScoreParts
from captum_layerpair.metrics.maps import check_attributions, unit_maps

__all__ = ["disentanglement_score", "DisentanglementScore"]


def disentanglement_score(A: torch.Tensor, transform: Transform = "abs", normalization: str = "minmax",
                          layout: str = "channels_first") -> torch.Tensor:
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
    layout:
        ``"channels_last"`` for token sources ``[N, K, L, D]`` (maps over the L tokens); the score classes pass
        their layer pair's ``source.layout``.

    Returns
    -------
    ``[N]`` per-sample scores; differentiable where ``A`` is.
    """
    check_attributions(A)
    check_choice("normalization", normalization, NORMALIZATIONS)
    if A.shape[1] < 2:
        raise ValueError(f"disentanglement needs K >= 2 target units (the variance over one unit is undefined); "
                         f"got A of shape {tuple(A.shape)} with K = {A.shape[1]}")
    maps = normalize(unit_maps(A, transform, layout), normalization, start_dim=2)  # [N, K, P]
    return maps.var(dim=1, correction=0).mean(1)


class DisentanglementScore(LatentScore):
    """Disentanglement of a layer pair's target units (SPEC section 4), per sample and over datasets.

    A ``torchmetrics.Metric``: ``update(batch)``, ``compute() -> ScoreSummary``, ``reset()``; works in a
    ``MetricCollection``, in Lightning and across ``torch.distributed`` processes.

    Parameters
    ----------
    layer_pair:
        A ``LayerPairAttribution`` from a convolutional source to the embedding (K >= 2 units).
    transform, normalization:
        As in :func:`disentanglement_score`.
    noise:
        How the ``null`` baseline of :meth:`evaluate` draws its noise inputs (``"uniform"``, ``"gaussian"``,
        ``"shuffle"`` or a callable, as for ``InformativenessScore``).
    seed, attribute_kwargs, **metric_kwargs:
        As for every latent score (see ``LatentScore``).

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
                 normalization: str = "minmax", noise: Noise = "uniform", seed: int = 0,
                 attribute_kwargs: dict[str, Any] | None = None, **metric_kwargs: Any) -> None:
        super().__init__(layer_pair, transform, normalization, noise, seed, attribute_kwargs, **metric_kwargs)

    def score_parts(self, attribute: Attribute, inputs: torch.Tensor, indices: torch.Tensor | None = None,
                    seed: int | None = None) -> ScoreParts:
        """``D`` per sample of ``inputs [N, ...]`` (no random draws)."""
        return ScoreParts(disentanglement_score(attribute(inputs), self.transform, self.normalization,
                                                self.layer_pair.source.layout))
