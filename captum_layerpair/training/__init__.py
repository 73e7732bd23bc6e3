"""Training with latent-score constraints: a differentiable informativeness / disentanglement loss term."""
from captum_layerpair.training.regularizer import LatentScoreRegularizer

__all__ = ["LatentScoreRegularizer"]
