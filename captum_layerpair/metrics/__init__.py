"""Scores over layer-pair attributions and unit-concept alignment."""
from captum_layerpair.metrics.disentanglement import DisentanglementScore, disentanglement_score
from captum_layerpair.metrics.informativeness import InformativenessScore, informativeness_score
from captum_layerpair.metrics.mig import mutual_information_gap
from captum_layerpair.metrics.network_dissection import DissectionResult, NetworkDissection, dissect_maps
from captum_layerpair.metrics.registry import SCORES
from captum_layerpair.metrics.summary import ScoreAccumulator, ScoreSummary

__all__ = ["NetworkDissection", "DissectionResult", "dissect_maps", "InformativenessScore", "DisentanglementScore",
           "informativeness_score", "disentanglement_score", "ScoreSummary", "ScoreAccumulator",
           "mutual_information_gap", "SCORES"]
