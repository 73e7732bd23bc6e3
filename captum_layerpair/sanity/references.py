"""Reference maps for reading a randomisation check: how much of a map is the source activation's own pattern?

In the layer-pair setting the source activation plays the role of the input image. A method that multiplies by the
activation (InputXGradient) or by its difference from a baseline (IntegratedGradients, GradientShap, DeepLift)
carries the activation's pattern into every map, whatever the weights between source and target. Comparing the
trained map with the activation alone says how much of "stays similar after randomisation" that pattern explains.
"""
from __future__ import annotations

from typing import Any

import torch

from captum_layerpair.attr.layer_pair import LayerPairAttribution

__all__ = ["activation_map"]


def activation_map(layer_pair: LayerPairAttribution, inputs: torch.Tensor | tuple[torch.Tensor, ...], n_units: int,
                   input_baselines: torch.Tensor | float | None = None, additional_forward_args: Any = None,
                   attribute_to_source_input: bool = False) -> torch.Tensor:
    """The activation-only "attribution" ``|a(x)|`` (or ``|a(x) - a(b)|``), the same for every target unit.

    Parameters
    ----------
    layer_pair:
        The layer pair whose source activation ``a`` is read.
    inputs:
        Model inputs ``[N, ...]``.
    n_units:
        K, the number of target units the map is repeated for (``A.shape[1]`` of the attribution it is compared
        with).
    input_baselines:
        A model-input baseline ``b`` (``[1 or N, ...]`` or a number, e.g. 0 for a black image): the map is then
        ``|a(x) - a(b)|``, what IntegratedGradients-style methods multiply by.
    additional_forward_args, attribute_to_source_input:
        As for ``LayerPairAttribution.attribute``.

    Returns
    -------
    ``[N, K, *source_shape]``, comparable with an attribution by every similarity measure.
    """
    a = layer_pair.source_activations(inputs, additional_forward_args, attribute_to_source_input)
    if input_baselines is not None:
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[0]
        b = input_baselines if isinstance(input_baselines, torch.Tensor) else torch.full_like(x[:1],
                                                                                            float(input_baselines))
        same_batch = b.shape[0] == x.shape[0]
        a = a - layer_pair.source_activations(b, additional_forward_args if same_batch else None,
                                              attribute_to_source_input)
    return a.abs().unsqueeze(1).expand(a.shape[0], n_units, *a.shape[1:])
