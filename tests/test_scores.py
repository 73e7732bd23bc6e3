"""Latent scores: formulas against independent re-computations and known answers, the metric classes, their
dataset accumulation, baselines and error messages (across torch.distributed processes: test_distributed_scores.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient
from torch.utils.data import DataLoader, TensorDataset

from captum_layerpair import LayerPairAttribution
from captum_layerpair.metrics import (DisentanglementScore, InformativenessScore, ScoreAccumulator,
                                      disentanglement_score, informativeness_score, make_noise, random_model_pair)
from captum_layerpair.models import ConvEncoder


# ---- independent re-computations (NumPy loops over samples, units and positions) -------------------------------

def _np_norm(m: np.ndarray, normalization: str) -> np.ndarray:
    if normalization == "minmax":
        span = m.max() - m.min()
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)
    peak = np.abs(m).max()
    return m / peak if peak > 0 else np.zeros_like(m)


def _np_maps(a: np.ndarray) -> np.ndarray:
    """``[K, C, *P] -> [K, P]`` channel sums of |a|; ``[K, F]`` stays (1-D source)."""
    return np.abs(a).reshape(a.shape[0], -1) if a.ndim == 2 else np.abs(a).sum(1).reshape(a.shape[0], -1)


def reference_D(A: torch.Tensor, normalization: str = "minmax") -> np.ndarray:
    out = []
    for a in A.double().numpy():
        maps = np.stack([_np_norm(m, normalization) for m in _np_maps(a)])  # [K, P]
        per_position = [np.mean((maps[:, p] - maps[:, p].mean()) ** 2) for p in range(maps.shape[1])]
        out.append(np.mean(per_position))
    return np.array(out)


def reference_I(A_real: torch.Tensor, A_noise: torch.Tensor, normalization: str = "minmax",
                combine: str = "sum") -> np.ndarray:
    def combined(a: np.ndarray) -> np.ndarray:
        maps = _np_maps(a)
        return _np_norm(maps.sum(0) if combine == "sum" else maps.var(0), normalization)

    return np.array([np.mean(np.abs(combined(r) - combined(z)))
                     for r, z in zip(A_real.double().numpy(), A_noise.double().numpy())])


def one_hot_maps(N: int, K: int, side: int, positions: list[int], C: int = 1) -> torch.Tensor:
    """``[N, K, C, side, side]`` with unit k's map 1 at flat position ``positions[k]`` (all channels), else 0."""
    A = torch.zeros(N, K, C, side * side)
    for k, p in enumerate(positions):
        A[:, k, :, p] = 1.0
    return A.view(N, K, C, side, side)


# ---- known answers ----------------------------------------------------------------------------------------------

def test_identical_unit_maps_have_zero_disentanglement():
    A = torch.rand(3, 1, 2, 5, 5).expand(3, 4, 2, 5, 5)
    assert torch.allclose(disentanglement_score(A), torch.zeros(3), atol=1e-7)


def test_disjoint_one_hot_maps_give_known_disentanglement():
    K, side = 4, 4  # at K positions one unit is 1 and K-1 are 0: variance (K-1)/K^2; 0 elsewhere
    A = one_hot_maps(2, K, side, positions=[0, 5, 10, 15], C=3)
    expected = K * (K - 1) / K**2 / side**2
    assert torch.allclose(disentanglement_score(A), torch.full((2,), expected))
    assert torch.allclose(disentanglement_score(A, normalization="max"), torch.full((2,), expected))


def test_identical_data_and_noise_maps_have_zero_informativeness():
    A = torch.randn(3, 4, 2, 5, 5)
    assert torch.equal(informativeness_score(A, A.clone()), torch.zeros(3))
    assert torch.equal(informativeness_score(A, A.clone(), combine="var"), torch.zeros(3))


def test_displaced_one_hot_maps_give_known_informativeness():
    side = 4  # data attends to position 0 only, noise to position 1 only: |difference| is 1 at two positions
    real = one_hot_maps(2, 3, side, positions=[0, 0, 0])
    noise = one_hot_maps(2, 3, side, positions=[1, 1, 1])
    assert torch.allclose(informativeness_score(real, noise), torch.full((2,), 2 / side**2))


def test_combine_var_uses_the_variance_over_units():
    K, side = 4, 4  # identical data maps: Var_k = 0; disjoint noise maps: normalised Var_k is 1 at K positions
    real = one_hot_maps(2, K, side, positions=[3] * K)
    noise = one_hot_maps(2, K, side, positions=[0, 1, 2, 3])
    assert torch.allclose(informativeness_score(real, noise, combine="var"), torch.full((2,), K / side**2))
    assert torch.allclose(informativeness_score(real, noise, combine="sum"), torch.full((2,), 3 / side**2))


