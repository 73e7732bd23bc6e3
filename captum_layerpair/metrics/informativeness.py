"""Informativeness score (Bertolini et al. 2022, section 3): does the embedding attend to the data differently
than to noise?

With per-unit maps ``M_k`` (SPEC section 3) of a sample ``x`` and of a noise input ``xi`` of the same shape,
``I(x) = mean_p |nu(S(x))(p) - nu(S(xi))(p)|`` with ``S = sum_k M_k`` (``combine="sum"``), ``Var_k M_k``
(``"var"``), or, with ``combine="per_unit"``, the mean over units ``k`` of the same difference of each unit's own
normalised map; averaged over noise draws. It is 0 when the attribution looks the same on noise as on data.

Input structure alone (edges) already gives a large score: two independent noise inputs differ too. The
**calibrated** score ``I(x) / I_null(x)``, with ``I_null`` the same score between two independent noise inputs of
``x``'s shape, takes that out: 1 means "as different from noise as noise is from noise". Raw ``I`` does not separate
trained from random encoders on digits; the calibrated score does (issue 13).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from captum_layerpair._checks import check_choice, check_positive_int
from captum_layerpair._typing import Noise, Transform
from captum_layerpair.aggregation import NORMALIZATIONS, normalize
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.metrics.latent_score import Attribute, LatentScore, ScoreParts
from captum_layerpair.metrics.maps import check_attributions, unit_maps
from captum_layerpair.metrics.noise import make_noise
from captum_layerpair.metrics.summary import ScoreSummary

__all__ = ["informativeness_score", "calibrated_informativeness_score", "calibrated_ratio", "InformativenessScore",
           "COMBINES"]

COMBINES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sum": lambda maps: maps.sum(1, keepdim=True),
    "var": lambda maps: maps.var(1, correction=0, keepdim=True),
    "per_unit": lambda maps: maps,
}
"""How the unit maps ``[N, K, P]`` become the compared maps ``[N, G, P]`` (G = 1, or K for ``"per_unit"``)."""


def _compared_maps(A: torch.Tensor, transform: Transform, normalization: str, combine: str,
                   layout: str = "channels_first") -> torch.Tensor:
    """``nu(combine(M))``: ``[N, G, P]`` from ``[N, K, ...]``, each of the G maps normalised on its own."""
    return normalize(COMBINES[combine](unit_maps(A, transform, layout)), normalization, start_dim=2)


def informativeness_score(A_real: torch.Tensor, A_noise: torch.Tensor, transform: Transform = "abs",
                          normalization: str = "minmax", combine: str = "sum",
                          layout: str = "channels_first") -> torch.Tensor:
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
        ``"sum"``: ``S = sum_k M_k``; ``"var"``: ``S = Var_k M_k`` (population variance over units);
        ``"per_unit"``: the mean over units of each unit's own score (``S = M_k``).
    layout:
        ``"channels_last"`` for token sources ``[N, K, L, D]`` (maps over the L tokens); the score classes pass
        their layer pair's ``source.layout``.

    Returns
    -------
    ``[N]`` per-sample scores; differentiable where the attributions are.
    """
    check_attributions(A_real, "A_real")
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("combine", combine, COMBINES)
    if isinstance(A_noise, torch.Tensor) and A_noise.shape == A_real.shape:
        draws = A_noise.unsqueeze(0)
    elif isinstance(A_noise, torch.Tensor) and A_noise.dim() == A_real.dim() + 1 and A_noise.shape[1:] == A_real.shape:
        draws = A_noise
    else:
        got = tuple(A_noise.shape) if isinstance(A_noise, torch.Tensor) else type(A_noise).__name__
        raise ValueError(f"A_noise must have the shape of A_real {tuple(A_real.shape)} or [R, "
                         f"{', '.join(map(str, A_real.shape))}] for R noise draws; got {got}")
    check_attributions(draws.flatten(0, 1), "A_noise")
    real = _compared_maps(A_real, transform, normalization, combine, layout)  # [N, G, P]
    noise = _compared_maps(draws.flatten(0, 1), transform, normalization, combine, layout).view(draws.shape[0],
                                                                                                 *real.shape)
    return (real.unsqueeze(0) - noise).abs().mean(-1).mean(-1).mean(0)


