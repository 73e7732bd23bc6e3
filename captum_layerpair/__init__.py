"""captum_layerpair: explain, evaluate and improve learned representations with Captum.

Layer-pair attribution (every unit of a target layer onto every unit of a source layer, with any Captum method),
aggregation, latent scores, parameter-randomisation checks and related representation explainers.
"""
from captum_layerpair.aggregation import aggregate
from captum_layerpair.attr import (LayerPairAttribution, LayerPairDeepLift, LayerPairFeatureAblation,
                                   LayerPairGradientShap, LayerPairInputXGradient, LayerPairIntegratedGradients,
                                   LayerPairOcclusion, LayerPairSaliency)
from captum_layerpair.attr.label_free import LabelFreeAttribution
from captum_layerpair.attr.relax import RELAX

__version__ = "0.1.0"

__all__ = ["LayerPairAttribution", "LayerPairSaliency", "LayerPairInputXGradient", "LayerPairIntegratedGradients",
           "LayerPairGradientShap", "LayerPairDeepLift", "LayerPairOcclusion", "LayerPairFeatureAblation",
           "aggregate", "RELAX", "LabelFreeAttribution"]
