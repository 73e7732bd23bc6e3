"""Generated data with known factors: the images must show the factors they claim."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from captum_layerpair.datasets import (BLOB_FACTORS, SHAPE_FACTORS, SHAPES, make_blob_images,
                                       make_shape_images)

S = 16


def centroid(weights: torch.Tensor) -> torch.Tensor:
    """``[N, 2]`` (x, y) centroid of ``weights [N, S, S]`` as fractions of the side (pixel centres at (j + 0.5)/S)."""
    coords = (torch.arange(weights.shape[-1], dtype=torch.float64) + 0.5) / weights.shape[-1]
    w = weights.double()
    total = w.sum((1, 2))
    return torch.stack([(w.sum(1) * coords).sum(1) / total, (w.sum(2) * coords).sum(1) / total], 1)


def test_shape_images_have_the_documented_shapes_ranges_and_factor_names():
    data = make_shape_images(50, image_size=S, seed=0)
    assert data.images.shape == (50, 1, S, S) and data.images.dtype == torch.float32
    assert data.factors.shape == (50, 4) and data.masks.shape == (50, 1, S, S) and data.masks.dtype == torch.bool
    assert data.factor_names == SHAPE_FACTORS
    assert 0 <= data.images.min() and data.images.max() <= 1
    assert set(data.factors[:, 0].tolist()) == {0.0, 1.0, 2.0}
    assert data.factors[:, 1].min() >= 0.25 and data.factors[:, 1].max() <= 0.45


@given(seed=st.integers(0, 10_000))
def test_the_centroid_of_a_shape_is_its_position_factor(seed):
    data = make_shape_images(20, image_size=S, seed=seed)
    position = data.factors[:, 2:].double()
    # Intensities are area coverages: their centroid is the true centroid up to the sub-sampling (1/8 pixel).
    assert torch.allclose(centroid(data.images[:, 0]), position, atol=0.15 / S)
    # The thresholded mask loses at most half a pixel along each edge.
    assert torch.allclose(centroid(data.masks[:, 0].float()), position, atol=0.5 / S)


def test_mask_area_grows_with_scale_and_matches_the_shape_area():
    n, areas = 400, {"square": 1.0, "ellipse": torch.pi * 0.5 * 0.3, "triangle": 3**0.5 / 4}
    for index, (name, unit_area) in enumerate(areas.items()):
        data = make_shape_images(n, image_size=32, seed=index, shapes=[name])
        scale = data.factors[:, 1].double()
        area = data.masks.sum((1, 2, 3)).double() / 32**2
        coverage = data.images.sum((1, 2, 3)).double() / 32**2
        # Coverage counts sub-samples (1/128 of the side): the error is at most perimeter (<= 4 scale) x 1/128.
        assert ((coverage - unit_area * scale**2).abs() <= 4 * scale / 128).all(), name
        assert ((area - unit_area * scale**2).abs() <= 4 * scale / 32).all(), name
        order = scale.argsort()
        rho = torch.corrcoef(torch.stack([order.argsort().double(), area.argsort().argsort().double()]))[0, 1]
        assert rho > 0.95, name


def test_the_shape_factor_selects_the_painter():
    square = make_shape_images(30, image_size=32, seed=3, shapes=["square"])
    triangle = make_shape_images(30, image_size=32, seed=3, shapes=["triangle"])
    # Same factor draws (same seed), so only the shape differs: a triangle covers sqrt(3)/4 of the square.
    assert torch.equal(square.factors, triangle.factors)
    ratio = triangle.images.sum((1, 2, 3)) / square.images.sum((1, 2, 3))
    assert torch.allclose(ratio, torch.full_like(ratio, 3**0.5 / 4), rtol=0.06)


def test_same_seed_same_images_different_seed_different_images():
    for make in (make_shape_images, make_blob_images):
        a, b, c = make(40, seed=7), make(40, seed=7), make(40, seed=8)
        assert torch.equal(a.images, b.images) and torch.equal(a.factors, b.factors) and torch.equal(a.masks, b.masks)
        assert not torch.equal(a.images, c.images) and not torch.equal(a.factors, c.factors)


def test_generators_neither_read_nor_change_the_global_random_state():
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    first = make_shape_images(10, seed=1, noise=0.1)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(123)
    assert torch.equal(make_shape_images(10, seed=1, noise=0.1).images, first.images)


def test_factors_are_independent_and_fill_their_ranges():
    data = make_shape_images(4000, seed=0)
    corr = torch.corrcoef(data.factors.T)
    assert (corr - torch.eye(4)).abs().max() < 0.06
    counts = torch.bincount(data.factors[:, 0].long(), minlength=len(SHAPES))
    assert counts.min() > 1200


def test_blob_masks_lie_in_their_quadrant_and_grow_with_the_size_factor():
    data = make_blob_images(200, image_size=S, seed=0)
    assert data.factor_names == BLOB_FACTORS
    quadrant = torch.zeros(4, S, S, dtype=torch.bool)
    half = S // 2
    for q, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        quadrant[q, r * half:(r + 1) * half, c * half:(c + 1) * half] = True
    centres = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]], dtype=torch.float64)  # (x, y)
    for q in range(4):
        inside_image = data.factors[:, q] < 0.3  # 2 x radius < 1/4 of the side: the disc is not cut by the border
        found = centroid(data.masks[inside_image, q].float())
        assert torch.allclose(found, centres[q].expand_as(found), atol=1e-9)
        area = data.masks[:, q].sum((1, 2)).double()
        order = data.factors[:, q].argsort()
        assert (area[order].diff() >= 0).all()  # monotone in the size factor
    # Large blobs' supports (twice the radius) reach into the neighbouring quadrants; most pixels stay home.
    inside = (data.masks & quadrant).sum() / data.masks.sum()
    assert 0.75 < inside < 1


@pytest.mark.parametrize("kwargs, message", [
    ({"shapes": ["circle"]}, "unknown shape 'circle'"),
    ({"shapes": "square"}, "non-empty sequence"),
    ({"min_scale": 0.5, "max_scale": 0.3}, "min_scale <= max_scale"),
    ({"max_scale": 0.9}, "fit the image"),
    ({"n": 0}, "n must be a positive int"),
])
def test_bad_arguments_raise_one_clear_error(kwargs, message):
    args = {"n": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_shape_images(**args)
