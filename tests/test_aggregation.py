"""Aggregation (SPEC section 3) against explicit loops and known values."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from captum_layerpair.aggregation import aggregate, normalize


def test_channel_and_space_sums_match_explicit_loops():
    A = torch.randn(2, 3, 4, 5, 6)
    M, Q = aggregate(A, "square", "channels"), aggregate(A, "sqrt", "space")
    for n in range(2):
        for k in range(3):
            assert torch.allclose(M[n, k], sum(A[n, k, c] ** 2 for c in range(4)))
            for c in range(4):
                assert torch.allclose(Q[n, k, c], A[n, k, c].abs().sqrt().sum())
    assert torch.equal(aggregate(A, "lin", None), A)
    assert torch.equal(aggregate(A, lambda a: 2 * a, None), 2 * A)


def test_one_dimensional_sources():
    A = torch.randn(2, 3, 7)
    assert torch.allclose(aggregate(A, "abs", "channels"), A.abs().sum(-1))
    assert torch.equal(aggregate(A, "abs", "space"), A.abs())


def test_minmax_and_max_normalisation_known_values():
    maps = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]]])  # [1, 2, 2, 2]
    mm = normalize(maps, "minmax")
    assert torch.allclose(mm[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(mm[0, 1], torch.zeros(2, 2))  # constant map -> 0
    mx = normalize(-maps, "max")
    assert torch.allclose(mx[0, 0], -maps[0, 0] / 5)


@given(st.integers(1, 3), st.integers(1, 3), st.floats(0.1, 10.0))
def test_minmax_is_in_unit_interval_and_scale_invariant(n, k, scale):
    maps = torch.randn(n, k, 4, 4)
    out = normalize(maps, "minmax")
    assert out.min() >= 0 and out.max() <= 1
    assert torch.allclose(normalize(maps * scale, "minmax"), out, atol=1e-5)


@pytest.mark.parametrize("bad, error", [
    (dict(transform="log"), ValueError), (dict(over="pixels"), ValueError), (dict(A=torch.randn(2, 3)), ValueError),
    (dict(transform=lambda a: a.sum()), ValueError), (dict(A=[1, 2]), TypeError),
])
def test_bad_arguments(bad, error):
    kwargs = {"A": torch.randn(1, 2, 3, 4, 4), **bad}
    with pytest.raises(error):
        aggregate(**kwargs)
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize(torch.randn(1, 1, 2, 2), "zscore")
