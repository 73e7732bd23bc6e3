"""Layer-pair attribution and the representation explainers it is compared with."""
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.attr.named import (LayerPairDeepLift, LayerPairFeatureAblation, LayerPairGradientShap,
                                         LayerPairInputXGradient, LayerPairIntegratedGradients, LayerPairOcclusion,
                                         LayerPairSaliency)

__all__ = ["LayerPairAttribution", "LayerPairSaliency", "LayerPairInputXGradient", "LayerPairIntegratedGradients",
           "LayerPairGradientShap", "LayerPairDeepLift", "LayerPairOcclusion", "LayerPairFeatureAblation"]
