"""Properties of the latent scores over random attribution tensors (hypothesis): ranges and invariances."""
from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from captum_layerpair.metrics import disentanglement_score, informativeness_score

TRANSFORMS = ("abs", "sqrt", "lin", "square")


@st.composite
def attributions(draw: st.DrawFn, min_units: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A pair of float64 attribution tensors (data, noise) ``[N, K, C, H, W]`` or ``[N, K, F]``."""
    n, k = draw(st.integers(1, 3)), draw(st.integers(min_units, 5))
    rest = draw(st.sampled_from([(draw(st.integers(1, 3)), draw(st.integers(2, 5)), draw(st.integers(2, 5))),
                                 (draw(st.integers(2, 9)),)]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    sparse = draw(st.booleans())  # many exact zeros: constant and one-hot maps, where min-max has its edge cases

    def tensor() -> torch.Tensor:
        A = torch.randn(n, k, *rest, generator=gen, dtype=torch.float64) * scale
        return A * (torch.rand(A.shape, generator=gen, dtype=torch.float64) < 0.2) if sparse else A

    return tensor(), tensor()


@given(attributions(min_units=2), st.sampled_from(TRANSFORMS), st.sampled_from(["minmax", "max"]))
def test_disentanglement_is_non_negative(pair, transform, normalization):
    D = disentanglement_score(pair[0], transform, normalization)
    assert D.shape == (pair[0].shape[0],) and (D >= 0).all()


@given(attributions(), st.sampled_from(TRANSFORMS), st.sampled_from(["sum", "var"]))
def test_informativeness_lies_in_the_unit_interval_with_minmax(pair, transform, combine):
    I_score = informativeness_score(*pair, transform=transform, normalization="minmax", combine=combine)
    assert I_score.shape == (pair[0].shape[0],) and (I_score >= 0).all() and (I_score <= 1).all()


@given(attributions(min_units=2), st.sampled_from(TRANSFORMS), st.sampled_from(["minmax", "max"]), st.data())
def test_scores_do_not_depend_on_the_order_of_embedding_dimensions(pair, transform, normalization, data):
    A, A_noise = pair
    perm = torch.tensor(data.draw(st.permutations(range(A.shape[1]))))
    assert torch.allclose(disentanglement_score(A[:, perm], transform, normalization),
                          disentanglement_score(A, transform, normalization), atol=1e-12)
    assert torch.allclose(informativeness_score(A[:, perm], A_noise, transform, normalization),
                          informativeness_score(A, A_noise, transform, normalization), atol=1e-12)


@given(attributions(min_units=2), st.sampled_from(TRANSFORMS), st.sampled_from(["minmax", "max"]),
       st.sampled_from(["sum", "var"]), st.floats(1e-3, 1e3))
def test_scores_are_invariant_to_positive_scaling_of_the_attributions(pair, transform, normalization, combine, c):
    A, A_noise = pair
    assert torch.allclose(disentanglement_score(c * A, transform, normalization),
                          disentanglement_score(A, transform, normalization), atol=1e-9)
    assert torch.allclose(informativeness_score(c * A, c * A_noise, transform, normalization, combine),
                          informativeness_score(A, A_noise, transform, normalization, combine), atol=1e-9)
    # the data and the noise are normalised separately, so each may be scaled on its own
    assert torch.allclose(informativeness_score(c * A, A_noise, transform, normalization, combine),
                          informativeness_score(A, A_noise, transform, normalization, combine), atol=1e-9)


@given(attributions(min_units=2))
def test_disentanglement_with_minmax_is_at_most_a_quarter(pair):
    # values in [0, 1] have population variance at most 1/4
    assert (disentanglement_score(pair[0]) <= 0.25 + 1e-12).all()
