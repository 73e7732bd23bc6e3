"""Mutual Information Gap on cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from captum_layerpair.metrics.mig import discretize, mutual_information_gap, mutual_information_matrix


def balanced_factor(values: int, repeats: int) -> np.ndarray:
    return np.repeat(np.arange(values), repeats)[:, None]  # [values * repeats, 1]


def test_a_code_with_half_the_information_in_its_runner_up_gives_one_half():
    f = balanced_factor(4, 250)  # H(f) = log 4; code 0 = f (MI log 4), code 1 = f // 2 (MI log 2)
    assert mutual_information_gap(np.c_[f, f // 2], f, discrete_factors=True) == pytest.approx(0.5, abs=1e-12)


def test_codes_that_copy_the_factors_in_any_order_give_one():
    f = np.stack(np.meshgrid(np.arange(3), np.arange(4), np.arange(5), indexing="ij"), -1).reshape(-1, 3)
    codes = f[:, [2, 0, 1]] * 0.7 + 0.1  # independent factors, each copied by one code dimension
    assert mutual_information_gap(codes, f, discrete_factors=True) == pytest.approx(1.0, abs=1e-12)


def test_a_duplicated_code_has_no_gap():
    f = balanced_factor(5, 40)
    assert mutual_information_gap(np.c_[f, f], f, discrete_factors=True) == pytest.approx(0.0, abs=1e-12)


def test_codes_independent_of_the_factors_give_almost_zero():
    rng = np.random.default_rng(0)
    assert mutual_information_gap(rng.random((5000, 3)), rng.random((5000, 2)), n_bins=10) < 0.02


def test_mutual_information_matches_a_hand_computed_table():
    # binary factor, code equals it for 3/4 of the samples: p(f, z) = [[3/8, 1/8], [1/8, 3/8]], H(f) = H(z) = log 2
    f = np.array([0, 0, 0, 0, 1, 1, 1, 1] * 10)[:, None]
    z = np.array([0, 0, 0, 1, 1, 1, 1, 0] * 10, dtype=float)[:, None]
    p = np.array([[3, 1], [1, 3]]) / 8
    expected = sum(p[i, j] * np.log(p[i, j] / 0.25) for i in range(2) for j in range(2))
    assert mutual_information_matrix(z, f, n_bins=2, discrete_factors=True)[0, 0] == pytest.approx(expected)


def test_continuous_inputs_are_binned_with_equal_width():
    values = np.array([[0.0], [0.24], [0.26], [0.74], [1.0]])
    np.testing.assert_array_equal(discretize(values, 4)[:, 0], [0, 0, 1, 2, 3])


def test_torch_tensors_are_accepted():
    f = torch.from_numpy(balanced_factor(4, 50).astype(np.float32))
    assert mutual_information_gap(torch.cat([f, f // 2], 1), f, discrete_factors=True) == pytest.approx(0.5, abs=0.01)


def test_mig_errors():
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        mutual_information_gap(np.zeros((10, 1)), np.arange(10)[:, None])
    with pytest.raises(ValueError, match="same number of samples; got 10 and 9"):
        mutual_information_gap(np.zeros((10, 2)), np.arange(9)[:, None])
    with pytest.raises(ValueError, match="every factor is constant"):
        mutual_information_gap(np.random.rand(10, 2), np.zeros((10, 1)))
    with pytest.raises(ValueError, match="codes contains NaN"):
        mutual_information_gap(np.full((10, 2), np.nan), np.arange(10)[:, None])
    with pytest.raises(ValueError, match=r"shape \[N, dims\]; got shape \(10,\)"):
        mutual_information_gap(np.zeros((10, 2)), np.arange(10))
    with pytest.raises(ValueError, match="n_bins must be >= 2"):
        discretize(np.zeros((3, 1)), 1)
