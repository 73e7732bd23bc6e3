"""Sanity checks: does a layer-pair attribution depend on the model's parameters? (SPEC section 5)."""
from captum_layerpair.sanity.randomization import ModelParameterRandomization
from captum_layerpair.sanity.result import RandomizationResult
from captum_layerpair.sanity.similarity import SIMILARITIES

__all__ = ["ModelParameterRandomization", "RandomizationResult", "SIMILARITIES"]
