"""The random-model baseline of the latent scores: the same layer pair on a re-initialised copy of the model."""
from __future__ import annotations

from torch import nn

from captum_layerpair._reinit import randomized_copy
from captum_layerpair.attr.layer_pair import LayerPairAttribution

__all__ = ["random_model_pair"]


def random_model_pair(layer_pair: LayerPairAttribution, seed: int = 0) -> LayerPairAttribution:
    """The same layer pair on a deep copy of its model with every parameter re-initialised (seeded).

    Each parameterised module is re-initialised with ``reinitialize(module, module_seed(seed, name))``, exactly as
    ``ModelParameterRandomization`` does, so both give the same parameters for the same module and seed. The
    user's model is not touched.
    """
    if not isinstance(layer_pair, LayerPairAttribution):
        raise TypeError(f"layer_pair must be a LayerPairAttribution, got {type(layer_pair).__name__}")
    if not isinstance(layer_pair.forward_func, nn.Module):
        raise TypeError("a random-model baseline needs the layer pair's forward_func to be an nn.Module, got "
                        f"{type(layer_pair.forward_func).__name__}")
    return layer_pair.on(randomized_copy(layer_pair.forward_func, seed))
