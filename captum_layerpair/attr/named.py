"""Layer-pair versions of the common Captum methods: ``LayerPair<Method>(forward_func, source_layer, target_layer)``."""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from captum.attr import (DeepLift, FeatureAblation, GradientShap, InputXGradient, IntegratedGradients, Occlusion,
                         Saliency)

from captum_layerpair._typing import LayerSpec, TargetReduction
from captum_layerpair.attr.layer_pair import LayerPairAttribution

__all__ = ["LayerPairSaliency", "LayerPairInputXGradient", "LayerPairIntegratedGradients", "LayerPairGradientShap",
           "LayerPairDeepLift", "LayerPairOcclusion", "LayerPairFeatureAblation"]


class _NamedLayerPair(LayerPairAttribution):
    """A ``LayerPairAttribution`` whose method is fixed by the subclass (see ``LayerPairAttribution``)."""

    captum_method: type

    def __init__(self, forward_func: Callable[..., Any], source_layer: LayerSpec, target_layer: LayerSpec,
                 target_reduction: TargetReduction = "sum", method_kwargs: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(forward_func, source_layer, target_layer, self.captum_method, target_reduction,
                         method_kwargs, **kwargs)


class LayerPairSaliency(_NamedLayerPair):
    """Layer-pair ``captum.attr.Saliency``: ``|d g_k / d a|`` (``abs=False`` for the signed gradient)."""

    captum_method = Saliency


class LayerPairInputXGradient(_NamedLayerPair):
    """Layer-pair ``captum.attr.InputXGradient``: ``a * d g_k / d a`` (gradient x activation)."""

    captum_method = InputXGradient


class LayerPairIntegratedGradients(_NamedLayerPair):
    """Layer-pair ``captum.attr.IntegratedGradients`` in source-activation space (``input_baselines`` maps
    model-input baselines there); convergence deltas per unit against the sub-network."""

    captum_method = IntegratedGradients


class LayerPairGradientShap(_NamedLayerPair):
    """Layer-pair ``captum.attr.GradientShap``; ``baselines`` is a distribution of source activations."""

    captum_method = GradientShap


class LayerPairDeepLift(_NamedLayerPair):
    """Layer-pair ``captum.attr.DeepLift`` (rescale rule) on the sub-network from source to target."""

    captum_method = DeepLift


class LayerPairOcclusion(_NamedLayerPair):
    """Layer-pair ``captum.attr.Occlusion`` over windows of the source activation (``sliding_window_shapes``)."""

    captum_method = Occlusion


class LayerPairFeatureAblation(_NamedLayerPair):
    """Layer-pair ``captum.attr.FeatureAblation`` over source features (``feature_mask`` groups them)."""

    captum_method = FeatureAblation