# ---- against the independent re-computation ----------------------------------------------------------------------

@pytest.mark.parametrize("normalization", ["minmax", "max"])
@pytest.mark.parametrize("shape", [(3, 4, 2, 5, 6), (3, 4, 7), (2, 3, 2, 4, 4, 3)])
def test_scores_match_an_independent_recomputation(normalization, shape):
    A = torch.randn(*shape, dtype=torch.float64)
    A_noise = torch.randn(*shape, dtype=torch.float64)
    np.testing.assert_allclose(disentanglement_score(A, normalization=normalization).numpy(),
                               reference_D(A, normalization), rtol=1e-12)
    for combine in ("sum", "var"):
        np.testing.assert_allclose(informativeness_score(A, A_noise, normalization=normalization,
                                                         combine=combine).numpy(),
                                   reference_I(A, A_noise, normalization, combine), rtol=1e-12)


def test_informativeness_averages_over_noise_draws():
    A, draws = torch.randn(3, 4, 2, 5, 5), torch.randn(5, 3, 4, 2, 5, 5)
    expected = torch.stack([informativeness_score(A, d) for d in draws]).mean(0)
    assert torch.allclose(informativeness_score(A, draws), expected)


def test_transform_is_applied_before_the_channel_sum():
    A = torch.randn(2, 3, 4, 5, 5)
    assert torch.allclose(disentanglement_score(A, transform="square"), disentanglement_score(A**2, transform="lin"))


# ---- errors -------------------------------------------------------------------------------------------------------

def test_disentanglement_of_one_unit_is_an_error():
    with pytest.raises(ValueError, match="K >= 2"):
        disentanglement_score(torch.rand(2, 1, 3, 4, 4))


def test_noise_attributions_of_another_shape_are_an_error():
    with pytest.raises(ValueError, match=r"A_noise must have the shape of A_real \(2, 3, 2, 4, 4\)"):
        informativeness_score(torch.rand(2, 3, 2, 4, 4), torch.rand(2, 3, 2, 4, 5))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_attributions_are_an_error(bad):
    A = torch.rand(2, 3, 2, 4, 4)
    A[1, 0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="A contains 1 NaN or inf"):
        disentanglement_score(A)
    with pytest.raises(ValueError, match="A_real contains 1 NaN or inf"):
        informativeness_score(A, torch.rand(2, 3, 2, 4, 4))
    with pytest.raises(ValueError, match="A_noise contains 1 NaN or inf"):
        informativeness_score(torch.rand(2, 3, 2, 4, 4), A)


def test_bad_options_name_what_is_allowed():
    A = torch.rand(2, 3, 2, 4, 4)
    with pytest.raises(ValueError, match="unknown normalization 'l2'.* Allowed: 'max', 'minmax'$"):
        disentanglement_score(A, normalization="l2")
    with pytest.raises(ValueError, match="unknown combine 'mean'.* Allowed: 'per_unit', 'sum', 'var'$"):
        informativeness_score(A, A, combine="mean")
    with pytest.raises(ValueError, match="unknown transform"):
        disentanglement_score(A, transform="log")
    with pytest.raises(ValueError, match=r"got shape \(2, 3\)"):
        disentanglement_score(torch.rand(2, 3))
    with pytest.raises(TypeError, match="got ndarray"):
        disentanglement_score(np.zeros((2, 3, 4)))


# ---- metric classes -----------------------------------------------------------------------------------------------

@pytest.fixture
def encoder():
    return ConvEncoder(channels=(3, 4, 4), embed_dim=3, image_size=8, seed=0).eval()


@pytest.fixture
def layer_pair(encoder):
    return LayerPairAttribution(encoder, "conv2", "embed", method=InputXGradient)


def test_score_classes_apply_the_functional_forms_to_the_layer_pair(layer_pair):
    x, xi = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    A, A_noise = layer_pair.attribute(x), layer_pair.attribute(xi)
    D = DisentanglementScore(layer_pair, transform="sqrt", normalization="max").score(x)
    assert torch.allclose(D, disentanglement_score(A, "sqrt", "max"))
    info = InformativenessScore(layer_pair, noise=lambda inputs: xi, combine="var").score(x)
    assert torch.allclose(info, informativeness_score(A, A_noise, combine="var"))


def test_informativeness_score_averages_n_noise_draws(layer_pair):
    x, draws = torch.rand(3, 1, 8, 8), iter(torch.rand(3, 3, 1, 8, 8))
    kept = []

    def noise(inputs):
        kept.append(next(draws))
        return kept[-1]

    info = InformativenessScore(layer_pair, noise=noise, n_noise=3).score(x)
    A = layer_pair.attribute(x)
    expected = torch.stack([informativeness_score(A, layer_pair.attribute(xi)) for xi in kept]).mean(0)
    assert len(kept) == 3 and torch.allclose(info, expected)


