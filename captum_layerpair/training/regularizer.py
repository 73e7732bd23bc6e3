"""A differentiable loss term that raises the informativeness and disentanglement of a representation.

The layer-pair attribution is gradient x activation at the source layer, ``A_k = d f_k / d a * a``, for all K
target units from one forward pass and one batched vector-Jacobian product built with ``create_graph=True``;
the scores computed from it (``normalization="max"`` by default, smooth almost everywhere) are therefore
differentiable w.r.t. the model's parameters, and back-propagating the loss term is a double back-propagation.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from captum_layerpair._model_state import model_state_preserved
from captum_layerpair._typing import LayerSpec, TargetReduction, Transform
from captum_layerpair.attr.paper_expected_gradients import gradient_x_value, interpolated_input
from captum_layerpair.layers import LayerPair
from captum_layerpair.metrics._latent import Noise, check_options, make_noise
from captum_layerpair.metrics.disentanglement import disentanglement_score
from captum_layerpair.metrics.informativeness import COMBINES, Combine, informativeness_score

__all__ = ["LatentScoreRegularizer"]

METHODS = ("gradient_x_activation", "paper_expected_gradients")


class LatentScoreRegularizer:
    r"""Loss term ``-(w_I I + w_D D)`` averaged over the batch; adding it to a loss raises both scores.

    Parameters
    ----------
    model:
        The network (an ``nn.Module``); its train/eval mode, hooks, ``requires_grad`` flags and buffers (e.g.
        BatchNorm running statistics, so noise inputs never enter them) are as before each call. In train mode
        BatchNorm normalises with the statistics of the batch, as in the training forward pass.
    source_layer, target_layer:
        Modules of ``model`` or dotted names: a convolutional layer and the embedding (K units after
        ``target_reduction``; K >= 2 when ``disentanglement_weight > 0``).
    informativeness_weight, disentanglement_weight:
        ``w_I``, ``w_D >= 0``, not both 0. A zero weight skips that score's computation (and, for ``w_I = 0``,
        the noise passes).
    method:
        ``"gradient_x_activation"`` (one pass per input batch) or ``"paper_expected_gradients"`` (the paper's
        attribution, ``method_kwargs`` ``n_samples`` (default 4), ``stdev`` (0.1), ``baselines`` (0.0): that many
        passes per input batch).
    every_n_steps:
        Compute the term on every n-th call only (the first call included); other calls return a zero tensor.
    transform, normalization, noise, n_noise, combine:
        As for ``InformativenessScore`` / ``DisentanglementScore``; ``normalization="max"`` by default because
        min-max normalisation has a kink at both extremes.
    target_reduction:
        How the target output becomes K units (SPEC section 2).
    attribute_to_source_input:
        Attribute to the source layer's input (the paper's setting) instead of its output.

    Attributes
    ----------
    last_scores:
        Detached batch means ``{"informativeness": ..., "disentanglement": ...}`` of the last computed term
        (only the scores with a non-zero weight), for logging.

    Examples
    --------
    >>> reg = LatentScoreRegularizer(model.encoder, "conv2", "embed", 0.1, 0.1)
    >>> loss = criterion(model(x), y) + reg(x)
    >>> loss.backward()
    """

    def __init__(
        self,
        model: nn.Module,
        source_layer: LayerSpec,
        target_layer: LayerSpec,
        informativeness_weight: float = 1.0,
        disentanglement_weight: float = 1.0,
        method: str = "gradient_x_activation",
        every_n_steps: int = 1,
        transform: Transform = "abs",
        normalization: str = "max",
        noise: Noise = "uniform",
        n_noise: int = 1,
        combine: Combine = "sum",
        target_reduction: TargetReduction = "sum",
        attribute_to_source_input: bool = False,
        method_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        weights = {"informativeness_weight": informativeness_weight, "disentanglement_weight": disentanglement_weight}
        for name, weight in weights.items():
            if not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"{name} must be a number >= 0, got {weight!r}")
        if informativeness_weight == 0 and disentanglement_weight == 0:
            raise ValueError("informativeness_weight and disentanglement_weight are both 0: the term would be 0")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; allowed: {list(METHODS)}")
        extra = set(method_kwargs or {}) - ({"n_samples", "stdev", "baselines"} if method != METHODS[0] else set())
        if extra:
            raise ValueError(f"method {method!r} takes no method_kwargs {sorted(extra)}")
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive int, got {every_n_steps!r}")
        if isinstance(n_noise, bool) or not isinstance(n_noise, int) or n_noise < 1:
            raise ValueError(f"n_noise must be a positive int, got {n_noise!r}")
        check_options(transform, normalization, noise)
        if combine not in COMBINES:
            raise ValueError(f"unknown combine {combine!r}; allowed: {list(COMBINES)}")
        self.model = model
        self.pair = LayerPair.build(model, source_layer, target_layer, target_reduction)
        self.informativeness_weight = float(informativeness_weight)
        self.disentanglement_weight = float(disentanglement_weight)
        self.method = method
        self.method_kwargs = {"n_samples": 4, "stdev": 0.1, "baselines": 0.0, **(method_kwargs or {})}
        self.every_n_steps = every_n_steps
        self.transform = transform
        self.normalization = normalization
        self.noise = noise
        self.n_noise = n_noise
        self.combine = combine
        self.attribute_to_source_input = attribute_to_source_input
        self.calls = 0
        self.last_scores: dict[str, torch.Tensor] = {}

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """The loss term for the batch ``inputs [N, ...]``: a scalar, differentiable w.r.t. the parameters."""
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
            raise TypeError("inputs must be a floating-point tensor [N, ...]")
        if not torch.isfinite(inputs).all():
            raise ValueError("inputs contain NaN or inf values")
        self.calls += 1
        if (self.calls - 1) % self.every_n_steps:
            return inputs.new_zeros(())
        with model_state_preserved(self.model):
            A = self._attribution(inputs)  # [N, K, *S]
            term = inputs.new_zeros(inputs.shape[0])
            self.last_scores = {}
            if self.disentanglement_weight:
                D = disentanglement_score(A, self.transform, self.normalization)
                term = term + self.disentanglement_weight * D
                self.last_scores["disentanglement"] = D.detach().mean()
            if self.informativeness_weight:
                info = sum(informativeness_score(A, self._attribution(make_noise(inputs, self.noise)), self.transform,
                                                 self.normalization, self.combine) for _ in range(self.n_noise))
                info = info / self.n_noise
                term = term + self.informativeness_weight * info
                self.last_scores["informativeness"] = info.detach().mean()
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
