"""LatentScoreRegularizer: its value is -(w_I I + w_D D), its gradient is right (double back-propagation),
optimising it raises the scores, and the model is left as it was."""
from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from captum_layerpair import LayerPairAttribution
from captum_layerpair.metrics import disentanglement_score, informativeness_score
from captum_layerpair.models import ConvEncoder
from captum_layerpair.training import LatentScoreRegularizer


def tiny_encoder(dtype: torch.dtype = torch.float32) -> ConvEncoder:
    return ConvEncoder(channels=(3, 4, 4), embed_dim=3, image_size=8, seed=0).to(dtype)


def fixed(noise: torch.Tensor):
    return lambda inputs: noise


@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0), (0.3, 2.0)])
def test_term_is_minus_the_weighted_scores_of_gradient_x_activation(weights, to_input):
    model, x, xi = tiny_encoder(), torch.rand(5, 1, 8, 8), torch.rand(5, 1, 8, 8)
    reg = LatentScoreRegularizer(model, "conv2", "embed", *weights, noise=fixed(xi),
                                 attribute_to_source_input=to_input)
    lp = LayerPairAttribution(model, "conv2", "embed", method=InputXGradient)
    A = lp.attribute(x, attribute_to_source_input=to_input)
    A_noise = lp.attribute(xi, attribute_to_source_input=to_input)
    I_ref = informativeness_score(A, A_noise, normalization="max")
    D_ref = disentanglement_score(A, normalization="max")
    expected = -(weights[0] * I_ref + weights[1] * D_ref).mean()
    assert torch.allclose(reg(x), expected, atol=1e-6)
    for name, ref in (("informativeness", I_ref), ("disentanglement", D_ref)):
        if name in reg.last_scores:
            assert torch.allclose(reg.last_scores[name], ref.mean(), atol=1e-6)


def test_gradient_matches_a_finite_difference():
    model = tiny_encoder(torch.float64)
    x, xi = torch.rand(2, 4, 1, 8, 8, dtype=torch.float64)
    reg = LatentScoreRegularizer(model, "conv1", "embed", 1.0, 1.0, noise=fixed(xi))
    params = list(model.parameters())
    # the embedding's bias does not change gradient x activation: its gradient is 0
    grads = torch.autograd.grad(reg(x), params, allow_unused=True, materialize_grads=True)
    grad = torch.cat([g.reshape(-1) for g in grads])
    theta = parameters_to_vector(params).detach().clone()
    direction = torch.randn_like(theta)
    h = 1e-6

    def loss_at(vector: torch.Tensor) -> float:
        with torch.no_grad():
            vector_to_parameters(vector, params)
        return reg(x).item()

    numeric = (loss_at(theta + h * direction) - loss_at(theta - h * direction)) / (2 * h)
    loss_at(theta)
    assert grad @ direction == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    assert grad.abs().sum() > 0


def test_gradient_reaches_layers_before_and_after_the_source():
    model = tiny_encoder()
    reg = LatentScoreRegularizer(model, "conv2", "embed", 1.0, 1.0)
    reg(torch.rand(4, 1, 8, 8)).backward()
    for name in ("conv1", "conv2", "conv3", "embed"):  # conv1 through a(x), the others through the gradient
        assert getattr(model, name).weight.grad.abs().sum() > 0, name


