"""Scores over layer-pair attributions and unit-concept alignment.

Latent scores are ``torchmetrics.Metric``s (``update`` / ``compute`` / ``reset``, ``score(batch)``,
``evaluate(loader)``), listed in ``SCORES``; each has a functional form on precomputed attributions.
"""
from captum_layerpair.metrics.disentanglement import DisentanglementScore, disentanglement_score
from captum_layerpair.distributed import Indexed, IndexedDataset, ShardSampler, shard_loader, split_batch
from captum_layerpair.metrics.informativeness import (COMBINES, InformativenessScore, calibrated_informativeness_score,
                                                      calibrated_ratio, informativeness_score)
from captum_layerpair.metrics.latent_score import Attribute, LatentScore, ScoreParts
from captum_layerpair.metrics.maps import check_attributions, unit_maps
from captum_layerpair.metrics.mig import mutual_information_gap
from captum_layerpair.metrics.network_dissection import DissectionResult, NetworkDissection, dissect_maps
from captum_layerpair.metrics.noise import NOISES, make_noise
from captum_layerpair.metrics.per_sample import PerSampleMetric, ScoreAccumulator
from captum_layerpair.metrics.random_model import random_model_pair
from captum_layerpair.metrics.registry import SCORES
from captum_layerpair.metrics.summary import ScoreSummary

__all__ = ["NetworkDissection", "DissectionResult", "dissect_maps", "InformativenessScore", "DisentanglementScore",
           "informativeness_score", "calibrated_informativeness_score", "calibrated_ratio", "disentanglement_score",
           "ScoreSummary", "ScoreAccumulator", "PerSampleMetric", "LatentScore", "ScoreParts", "Attribute",
           "mutual_information_gap", "SCORES", "NOISES", "COMBINES", "make_noise", "check_attributions", "unit_maps",
           "random_model_pair", "Indexed", "IndexedDataset", "ShardSampler", "shard_loader", "split_batch"]
