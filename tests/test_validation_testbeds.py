"""Known answers for the validation suite: the region-wired oracle, mixing, shares, noises, statistics."""
from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from captum_layerpair import LayerPairAttribution
from captum_layerpair._random import seeded
from captum_layerpair.validation_models import MaskedLinear, RegionEncoder, region_masks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _stats import auroc, equivalence, mean_ci
from _testbeds import (calibrated_informativeness, mixed, region_distinctness, region_share,
                       shuffle_noise, uniform_noise)

METHODS = ["paper_expected_gradients", "paper_expected_gradients_gradient_only"]


def test_regions_tile_the_map_without_overlap():
    masks = region_masks(2, 16)
    assert masks.shape == (4, 16, 16)
    assert torch.equal(masks.sum(0), torch.ones(16, 16, dtype=torch.long))
    assert masks[0, :8, :8].all() and masks[1, :8, 8:].all() and masks[2, 8:, :8].all() and masks[3, 8:, 8:].all()
    with pytest.raises(ValueError, match="not divisible"):
        region_masks(3, 16)


@pytest.mark.parametrize("method", METHODS)
def test_the_oracle_puts_every_unit_map_inside_its_own_region(method):
    model = RegionEncoder(image_size=16, masked=True, seed=0).eval()
    x = torch.rand(6, 1, 16, 16)
    with seeded(0):
        A = LayerPairAttribution(model, "conv2", "embed", method=method).attribute(
            x, attribute_to_source_input=True, n_samples=3)
    assert A.shape == (6, 4, 8, 16, 16)
    outside = A.abs().sum(2) * ~region_masks(2, 16)[None]
    assert outside.max() == 0  # exactly: the gradient outside the region is structurally zero
    assert torch.equal(region_share(A, region_masks(2, 16)), torch.ones(6, 4))


def test_the_unmasked_encoder_spreads_its_units_over_all_regions():
    model = RegionEncoder(image_size=16, masked=False, seed=0).eval()
    A = LayerPairAttribution(model, "conv2", "embed", method="paper_expected_gradients_gradient_only").attribute(
        torch.rand(4, 1, 16, 16), attribute_to_source_input=True, n_samples=2)
    share = region_share(A, region_masks(2, 16))
    assert (share < 0.6).all() and (share > 0.05).all()


def test_masked_weights_receive_no_gradient_and_do_not_act():
    mask = torch.tensor([[True, False, True], [False, True, False]])
    layer = MaskedLinear(mask)
    x = torch.randn(5, 3)
    layer(x).sum().backward()
    assert (layer.weight.grad[~mask] == 0).all() and (layer.weight.grad[mask] != 0).all()
    expected = x @ (layer.weight * mask).T + layer.bias
    assert torch.allclose(layer(x), expected)