def test_a_few_optimiser_steps_on_the_term_alone_raise_both_scores():
    torch.manual_seed(0)
    model, x, xi = tiny_encoder(), torch.rand(32, 1, 8, 8), torch.rand(32, 1, 8, 8)
    lp = LayerPairAttribution(model, "conv2", "embed", method=InputXGradient)

    def scores() -> tuple[float, float]:  # evaluated as a user would: min-max normalisation, fresh attributions
        A = lp.attribute(x)
        return informativeness_score(A, lp.attribute(xi)).mean().item(), disentanglement_score(A).mean().item()

    before = scores()
    reg = LatentScoreRegularizer(model, "conv2", "embed", 1.0, 1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(15):
        optimizer.zero_grad()
        reg(x).backward()
        optimizer.step()
    after = scores()
    assert sum(after) > sum(before) + 0.02
    assert after[1] > before[1]


def test_every_n_steps_skips_calls_with_a_zero_term():
    reg = LatentScoreRegularizer(tiny_encoder(), "conv2", "embed", 1.0, 1.0, every_n_steps=3)
    x = torch.rand(2, 1, 8, 8)
    terms = [reg(x) for _ in range(7)]
    computed = [bool(t.requires_grad) for t in terms]
    assert computed == [True, False, False, True, False, False, True]
    assert all(t.item() == 0 and t.shape == () for t, c in zip(terms, computed) if not c)


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_hooks_flags_and_batchnorm_statistics_are_left_alone(training):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(inplace=True),
                          nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    model.train(training)
    model[0].bias.requires_grad_(False)
    buffers = [b.clone() for b in model.buffers()]
    reg = LatentScoreRegularizer(model, "2", "6", 1.0, 1.0)
    reg(torch.rand(4, 1, 6, 6)).backward()
    assert all(m.training == training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not model[0].bias.requires_grad and model[0].weight.requires_grad
    assert all(torch.equal(b, saved) for b, saved in zip(model.buffers(), buffers))


def test_paper_expected_gradients_variant_is_differentiable():
    model = tiny_encoder()
    reg = LatentScoreRegularizer(model, "conv2", "embed", 1.0, 1.0, method="paper_expected_gradients",
                                 attribute_to_source_input=True, method_kwargs={"n_samples": 2})
    term = reg(torch.rand(3, 1, 8, 8))
    term.backward()
    assert torch.isfinite(term) and model.conv1.weight.grad.abs().sum() > 0


def test_regularizer_errors():
    model = tiny_encoder()
    with pytest.raises(ValueError, match="both 0"):
        LatentScoreRegularizer(model, "conv2", "embed", 0.0, 0.0)
    with pytest.raises(ValueError, match="disentanglement_weight must be a number >= 0, got -1"):
        LatentScoreRegularizer(model, "conv2", "embed", 1.0, -1)
    with pytest.raises(ValueError,
                       match="unknown method 'saliency'. Allowed: 'gradient_x_activation', 'paper_expected_gradients'"):
        LatentScoreRegularizer(model, "conv2", "embed", method="saliency")
    with pytest.raises(ValueError, match="takes no method_kwargs \\['n_samples'\\]"):
        LatentScoreRegularizer(model, "conv2", "embed", method_kwargs={"n_samples": 3})
    with pytest.raises(ValueError, match="unknown transform 'log'"):
        LatentScoreRegularizer(model, "conv2", "embed", transform="log")
    with pytest.raises(ValueError, match="unknown combine 'max'"):
        LatentScoreRegularizer(model, "conv2", "embed", combine="max")
    with pytest.raises(ValueError, match="every_n_steps must be a positive int"):
        LatentScoreRegularizer(model, "conv2", "embed", every_n_steps=0)
    with pytest.raises(ValueError, match="Did you mean: conv2"):
        LatentScoreRegularizer(model, "conv_2", "embed")
    with pytest.raises(TypeError, match="nn.Module"):
        LatentScoreRegularizer(lambda x: x, "conv2", "embed")
    with pytest.raises(ValueError, match="K >= 2"):
        LatentScoreRegularizer(model, "conv2", "embed", 0.0, 1.0, target_reduction=lambda T: T[:, :1])(
            torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="NaN or inf"):
        LatentScoreRegularizer(model, "conv2", "embed")(torch.full((2, 1, 8, 8), float("nan")))


def test_weights_by_score_name_equal_the_two_weight_arguments():
    model, x, xi = tiny_encoder(), torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    legacy = LatentScoreRegularizer(model, "conv2", "embed", 0.3, 2.0, noise=fixed(xi))
    named = LatentScoreRegularizer(model, "conv2", "embed", weights={"informativeness": 0.3, "disentanglement": 2.0},
                                   noise=fixed(xi))
    assert torch.equal(named(x), legacy(x)) and named.last_scores.keys() == legacy.last_scores.keys()
    only_d = LatentScoreRegularizer(model, "conv2", "embed", weights={"disentanglement": 1.0})
    assert torch.equal(only_d(x), LatentScoreRegularizer(model, "conv2", "embed", 0.0, 1.0)(x))
    assert set(only_d.last_scores) == {"disentanglement"} and only_d.informativeness_weight == 0.0


def test_noise_comes_from_the_regularizer_seed_and_leaves_the_global_rng_alone():
    model, x = tiny_encoder(), torch.rand(4, 1, 8, 8)
    first, second = (LatentScoreRegularizer(model, "conv2", "embed", 1.0, 0.0, seed=3) for _ in range(2))
    state = torch.get_rng_state()
    terms = [first(x), first(x)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(second(x), terms[0]) and not torch.equal(terms[0], terms[1])  # fresh noise on every call
    other = LatentScoreRegularizer(model, "conv2", "embed", 1.0, 0.0, seed=4)
    assert not torch.equal(other(x), terms[0])


def test_calibrated_informativeness_term_is_differentiable():
    model = tiny_encoder()
    reg = LatentScoreRegularizer(model, "conv2", "embed", weights={"informativeness": 1.0}, calibrate=True,
                                 noise="shuffle")
    term = reg(torch.rand(3, 1, 8, 8))
    term.backward()
    assert torch.isfinite(term) and model.conv1.weight.grad.abs().sum() > 0


def test_weights_errors():
    model = tiny_encoder()
    with pytest.raises(ValueError, match="unknown score 'informativness'. Did you mean: 'informativeness'"):
        LatentScoreRegularizer(model, "conv2", "embed", weights={"informativness": 1.0})
    with pytest.raises(ValueError, match="give either weights"):
        LatentScoreRegularizer(model, "conv2", "embed", 1.0, weights={"informativeness": 1.0})
    with pytest.raises(ValueError, match="every weight is 0"):
        LatentScoreRegularizer(model, "conv2", "embed", weights={"informativeness": 0.0})
    with pytest.raises(ValueError, match=r"weights\['disentanglement'\] must be a number >= 0, got -2"):
        LatentScoreRegularizer(model, "conv2", "embed", weights={"disentanglement": -2})
