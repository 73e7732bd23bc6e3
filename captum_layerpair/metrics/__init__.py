"""Scores over layer-pair attributions and unit-concept alignment."""
from captum_layerpair.metrics.network_dissection import DissectionResult, NetworkDissection, dissect_maps

__all__ = ["NetworkDissection", "DissectionResult", "dissect_maps"]