def test_region_encoder_seeding_restores_the_global_state():
    state = torch.random.get_rng_state()
    a, b = RegionEncoder(seed=3), RegionEncoder(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("method", METHODS)
def test_mixed_attributions_equal_those_of_the_mixed_model(method):
    encoder = RegionEncoder(image_size=16, masked=False, seed=1).eval()
    W = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    mix = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        mix.weight.copy_(W)
    model = nn.Sequential(OrderedDict(encoder=encoder, mix=mix)).eval()
    x = torch.rand(5, 1, 16, 16)
    kwargs = {"attribute_to_source_input": True, "n_samples": 3}
    with seeded(7):
        A = LayerPairAttribution(encoder, "conv2", "embed", method=method).attribute(x, **kwargs)
    with seeded(7):
        A_mix = LayerPairAttribution(model, "encoder.conv2", "mix", method=method).attribute(x, **kwargs)
    assert torch.allclose(mixed(A, W), A_mix, atol=1e-5, rtol=1e-4)


def test_region_share_of_a_hand_made_map():
    A = torch.zeros(1, 2, 1, 2, 2)
    A[0, 0, 0] = torch.tensor([[3.0, -1.0], [0.0, 0.0]])  # unit 0: 3 of 4 inside its region (left column)
    A[0, 1, 0] = torch.tensor([[0.0, 2.0], [0.0, 2.0]])   # unit 1: all inside its region (right column)
    regions = torch.tensor([[[True, False], [True, False]], [[False, True], [False, True]]])
    assert torch.allclose(region_share(A, regions), torch.tensor([[0.75, 1.0]]))


@given(seed=st.integers(0, 1000))
def test_shuffle_noise_keeps_each_samples_histogram_and_moves_its_pixels(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 2, 5, 5, generator=gen)
    xi = shuffle_noise(x, gen)
    assert xi.shape == x.shape
    assert torch.equal(xi.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    # Channels of one position move together: the pairs (channel 0, channel 1) are the same multiset.
    pairs = lambda t: sorted(map(tuple, t.flatten(2).transpose(1, 2)[0].tolist()))  # noqa: E731
    assert pairs(xi) == pairs(x)
    assert not torch.equal(xi, x)


def test_uniform_noise_is_seeded_and_in_range():
    x = torch.zeros(4, 1, 3, 3)
    a = uniform_noise(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, uniform_noise(x, torch.Generator().manual_seed(0)))
    assert a.shape == x.shape and 0 <= a.min() and a.max() < 1


def test_calibrated_informativeness_is_one_when_data_maps_look_like_noise_maps():
    gen = torch.Generator().manual_seed(0)
    maps = [torch.rand(6, 3, 2, 4, 4, generator=gen) for _ in range(4)]
    # Data maps that are just other noise maps: I(x) and I_null are the same computation, so the ratio is 1.
    assert torch.allclose(calibrated_informativeness(maps[0], maps[1], maps[0], maps[1]), torch.ones(6))
    per_unit = calibrated_informativeness(maps[2], maps[3], maps[2], maps[3], per_unit=True)
    assert torch.allclose(per_unit, torch.ones(6))
    # Data maps far from noise maps (a fixed spot) score above 1 against noise-vs-noise.
    spot = torch.zeros(6, 3, 2, 4, 4)
    spot[..., 0, 0] = 1.0
    assert (calibrated_informativeness(spot, maps[1], maps[2], maps[3]) > 1).all()


def test_auroc_matches_mann_whitney_and_perfect_separation_has_a_degenerate_ci():
    pos, neg = np.array([0.9, 0.8, 0.75, 0.3]), np.array([0.5, 0.4, 0.1, 0.2, 0.6])
    u = stats.mannwhitneyu(pos, neg).statistic
    assert auroc(pos, neg).value == pytest.approx(u / (len(pos) * len(neg)))
    perfect = auroc([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
    assert (perfect.value, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    assert perfect.p_value == pytest.approx(stats.mannwhitneyu([3, 4, 5], [0, 1, 2], alternative="greater").pvalue)


def test_equivalence_test_accepts_small_effects_and_rejects_large_ones():
    rng = np.random.default_rng(0)
    small = rng.normal(0.2, 1.0, 30)
    large = rng.normal(4.0, 1.0, 30)
    assert equivalence(small, 3.0).p_value < 0.05
    assert equivalence(large, 3.0).p_value > 0.5
    tost = equivalence(small, 3.0)
    ci = stats.ttest_1samp(small, 0).confidence_interval(0.90)
    assert (tost.low, tost.high) == pytest.approx((ci.low, ci.high))


def test_mean_ci_is_the_t_interval_clipped_to_bounds():
    values = [0.0, 0.02, 0.01, 0.0]
    raw = stats.ttest_1samp(values, 0).confidence_interval(0.95)
    est = mean_ci(values, bounds=(0, 1))
    assert est.low == 0 and est.high == pytest.approx(raw.high) and raw.low < 0


def test_region_distinctness_is_one_for_units_in_their_own_regions_and_zero_for_duplicates():
    regions = region_masks(2, 4)
    own = regions[None, :, None].float().expand(3, 4, 2, 4, 4)  # unit k uniform on region k
    assert torch.allclose(region_distinctness(own, regions), torch.ones(3))
    duplicated = own[:, :1].expand(3, 4, 2, 4, 4)
    assert torch.allclose(region_distinctness(duplicated, regions), torch.zeros(3))
    # Two units, region distributions (1, 0) and (1/2, 1/2) over two regions: total variation 1/2.
    halves = torch.tensor([[True, False], [True, False]]), torch.tensor([[False, True], [False, True]])
    A = torch.zeros(1, 2, 1, 2, 2)
    A[0, 0, 0] = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    A[0, 1, 0] = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(region_distinctness(A, torch.stack(halves)), torch.tensor([0.5]))
