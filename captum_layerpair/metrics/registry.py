"""The latent scores the report, the regulariser and the CLI iterate over: one line per score.

Each score class declares ``name``, ``higher_is_better``, ``is_differentiable`` and a one-line ``description``.
A new score is one module, one line here, and its tests.
"""
from __future__ import annotations

from captum_layerpair.metrics.disentanglement import DisentanglementScore
from captum_layerpair.metrics.informativeness import InformativenessScore
from captum_layerpair.metrics.latent_score import LatentScore

__all__ = ["SCORES"]

SCORES: dict[str, type[LatentScore]] = {cls.name: cls for cls in (InformativenessScore, DisentanglementScore)}
