"""Embedded data that needs no download: scikit-learn's handwritten digits and generated images with known factors."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["load_digits_images", "FactorImages", "make_blob_images"]


def load_digits_images(image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 8x8 digits shipped with scikit-learn, as images.

    Parameters
    ----------
    image_size:
        If given, images are resized bilinearly to ``image_size x image_size``.

    Returns
    -------
    images:
        ``[1797, 1, S, S]`` float32 in ``[0, 1]`` (``S = 8`` unless resized).
    labels:
        ``[1797]`` int64 digit labels.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    if image_size is not None and image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
        images = images.clamp(0.0, 1.0)
    return images, torch.from_numpy(digits.target.astype(np.int64))


class FactorImages(NamedTuple):
    """Generated images with their ground truth.

    images: ``[N, 1, S, S]`` float32 in ``[0, 1]``.
    factors: ``[N, 4]`` float32 in ``[0, 1]``: the size factor of the blob in each quadrant
        (top-left, top-right, bottom-left, bottom-right).
    masks: ``[N, 4, S, S]`` bool: the pixels of each quadrant's blob (its support), usable as concept masks.
    """

    images: torch.Tensor
    factors: torch.Tensor
    masks: torch.Tensor


def make_blob_images(
    n: int, image_size: int = 16, noise: float = 0.0, seed: int = 0, min_radius: float = 0.08,
    max_radius: float = 0.22,
) -> FactorImages:
    """Images with one Gaussian blob in each quadrant, whose radii are four independent factors.

    Blob ``q`` has radius ``min_radius + factor_q * (max_radius - min_radius)`` (as a fraction of the image side),
    centred in its quadrant, so each factor lives in a known region of the image.

    Parameters
    ----------
    n: number of images.
    image_size: side ``S`` in pixels.
    noise: standard deviation of additive Gaussian pixel noise (images are clipped to ``[0, 1]``).
    seed: seed of the factor and noise draws.

    Returns
    -------
    FactorImages with ``images [n, 1, S, S]``, ``factors [n, 4]``, ``masks [n, 4, S, S]``.
    """
    gen = torch.Generator().manual_seed(seed)
    factors = torch.rand(n, 4, generator=gen)
    coords = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    centres = torch.tensor([[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [0.75, 0.75]])
    dist2 = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2  # [4, S, S]
    radii = min_radius + factors * (max_radius - min_radius)  # [n, 4]
    blobs = torch.exp(-dist2[None] / (2 * radii[:, :, None, None] ** 2))  # [n, 4, S, S]
    images = blobs.sum(1, keepdim=True)
    if noise > 0:
        images = images + noise * torch.randn(images.shape, generator=gen)
    masks = dist2[None] <= (2 * radii[:, :, None, None]) ** 2
    return FactorImages(images.clamp(0.0, 1.0), factors, masks)
