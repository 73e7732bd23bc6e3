"""Mutual Information Gap (Chen et al., NeurIPS 2018), a disentanglement metric that needs the true factors.

For each factor ``v_j``, the gap between the two code dimensions most informative about it, normalised by the
factor's entropy: ``MIG = mean_j (I(z_a; v_j) - I(z_b; v_j)) / H(v_j)`` with ``a, b`` the dimensions of largest
and second-largest mutual information. Continuous codes (and factors, unless ``discrete_factors``) are
discretised into equal-width histogram bins, as in ``disentanglement_lib``; mutual information is
``sklearn.metrics.mutual_info_score`` (in nats).
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import mutual_info_score

from captum_layerpair._typing import ArrayLike

__all__ = ["discretize", "mutual_information_matrix", "mutual_information_gap"]



def _as_2d(values: ArrayLike, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape [N, dims]; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return array


def discretize(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin each column of ``values [N, D]`` into ``n_bins`` equal-width bins: integer labels ``[N, D]``."""
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    out = np.zeros(values.shape, dtype=np.int64)
    for d in range(values.shape[1]):
        edges = np.histogram(values[:, d], bins=n_bins)[1]
        out[:, d] = np.digitize(values[:, d], edges[1:-1])
    return out


def _labels(codes: ArrayLike, factors: ArrayLike, n_bins: int, discrete_factors: bool) -> tuple[np.ndarray, ...]:
    z = discretize(_as_2d(codes, "codes"), n_bins)
    v = _as_2d(factors, "factors")
    if z.shape[0] != v.shape[0]:
        raise ValueError(f"codes and factors must have the same number of samples; got {z.shape[0]} and {v.shape[0]}")
    return z, v.astype(np.int64) if discrete_factors else discretize(v, n_bins)


def _mi(z: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.array([[mutual_info_score(v[:, f], z[:, d]) for f in range(v.shape[1])] for d in range(z.shape[1])])


def mutual_information_matrix(codes: ArrayLike, factors: ArrayLike, n_bins: int = 20,
                              discrete_factors: bool = False) -> np.ndarray:
    """``[D, F]`` mutual information (nats) between each discretised code dimension and each factor.

    ``codes [N, D]``; ``factors [N, F]`` (integer labels if ``discrete_factors``, else discretised like the codes).
    """
    return _mi(*_labels(codes, factors, n_bins, discrete_factors))


def mutual_information_gap(codes: ArrayLike, factors: ArrayLike, n_bins: int = 20,
                           discrete_factors: bool = False) -> float:
    """MIG of ``codes [N, D]`` (``D >= 2``) with respect to ``factors [N, F]``, in ``[0, 1]``.

    Factors that take a single value (zero entropy) are skipped; ``ValueError`` if every factor is constant.
    """
    z, v = _labels(codes, factors, n_bins, discrete_factors)
    if z.shape[1] < 2:
        raise ValueError(f"MIG needs at least 2 code dimensions, got {z.shape[1]}")
    mi = _mi(z, v)
    entropy = np.array([mutual_info_score(v[:, f], v[:, f]) for f in range(v.shape[1])])
    keep = entropy > 0
    if not keep.any():
        raise ValueError("every factor is constant (zero entropy): MIG is undefined")
    top = np.sort(mi, axis=0)[::-1]
    return float(np.mean((top[0, keep] - top[1, keep]) / entropy[keep]))
