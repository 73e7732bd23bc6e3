"""A differentiable loss term that raises the informativeness and disentanglement of a representation.

The layer-pair attribution is gradient x activation at the source layer, ``A_k = d f_k / d a * a``, for all K
target units from one forward pass and one batched vector-Jacobian product built with ``create_graph=True``;
the scores computed from it (``normalization="max"`` by default, smooth almost everywhere) are therefore
differentiable w.r.t. the model's parameters, and back-propagating the loss term is a double back-propagation.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from captum.attr import InputXGradient
from torch import nn

from captum_layerpair._checks import check_choice, check_finite, check_positive_int
from captum_layerpair._model_state import model_state_preserved
from captum_layerpair._random import derive_seed
from captum_layerpair._typing import LayerSpec, Noise, TargetReduction, Transform
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.attr.paper_expected_gradients import gradient_x_value, interpolated_input
from captum_layerpair.metrics import SCORES, LatentScore

__all__ = ["LatentScoreRegularizer"]

METHODS = ("gradient_x_activation", "paper_expected_gradients")


class LatentScoreRegularizer:
    r"""Loss term ``-sum_s w_s s`` (``-(w_I I + w_D D)``) averaged over the batch; adding it to a loss raises the
    scores.

    Parameters
    ----------
    model:
        The network (an ``nn.Module``); its train/eval mode, hooks, ``requires_grad`` flags and buffers (e.g.
        BatchNorm running statistics, so noise inputs never enter them) are as before each call. In train mode
        BatchNorm normalises with the statistics of the batch, as in the training forward pass.
    source_layer, target_layer:
        Modules of ``model`` or dotted names: a convolutional layer and the embedding (K units after
        ``target_reduction``; K >= 2 when the disentanglement weight is > 0).
    informativeness_weight, disentanglement_weight:
        ``w_I``, ``w_D >= 0`` (default 1 each), not both 0. Shorthand for ``weights``.
    weights:
        ``{score name: weight >= 0}`` over the differentiable scores of ``metrics.SCORES``
        (``{"informativeness": 0.1, "disentanglement": 1.0}``), instead of the two arguments above. A zero weight
        skips that score's computation (for informativeness, the noise passes).
    method:
        ``"gradient_x_activation"`` (one pass per input batch) or ``"paper_expected_gradients"`` (the paper's
        attribution, ``method_kwargs`` ``n_samples`` (default 4), ``stdev`` (0.1), ``baselines`` (0.0): that many
        passes per input batch).
    every_n_steps:
        Compute the term on every n-th call only (the first call included); other calls return a zero tensor.
    transform, normalization, noise, n_noise, combine, calibrate:
        As for the score classes (each score takes those it has); ``normalization="max"`` by default because
        min-max normalisation has a kink at both extremes.
    target_reduction:
        How the target output becomes K units (SPEC section 2).
    attribute_to_source_input:
        Attribute to the source layer's input (the paper's setting) instead of its output.
    seed:
        Seed of the noise inputs: call ``t`` draws fresh noise from ``(seed, t)`` with private generators (the
        global RNG is not used).

    Attributes
    ----------
    last_scores:
        Detached batch means ``{score name: ...}`` of the last computed term (only the scores with a non-zero
        weight), for logging.

    Examples
    --------
    >>> reg = LatentScoreRegularizer(model.encoder, "conv2", "embed", weights={"informativeness": 0.1,
    ...                                                                         "disentanglement": 1.0})
    >>> loss = criterion(model(x), y) + reg(x)
    >>> loss.backward()
    """

    def __init__(
        self,
        model: nn.Module,
        source_layer: LayerSpec,
        target_layer: LayerSpec,
        informativeness_weight: float | None = None,
        disentanglement_weight: float | None = None,
        method: str = "gradient_x_activation",
        every_n_steps: int = 1,
        transform: Transform = "abs",
        normalization: str = "max",
        noise: Noise = "uniform",
        n_noise: int = 1,
        combine: str = "sum",
        target_reduction: TargetReduction = "sum",
        attribute_to_source_input: bool = False,
        method_kwargs: dict[str, Any] | None = None,
        weights: dict[str, float] | None = None,
        calibrate: bool = False,
        seed: int = 0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.weights = _weights(informativeness_weight, disentanglement_weight, weights)
        check_choice("method", method, METHODS)
        extra = set(method_kwargs or {}) - ({"n_samples", "stdev", "baselines"} if method != METHODS[0] else set())
        if extra:
            raise ValueError(f"method {method!r} takes no method_kwargs {sorted(extra)}")
        check_positive_int("every_n_steps", every_n_steps)
        layer_pair = LayerPairAttribution(model, source_layer, target_layer, InputXGradient, target_reduction)
        options = {"transform": transform, "normalization": normalization, "noise": noise, "n_noise": n_noise,
                   "combine": combine, "calibrate": calibrate, "seed": seed}
        self.scores: dict[str, LatentScore] = {name: _build(SCORES[name], layer_pair, options) for name in self.weights}
        self.model = model
        self.pair = layer_pair.pair
        self.method = method
        self.method_kwargs = {"n_samples": 4, "stdev": 0.1, "baselines": 0.0, **(method_kwargs or {})}
        self.every_n_steps = every_n_steps
        self.attribute_to_source_input = attribute_to_source_input
        self.seed = seed
        self.calls = 0
        self.last_scores: dict[str, torch.Tensor] = {}

    @property
    def informativeness_weight(self) -> float:
        return self.weights.get("informativeness", 0.0)

    @property
    def disentanglement_weight(self) -> float:
        return self.weights.get("disentanglement", 0.0)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """The loss term for the batch ``inputs [N, ...]``: a scalar, differentiable w.r.t. the parameters."""
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a tensor [N, ...], got {type(inputs).__name__}")
        check_finite("inputs", inputs)
        self.calls += 1
        if (self.calls - 1) % self.every_n_steps:
            return inputs.new_zeros(()) if inputs.is_floating_point() else torch.zeros((), device=inputs.device)
        with model_state_preserved(self.model):
            A = self._attribution(inputs)  # [N, K, *S]

            def attribute(x: torch.Tensor) -> torch.Tensor:
                return A if x is inputs else self._attribution(x)

            indices, seed = torch.arange(len(inputs)), derive_seed(self.seed, "step", self.calls)
            term = A.new_zeros(inputs.shape[0])
            self.last_scores = {}
            for name, weight in self.weights.items():
                if weight:
                    value = self.scores[name].score_parts(attribute, inputs, indices, seed).value
                    term = term + weight * value
                    self.last_scores[name] = value.detach().mean()
        return -term.mean()

    def _attribution(self, x: torch.Tensor) -> torch.Tensor:
        """Gradient x activation (or the paper's expected-gradients version) ``[N, K, *S]``, with its graph."""
        if self.method == "gradient_x_activation":
            return self._gradient_x_activation(x)
        n_samples, stdev, baselines = (self.method_kwargs[key] for key in ("n_samples", "stdev", "baselines"))
        total = 0.0
        for _ in range(n_samples):
            total = total + self._gradient_x_activation(interpolated_input(x, stdev, baselines))
        return total / n_samples

    def _gradient_x_activation(self, x: torch.Tensor) -> torch.Tensor:
        return gradient_x_value(self.pair, (x,), None, self.attribute_to_source_input, create_graph=True)


def _weights(informativeness: float | None, disentanglement: float | None,
             weights: dict[str, float] | None) -> dict[str, float]:
    """``{score name: weight}`` from ``weights`` or the two shorthand arguments, checked."""
    if weights is None:
        named = {"informativeness_weight": 1.0 if informativeness is None else informativeness,
                 "disentanglement_weight": 1.0 if disentanglement is None else disentanglement}
        for name, weight in named.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {weight!r}")
        if not any(named.values()):
            raise ValueError("informativeness_weight and disentanglement_weight are both 0: the term would be 0")
        return {name.removesuffix("_weight"): float(weight) for name, weight in named.items()}
    if informativeness is not None or disentanglement is not None:
        raise ValueError("give either weights={...} or informativeness_weight / disentanglement_weight, not both")
    if not isinstance(weights, dict) or not weights:
        raise TypeError(f"weights must be a non-empty dict {{score name: weight}}, got {weights!r}")
    for name, weight in weights.items():
        score = check_choice("score", name, SCORES)
        if not score.is_differentiable:
            raise ValueError(f"the {name} score is not differentiable, so it cannot be a training term")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"weights[{name!r}] must be a number >= 0, got {weight!r}")
    if not any(weights.values()):
        raise ValueError(f"every weight is 0 ({weights}): the term would be 0")
    return {name: float(weight) for name, weight in weights.items()}


def _build(score: type[LatentScore], layer_pair: LayerPairAttribution, options: dict[str, Any]) -> LatentScore:
    """``score`` on ``layer_pair`` with the options its constructor takes."""
    accepted = inspect.signature(score.__init__).parameters
    return score(layer_pair, **{key: value for key, value in options.items() if key in accepted})