def test_gaussian_noise_matches_the_batch_mean_and_std_per_channel():
    x = torch.stack([torch.rand(400, 6, 6) * 2 + 3, torch.rand(400, 6, 6) * 0.1], 1)  # [400, 2, 6, 6]
    xi = make_noise(x, "gaussian")
    for c in range(2):
        assert xi[:, c].mean().item() == pytest.approx(x[:, c].mean().item(), abs=0.02)
        assert xi[:, c].std().item() == pytest.approx(x[:, c].std().item(), rel=0.02)
    u = make_noise(x, "uniform")
    assert u.shape == x.shape and 0 <= u.min() and u.max() < 1


def test_evaluate_summarises_every_sample_with_baselines(encoder, layer_pair):
    x = torch.rand(10, 1, 8, 8)
    loader = DataLoader(TensorDataset(x, torch.zeros(10)), batch_size=4)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    score = DisentanglementScore(layer_pair)
    summary = score.evaluate(loader, random_model=True, null=True, show_progress=False)
    values = score.score(x)
    assert torch.allclose(summary.values, values)
    assert summary.mean == pytest.approx(values.mean().item()) and summary.std == pytest.approx(values.std().item())
    assert summary.random_model.n == summary.null.n == 10
    assert abs(summary.random_model.mean - summary.mean) > 1e-4  # a different model gives a different score
    assert all(torch.equal(state[k], v) for k, v in encoder.state_dict().items()) and not encoder.training
    assert "disentanglement" in str(summary) and "random model" in str(summary)


def test_random_model_differs_from_a_model_built_with_the_same_small_seed(layer_pair):
    copy = random_model_pair(layer_pair, seed=0)  # the encoder was built after torch.manual_seed(0)
    for (name, p), q in zip(layer_pair.forward_func.named_parameters(), copy.forward_func.parameters()):
        assert not torch.equal(p, q), name
    assert copy.source.module is copy.forward_func.conv2 and copy.target.module is copy.forward_func.embed


def test_paper_attribution_scores_every_embedding_dimension(encoder):
    # The authors' code stops after the first embedding dimension, so its variance over units is NaN.
    lp = LayerPairAttribution(encoder, "conv2", "embed", method="paper_expected_gradients")
    A = lp.attribute(torch.rand(3, 1, 8, 8), attribute_to_source_input=True, n_samples=4)
    assert A.shape == (3, 3, 3, 8, 8) and (A.flatten(2).abs().sum(2) > 0).all()
    assert torch.isfinite(disentanglement_score(A)).all()


def test_metric_class_errors(layer_pair):
    with pytest.raises(TypeError, match="LayerPairAttribution"):
        InformativenessScore(lambda x: x)
    with pytest.raises(ValueError, match="n_noise must be a positive int"):
        InformativenessScore(layer_pair, n_noise=0)
    with pytest.raises(ValueError, match="unknown noise 'salt'"):
        InformativenessScore(layer_pair, noise="salt")
    with pytest.raises(ValueError, match="unknown transform 'log'"):
        DisentanglementScore(layer_pair, transform="log")
    with pytest.raises(ValueError, match=r"input's shape \(2, 1, 8, 8\); it returned \(1, 1, 8, 8\)"):
        InformativenessScore(layer_pair, noise=lambda x: x[:1]).score(torch.rand(2, 1, 8, 8))
    with pytest.raises(TypeError, match="first item is the input tensor"):
        DisentanglementScore(layer_pair).evaluate([{"x": torch.rand(2, 1, 8, 8)}], show_progress=False)


# ---- accumulation -------------------------------------------------------------------------------------------------

def test_accumulator_matches_whole_dataset_statistics():
    acc, values = ScoreAccumulator("s"), torch.rand(23, dtype=torch.float64)
    for chunk in values.split(5):
        acc.update(chunk)
    summary = acc.compute()
    assert summary.mean == pytest.approx(values.mean().item()) and summary.std == pytest.approx(values.std().item())
    assert torch.allclose(summary.values.double(), values) and summary.n == 23
    acc.reset()
    acc.update(torch.tensor([0.5]))
    assert acc.compute().mean == 0.5 and math.isnan(acc.compute().std)


def test_accumulator_errors():
    acc = ScoreAccumulator("informativeness")
    with pytest.raises(ValueError, match="no informativeness scores"):
        acc.compute()
    with pytest.raises(ValueError, match=r"shape \[N\]; got \(2, 2\)"):
        acc.update(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="1 non-finite"):
        acc.update(torch.tensor([0.1, float("nan")]))
