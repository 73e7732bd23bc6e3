"""RELAX: importance where the encoder looks, non-negative uncertainty, seeding, batching and errors."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_layerpair.attr.relax import RELAX, relax_masks


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
    ({"mask_batch_size": 2.5}, "mask_batch_size must be a positive int"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RELAX(QuadrantEncoder()).attribute(images(), n_masks=kwargs.pop("n_masks", 4), **kwargs)


def test_encoder_with_non_2d_output_is_rejected():
    with pytest.raises(ValueError, match=r"2-D representation \[N, D\].*shape \(3, 1, 16, 16\)"):
        RELAX(ImageEncoder()).attribute(images(), n_masks=4)


def test_inputs_that_are_not_images_are_rejected():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]; got shape \(3, 16, 16\)"):
        RELAX(QuadrantEncoder()).attribute(images()[:, 0], n_masks=4)
