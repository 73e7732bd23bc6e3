"""RELAX: importance where the encoder looks, non-negative uncertainty, seeding, batching and errors."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_layerpair.attr.relax import RELAX, _draw_grids, relax_masks, u_relax


class QuadrantEncoder(nn.Module):
    """A linear encoder ``[N, 1, 16, 16] -> [N, 6]`` that only sees the top-left 8x8 quadrant."""

    def __init__(self, embed_dim: int = 6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(embed_dim, 64, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, :8, :8].flatten(1) @ self.weight.T


class ScaledEncoder(nn.Module):
    """``f(x, scale) = scale * flatten(x)``, to check that additional forward args follow the masked batch."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scale * x.flatten(1)


def images(n: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) + 0.5


def test_importance_is_highest_in_the_quadrant_the_encoder_sees():
    importance = RELAX(QuadrantEncoder()).attribute(images(), n_masks=600)
    assert importance.shape == (3, 16, 16)
    seen = importance[:, :6, :6].mean(dim=(1, 2))  # well inside the seen quadrant
    unseen = importance[:, 10:, :].flatten(1)  # the bottom rows, far from it
    assert (seen > unseen.amax(dim=1)).all()
    # Pixels the encoder ignores all get (nearly) the same importance: the mean similarity.
    assert (unseen.std(dim=1) < 0.3 * (seen - unseen.mean(dim=1))).all()


def test_uncertainty_is_non_negative_and_returned_with_importance():
    importance, uncertainty = RELAX(QuadrantEncoder()).attribute(images(), n_masks=200, return_uncertainty=True)
    assert importance.shape == uncertainty.shape == (3, 16, 16)
    assert (uncertainty >= 0).all()
    assert uncertainty.sum() > 0


def test_constant_similarity_gives_that_importance_and_zero_uncertainty():
    importance, uncertainty = RELAX(QuadrantEncoder()).attribute(
        images(), n_masks=50, similarity=lambda h, h_masked: torch.full((len(h),), 0.3), return_uncertainty=True)
    torch.testing.assert_close(importance, torch.full_like(importance, 0.3))
    torch.testing.assert_close(uncertainty, torch.zeros_like(uncertainty), atol=1e-7, rtol=0)


def test_same_seed_reproduces_and_global_rng_is_untouched():
    relax, x = RELAX(QuadrantEncoder()), images()
    state = torch.get_rng_state()
    first = relax.attribute(x, n_masks=100, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, relax.attribute(x, n_masks=100, seed=3))
    assert not torch.equal(first, relax.attribute(x, n_masks=100, seed=4))


def test_mask_batch_size_changes_only_the_batching():
    relax, x = RELAX(QuadrantEncoder()), images()
    one_batch = relax.attribute(x, n_masks=90, mask_batch_size=90, return_uncertainty=True)
    many_batches = relax.attribute(x, n_masks=90, mask_batch_size=7, return_uncertainty=True)
    for a, b in zip(one_batch, many_batches):
        torch.testing.assert_close(a, b)


def test_samples_are_explained_independently_with_their_additional_forward_args():
    x, scale = images(n=3), torch.tensor([[1.0], [-2.0], [0.5]])
    together = RELAX(ScaledEncoder()).attribute(x, n_masks=40, similarity="dot", additional_forward_args=(scale,))
    for n in range(3):
        alone = RELAX(ScaledEncoder()).attribute(x[n:n + 1], n_masks=40, similarity="dot",
                                                 additional_forward_args=(scale[n:n + 1],))
        torch.testing.assert_close(together[n:n + 1], alone)


def test_masks_are_smooth_values_in_unit_interval_with_mean_near_p_keep():
    masks = relax_masks(2000, (14, 21), n_cells=7, p_keep=0.3, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (2000, 14, 21)
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.3) < 0.02
    assert ((masks > 0) & (masks < 1)).any()  # bilinear upsampling, not hard cells


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), n_masks=st.integers(1, 30), n_cells=st.integers(1, 8),
       p_keep=st.floats(0.1, 1.0), embed_dim=st.integers(1, 4))
