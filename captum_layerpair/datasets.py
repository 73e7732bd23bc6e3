"""Embedded data that needs no download: scikit-learn's handwritten digits and generated images with known factors.

Generators draw from a private ``torch.Generator`` seeded with their ``seed`` argument: they never read or change a
global random state, and the same arguments give the same images.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from captum_layerpair._checks import check_choice, check_positive_int

__all__ = ["load_digits_images", "FactorImages", "make_blob_images", "make_shape_images", "SHAPES",
           "BLOB_FACTORS", "SHAPE_FACTORS"]

BLOB_FACTORS = ("top-left size", "top-right size", "bottom-left size", "bottom-right size")
SHAPE_FACTORS = ("shape", "scale", "x", "y")


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
    factors: ``[N, F]`` float32, one column per generating factor, named by ``factor_names``.
    masks: ``[N, O, S, S]`` bool: the pixels of each of the ``O`` objects of an image, usable as concept masks.
    factor_names: the ``F`` factor names (``BLOB_FACTORS`` or ``SHAPE_FACTORS``).
    """

    images: torch.Tensor
    factors: torch.Tensor
    masks: torch.Tensor
    factor_names: tuple[str, ...]


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
    FactorImages with ``images [n, 1, S, S]``, ``factors [n, 4]`` in ``[0, 1]`` (the size factor of the blob in
    each quadrant, in the order of ``BLOB_FACTORS``: top-left, top-right, bottom-left, bottom-right) and
    ``masks [n, 4, S, S]`` (each blob's support: the pixels within twice its radius of its centre).
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
    return FactorImages(images.clamp(0.0, 1.0), factors, masks, BLOB_FACTORS)


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u.abs() <= 0.5) & (v.abs() <= 0.5)


def _ellipse(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u / 0.5) ** 2 + (v / 0.3) ** 2 <= 1


_TRIANGLE_HEIGHT = 3**0.5 / 2


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Equilateral, side 1, apex up, centroid at the origin (``v`` grows downwards)."""
    return (v <= _TRIANGLE_HEIGHT / 3) & (v >= -2 * _TRIANGLE_HEIGHT / 3 + 3**0.5 * u.abs())


# Indicator functions of the shapes on offsets (u, v) from the centroid in units of the scale (u right, v down).
SHAPES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "square": _square, "ellipse": _ellipse, "triangle": _triangle,
}
_HALF_EXTENT = 2 * _TRIANGLE_HEIGHT / 3  # farthest any shape reaches from its centroid along x or y (scale units)


def make_shape_images(
    n: int, image_size: int = 16, seed: int = 0, shapes: Sequence[str] = tuple(SHAPES), min_scale: float = 0.25,
    max_scale: float = 0.45, noise: float = 0.0, supersample: int = 4,
) -> FactorImages:
    """dSprites-like images: one white shape on black, with four independent factors.

    Factors (drawn independently and uniformly): the shape (one of ``shapes``: ``"square"``, an ``"ellipse"`` with
    axes 1 x 0.6 of the scale, an equilateral ``"triangle"`` pointing up), its scale (width as a fraction of the
    image side, in ``[min_scale, max_scale]``) and the position of its centroid (``x``, ``y`` as fractions of the
    image side, 0 the left / top edge), in ``[m, 1 - m]`` with a margin ``m`` that keeps every shape inside the image.
    Pixels hold the shape's area coverage (from ``supersample x supersample`` points per pixel), so the intensity-
    weighted centroid of an image is its position factor up to a fraction of a pixel.

    Parameters
    ----------
    n: number of images.
    image_size: side ``S`` in pixels.
    seed: seed of a private generator for the factor and noise draws (no global random state is used).
    shapes: names from ``SHAPES``; the shape factor is the index into this sequence.
    min_scale, max_scale: range of the scale factor, ``0 < min_scale <= max_scale < 0.8``.
    noise: standard deviation of additive Gaussian pixel noise (images are clipped to ``[0, 1]``).
    supersample: sub-samples per pixel side used for the area coverage.

    Returns
    -------
    FactorImages with ``images [n, 1, S, S]``, ``factors [n, 4]`` (``SHAPE_FACTORS``: shape index, scale, x, y),
    ``masks [n, 1, S, S]`` (pixels at least half covered by the shape).
    """
    check_positive_int("n", n)
    check_positive_int("image_size", image_size)
    check_positive_int("supersample", supersample)
    if isinstance(shapes, str) or not shapes:
        raise ValueError(f"shapes must be a non-empty sequence of names from {sorted(SHAPES)}, got {shapes!r}")
    painters = [check_choice("shape", name, SHAPES) for name in shapes]
    if not 0 < min_scale <= max_scale < 1 / (2 * _HALF_EXTENT):
        raise ValueError(f"need 0 < min_scale <= max_scale < {1 / (2 * _HALF_EXTENT):.3f} (so shapes fit the image); "
                         f"got min_scale = {min_scale}, max_scale = {max_scale}")
    gen = torch.Generator().manual_seed(seed)
    shape = torch.randint(len(painters), (n,), generator=gen)
    scale = min_scale + (max_scale - min_scale) * torch.rand(n, generator=gen)
    margin = _HALF_EXTENT * max_scale
    xy = margin + (1 - 2 * margin) * torch.rand(n, 2, generator=gen)
    fine = image_size * supersample
    coords = (torch.arange(fine, dtype=torch.float32) + 0.5) / fine  # sub-sample centres, fractions of the side
    u = (coords[None, None, :] - xy[:, 0, None, None]) / scale[:, None, None]  # [n, 1, fine]
    v = (coords[None, :, None] - xy[:, 1, None, None]) / scale[:, None, None]  # [n, fine, 1]
    inside = torch.zeros(n, fine, fine, dtype=torch.bool)
    for index, painter in enumerate(painters):
        chosen = shape == index
        if chosen.any():
            inside[chosen] = painter(u[chosen], v[chosen])
    coverage = F.avg_pool2d(inside.float().unsqueeze(1), supersample)  # [n, 1, S, S]
    images = coverage
    if noise > 0:
        images = images + noise * torch.randn(images.shape, generator=gen)
    factors = torch.stack([shape.float(), scale, xy[:, 0], xy[:, 1]], 1)
    return FactorImages(images.clamp(0.0, 1.0), factors, coverage >= 0.5, SHAPE_FACTORS)