def calibrated_ratio(score: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """``score / null`` per sample, and 1 where both are 0 (maps that do not depend on the input at all are exactly
    as informative as noise); differentiable where the inputs are.

    Raises ``ValueError`` where ``null`` is 0 but ``score`` is not (the noise inputs' maps are all alike, e.g.
    constant, while the data's differ): the ratio is undefined there.
    """
    undefined = (null == 0) & (score != 0)
    if undefined.any():
        raise ValueError(f"the calibrated informativeness is undefined for {int(undefined.sum())} samples: their null "
                         "score I_null is 0 (the maps of two independent noise inputs are identical, e.g. constant) "
                         "while I is not. Use calibrate=False, or a noise that gives varied maps")
    positive = null > 0
    return torch.where(positive, score / torch.where(positive, null, torch.ones_like(null)), torch.ones_like(score))


def calibrated_informativeness_score(A_real: torch.Tensor, A_noise: torch.Tensor, A_noise2: torch.Tensor,
                                     transform: Transform = "abs", normalization: str = "minmax",
                                     combine: str = "sum", layout: str = "channels_first") -> torch.Tensor:
    """Calibrated informativeness ``I(x) / I_null(x)`` of precomputed layer-pair attributions.

    ``I(x) = informativeness_score(A_real, A_noise)`` and ``I_null(x) = informativeness_score(A_noise2, A_noise)``:
    the same score between two independent noise inputs of ``x``'s shape. 1 means the data's maps differ from noise
    maps as much as noise maps differ from each other; where both are 0 the result is 1 (see :func:`calibrated_ratio`).

    Parameters
    ----------
    A_real:
        Attributions of the data ``[N, K, C, *spatial]`` or ``[N, K, F]``.
    A_noise:
        Attributions of noise inputs: ``A_real.shape`` or ``[R, *A_real.shape]`` (``R`` draws).
    A_noise2:
        Attributions of another, independent noise input per sample: ``A_real.shape``.
    transform, normalization, combine:
        As in :func:`informativeness_score`.

    Returns
    -------
    ``[N]`` per-sample calibrated scores; differentiable where the attributions are.
    """
    check_attributions(A_noise2, "A_noise2")
    if A_noise2.shape != A_real.shape:
        raise ValueError(f"A_noise2 must have the shape of A_real {tuple(A_real.shape)}; got {tuple(A_noise2.shape)}")
    return calibrated_ratio(informativeness_score(A_real, A_noise, transform, normalization, combine, layout),
                            informativeness_score(A_noise2, A_noise, transform, normalization, combine, layout))


class InformativenessScore(LatentScore):
    """Informativeness of a layer pair's target units (SPEC section 4), per sample and over datasets.

    A ``torchmetrics.Metric``: ``update(batch)``, ``compute() -> ScoreSummary``, ``reset()``; works in a
    ``MetricCollection``, in Lightning and across ``torch.distributed`` processes (noise is drawn per sample from
    ``(seed, dataset index)``, so the number of processes does not change any value).

    Parameters
    ----------
    layer_pair:
        A ``LayerPairAttribution`` from a convolutional source to the embedding.
    transform, normalization, combine:
        As in :func:`informativeness_score` (``combine="per_unit"``: mean over units of the per-unit score).
    noise:
        Noise inputs ``xi``: ``"uniform"`` (i.i.d. Uniform[0, 1), default; integer inputs: ids uniform in each
        sample's range), ``"gaussian"`` (normal with each sample's per-channel mean and standard deviation),
        ``"shuffle"`` (the sample's own positions permuted, keeping its histogram), or a callable
        ``inputs -> noise batch`` of the same shape (also for token ids). Drawn from private generators.
    n_noise:
        Number of noise draws averaged per sample.
    calibrate:
        Return ``I(x) / I_null(x)`` from ``score`` (``I_null``: the score of one more independent noise input
        against the same noise draws; one extra attribution per batch). ``compute()`` and ``evaluate`` then give
        the raw score with ``calibrated`` and ``null`` summaries.
    seed, attribute_kwargs, **metric_kwargs:
        As for every latent score (see ``LatentScore``).

    Examples
    --------
    >>> lp = LayerPairAttribution(encoder, "conv2", "embed", method="paper_expected_gradients")
    >>> score = InformativenessScore(lp, calibrate=True, noise="shuffle")
    >>> I_cal = score.score(x, attribute_to_source_input=True)             # [N]
    >>> print(score.evaluate(loader, random_model=True, null=True, attribute_to_source_input=True))
    """

    name = "informativeness"
    higher_is_better = True
    is_differentiable = True
    description = "do the embedding's attributions on data differ from those on noise?"
    value_states = ("values", "null_values")

    def __init__(self, layer_pair: LayerPairAttribution, transform: Transform = "abs",
                 normalization: str = "minmax", noise: Noise = "uniform", n_noise: int = 1,
                 combine: str = "sum", calibrate: bool = False, seed: int = 0,
                 attribute_kwargs: dict[str, Any] | None = None, **metric_kwargs: Any) -> None:
        super().__init__(layer_pair, transform, normalization, noise, seed, attribute_kwargs, **metric_kwargs)
        check_positive_int("n_noise", n_noise)
        check_choice("combine", combine, COMBINES)
        if not isinstance(calibrate, bool):
            raise TypeError(f"calibrate must be True or False, got {calibrate!r}")
        self.n_noise = n_noise
        self.combine = combine
        self.calibrate = calibrate

    def _options(self) -> dict[str, Any]:
        return {**super()._options(), "n_noise": self.n_noise, "combine": self.combine, "calibrate": self.calibrate}

    def score_parts(self, attribute: Attribute, inputs: torch.Tensor, indices: torch.Tensor | None = None,
                    seed: int | None = None) -> ScoreParts:
        """``I`` (and, calibrated, ``I_null`` and ``I / I_null``) per sample, averaged over ``n_noise`` draws."""
        seed = self.seed if seed is None else seed
        options = (self.transform, self.normalization, self.combine, self.layer_pair.source.layout)
        A_real = attribute(inputs)
        A_null = attribute(make_noise(inputs, self.noise, seed, indices, "null")) if self.calibrate else None
        raw = null = None
        for draw in range(self.n_noise):
            A_noise = attribute(make_noise(inputs, self.noise, seed, indices, draw))
            term = informativeness_score(A_real, A_noise, *options)
            raw = term if raw is None else raw + term
            if A_null is not None:
                term = informativeness_score(A_null, A_noise, *options)
                null = term if null is None else null + term
        assert raw is not None
        raw = raw / self.n_noise
        if null is None:
            return ScoreParts(raw)
        null = null / self.n_noise
        return ScoreParts(raw, null, calibrated_ratio(raw, null))

    def _null_in_states(self) -> bool:
        return self.calibrate

    def _summarize(self, indices: torch.Tensor, states: dict[str, torch.Tensor]) -> ScoreSummary:
        summary = super()._summarize(indices, states)
        if "null_values" in states:
            summary.null = ScoreSummary.of(self.name, states["null_values"], indices)
            summary.calibrated = ScoreSummary.of(f"calibrated {self.name}",
                                                 calibrated_ratio(states["values"], states["null_values"]), indices)
        return summary