def test_importance_lies_between_extreme_similarities_and_uncertainty_is_non_negative(
        seed, n_masks, n_cells, p_keep, embed_dim):
    gen = torch.Generator().manual_seed(seed)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(2 * 9 * 9, embed_dim), nn.Tanh())
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(2, 2, 9, 9, generator=gen)
    scores = []

    def recording_cosine(h, h_masked):
        s = torch.nn.functional.cosine_similarity(h, h_masked, dim=1)
        scores.append(s.view(-1, 2))
        return s

    importance, uncertainty = RELAX(encoder).attribute(x, n_masks=n_masks, n_cells=n_cells, p_keep=p_keep,
                                                       similarity=recording_cosine, mask_batch_size=8, seed=seed,
                                                       return_uncertainty=True)
    s = torch.cat(scores)  # [n_masks, N]
    covered = importance != 0
    lo, hi = s.amin(0)[:, None, None] - 1e-6, s.amax(0)[:, None, None] + 1e-6
    assert ((importance >= lo) & (importance <= hi) | ~covered).all()
    assert (uncertainty >= 0).all()


class ImageEncoder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x  # [N, C, H, W]: not a 2-D representation


@pytest.mark.parametrize("kwargs, match", [
    ({"similarity": "euclid"}, "unknown similarity 'euclid'.*cosine"),
    ({"similarity": lambda h, g: (h * g).sum()}, r"one score per pair, shape \[12\]; got shape \(\)"),
    ({"p_keep": 0.0}, r"p_keep must be in \(0, 1\]"),
    ({"n_masks": 0}, "n_masks must be a positive int"),
    ({"mask_batch_size": 0}, "mask_batch_size must be a positive int"),
    ({"uncertainty_scale": "std"}, "unknown uncertainty_scale 'std'.*'sum_of_squares', 'variance'"),
    ({"n_cells": 40}, "16x16 are too small for n_cells=40.*reflect-padded by n_cells // 2 = 20 pixels"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RELAX(QuadrantEncoder()).attribute(images(), n_masks=kwargs.pop("n_masks", 4), **kwargs)


def test_a_fractional_mask_batch_size_is_a_type_error():
    with pytest.raises(TypeError, match="mask_batch_size must be a positive int"):
        RELAX(QuadrantEncoder()).attribute(images(), n_masks=4, mask_batch_size=2.5)


def test_encoder_with_non_2d_output_is_rejected():
    with pytest.raises(ValueError, match=r"2-D representation \[N, D\].*shape \(3, 1, 16, 16\)"):
        RELAX(ImageEncoder()).attribute(images(), n_masks=4)


def test_inputs_that_are_not_images_are_rejected():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]; got shape \(3, 16, 16\)"):
        RELAX(QuadrantEncoder()).attribute(images()[:, 0], n_masks=4)


# ---- the official construction and estimators (Wickstrom/RELAX, relax_xai) ----

# Bilinear upsampling (half-pixel centres) of a 2-cell grid to 8 pixels: the weight of cell 0 at each pixel,
# x = (i + 0.5) * 2 / 8 - 0.5 clamped to [0, 1]: 1, 1, 0.875, 0.625, 0.375, 0.125, 0, 0.
CELL0 = torch.tensor([1.0, 1.0, 0.875, 0.625, 0.375, 0.125, 0.0, 0.0], dtype=torch.float64)


def official_profiles(shift: int) -> torch.Tensor:
    """``[2, 8]`` weights of cells 0 and 1 along one axis: reflect-padded by ``n_cells // 2 = 1`` pixel (pixel -1
    mirrors pixel 1, pixel 8 mirrors pixel 6), then cropped from ``shift``."""
    padded = torch.cat([CELL0[1:2], CELL0, CELL0[6:7]])
    cell0 = padded[shift:shift + 8]
    return torch.stack([cell0, 1 - cell0])


def test_masks_have_the_official_border_profile_and_shift_range():
    # Every mask must be sum_ij G_ij rows_i(a) cols_j(b) for one of the 16 binary grids G and shifts a, b in {0, 1}
    # (the official shifts run over 0 .. n_cells - 1 pixels); and all four shift pairs must occur.
    candidates, labels = [], []
    for code in range(16):
        grid = torch.tensor([(code >> k) & 1 for k in range(4)], dtype=torch.float64).view(2, 2)
        for a in (0, 1):
            for b in (0, 1):
                candidates.append(official_profiles(a).T @ grid @ official_profiles(b))
                labels.append((code, a, b))
    candidates = torch.stack(candidates)  # [64, 8, 8]
    masks = relax_masks(400, (8, 8), n_cells=2, p_keep=0.5, generator=torch.Generator().manual_seed(0)).double()
    distance = (masks[:, None] - candidates[None]).abs().flatten(2).amax(2)  # [400, 64]
    assert (distance.amin(1) < 1e-6).all()
    shifts = {labels[c][1:] for row in distance for c in torch.nonzero(row < 1e-6).flatten().tolist()
              if len({labels[i][1:] for i in torch.nonzero(row < 1e-6).flatten().tolist()}) == 1}
    assert shifts == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_shifts_run_over_zero_to_n_cells_minus_one_pixels():
    _, shifts = _draw_grids(3000, 7, 0.5, torch.Generator().manual_seed(0))
    assert shifts.min() == 0 and shifts.max() == 6
    assert set(shifts[:, 0].tolist()) == set(range(7)) == set(shifts[:, 1].tolist())


def test_mask_draws_do_not_depend_on_the_default_dtype():
    expected = relax_masks(20, (14, 14), seed=5)
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        again = relax_masks(20, (14, 14), seed=5)
    finally:
        torch.set_default_dtype(default)
    assert again.dtype == torch.float32 and torch.equal(again, expected)


@pytest.mark.parametrize("scale", ["variance", "sum_of_squares"])
def test_uncertainty_scales_match_a_float64_reference(scale):
    # Reference from the recorded similarities s [M, N] and the same masks (relax_masks with the same seed):
    # R = sum M s / sum M, U = sum M (s - R)^2, divided by sum M for the variance.
    encoder, x, scores = QuadrantEncoder().double(), images().double(), []

    def recording_cosine(h, h_masked):
        s = torch.nn.functional.cosine_similarity(h, h_masked, dim=1)
        scores.append(s.view(-1, 3))
        return s

    importance, uncertainty = RELAX(encoder).attribute(x, n_masks=60, mask_batch_size=25, seed=4,
                                                       similarity=recording_cosine, return_uncertainty=True,
                                                       uncertainty_scale=scale)
    s = torch.cat(scores)  # [60, 3]
    masks = relax_masks(60, (16, 16), seed=4).double()  # [60, 16, 16]
    weight = masks.sum(0)
    expected_importance = torch.einsum("mn,mhw->nhw", s, masks) / weight
    squares = torch.einsum("mnhw,mhw->nhw", (s[:, :, None, None] - expected_importance[None]) ** 2, masks)
    torch.testing.assert_close(importance, expected_importance)
    torch.testing.assert_close(uncertainty, squares / weight if scale == "variance" else squares)


def test_return_uncertainty_documents_its_scale():
    doc = RELAX.attribute.__doc__
    assert "uncertainty_scale" in doc and "sum_of_squares" in doc and "official" in doc


def test_u_relax_keeps_importance_where_uncertainty_is_at_most_the_lower_median():
    importance = torch.arange(1.0, 7.0).view(1, 2, 3)
    uncertainty = torch.tensor([[[0.5, 3.0, 1.0], [2.0, 2.0, 9.0]]])  # sorted: 0.5 1 2 2 3 9; lower median 2
    torch.testing.assert_close(u_relax(importance, uncertainty), torch.tensor([[[1.0, 0.0, 3.0], [4.0, 5.0, 0.0]]]))
    with pytest.raises(ValueError, match="one shape"):
        u_relax(importance, uncertainty[0])
