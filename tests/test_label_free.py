"""Label-free attribution (LFXAI): analytic values on linear encoders, any Captum method, per-dimension maps."""
from __future__ import annotations

import pytest
import torch
from captum.attr import (
    DeepLift,
    FeatureAblation,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from captum_layerpair.attr.label_free import LabelFreeAttribution
from captum_layerpair.models import ConvEncoder

pytestmark = [pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require gradients"),
              pytest.mark.filterwarnings("ignore:Setting forward, backward hooks")]


def linear_encoder(embed_dim: int = 3) -> tuple[nn.Module, torch.Tensor]:
    """``f(x) = W flatten(x)`` on ``[N, 1, 2, 3]`` inputs, in float64; returns the module and ``W [D, 6]``."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(6, embed_dim, bias=False)).double()
    return encoder, encoder[1].weight.detach()


def inputs(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def analytic(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Attribution of ``<W x~, W x>`` for methods exact on linear functions with a zero baseline: ``x * W^T W x``."""
    flat = x.flatten(1)
    return (flat * (flat @ W.T @ W)).view_as(x)


ZERO = torch.zeros(1, 1, 2, 3, dtype=torch.float64)

# Methods that expand the batch (steps, samples, input/baseline pairs, perturbations) must still pair each x~ with
# its own f(x): the inputs differ per sample, so a wrong pairing would change the values.
EXACT_ON_LINEAR = {
    "InputXGradient": (InputXGradient, {}),
    "IntegratedGradients": (IntegratedGradients, {"n_steps": 8}),
    "GradientShap": (GradientShap, {"baselines": ZERO, "n_samples": 5}),
    "DeepLift": (DeepLift, {}),
    "NoiseTunnel(IG)": (lambda f: NoiseTunnel(IntegratedGradients(f)), {"nt_samples": 3, "stdevs": 0.0}),
    "FeatureAblation": (FeatureAblation, {"perturbations_per_eval": 4}),
    "Occlusion": (Occlusion, {"sliding_window_shapes": (1, 1, 1), "perturbations_per_eval": 3}),
}


@pytest.mark.parametrize("name", list(EXACT_ON_LINEAR))
def test_linear_encoder_matches_the_analytic_attribution(name):
    method, kwargs = EXACT_ON_LINEAR[name]
    encoder, W = linear_encoder()
    x = inputs()
    attributions = LabelFreeAttribution(encoder, method).attribute(x, **kwargs)
    torch.testing.assert_close(attributions.double(), analytic(x, W))  # Captum's Occlusion returns float32


@pytest.mark.parametrize("name", list(EXACT_ON_LINEAR))
def test_per_dimension_attributions_of_a_linear_encoder_are_x_times_the_weight_row(name):
    method, kwargs = EXACT_ON_LINEAR[name]
    encoder, W = linear_encoder()
    x = inputs()
    expected = (x.flatten(1)[:, None, :] * W[None]).view(4, 3, 1, 2, 3)
    lf = LabelFreeAttribution(encoder, method)
    torch.testing.assert_close(lf.attribute_dimensions(x, output="raw", **kwargs).double(), expected)
    torch.testing.assert_close(lf.attribute_dimensions(x, dims=[2, 0], output="raw", **kwargs).double(),
                               expected[:, [2, 0]])


def test_label_free_attribution_is_the_representation_weighted_sum_of_dimension_attributions():
    # For gradient x input, <f(x~), f(x)> = sum_d f_d(x) f_d(x~) gives A = sum_d f_d(x) A_d exactly.
    encoder = ConvEncoder(image_size=8, seed=0).double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lf = LabelFreeAttribution(encoder, InputXGradient)
    per_dim = lf.attribute_dimensions(x, output="raw")  # [3, 4, 1, 8, 8]
    with torch.no_grad():
        representation = encoder(x)
    torch.testing.assert_close(lf.attribute(x), (representation[:, :, None, None, None] * per_dim).sum(1))


def test_integrated_gradients_is_complete_on_a_nonlinear_encoder():
    # Completeness: the attributions sum to <f(x), f(x)> - <f(0), f(x)>, computed here without Captum.
    torch.manual_seed(1)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    attributions = LabelFreeAttribution(encoder, IntegratedGradients).attribute(x, n_steps=100)
    with torch.no_grad():
        fx = encoder(x)
        expected = (fx * fx).sum(1) - (encoder(torch.zeros_like(x)) * fx).sum(1)
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), expected, rtol=1e-6, atol=1e-8)


def test_dimension_deltas_are_stacked_per_dimension():
    encoder, _ = linear_encoder()
    attributions, delta = LabelFreeAttribution(encoder, IntegratedGradients).attribute_dimensions(
        inputs(), n_steps=4, return_convergence_delta=True)
    assert attributions.shape == (4, 3, 1, 2, 3) and delta.shape == (4, 3)
    assert delta.abs().max() < 1e-10


class TwoInputEncoder(nn.Module):
    """``f(a, b, scale) = scale * (A a + B b)`` for tuple inputs and an additional forward argument."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 2, bias=False).double(), nn.Linear(5, 2, bias=False).double()

    def forward(self, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scale * (self.a(a) + self.b(b))


def test_tuple_inputs_and_additional_forward_args_follow_the_batch():
    torch.manual_seed(0)
    encoder = TwoInputEncoder()
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(4, 3, dtype=torch.float64, generator=gen), torch.randn(4, 5, dtype=torch.float64, generator=gen)
    scale = torch.tensor([[1.0], [2.0], [-1.0], [0.5]], dtype=torch.float64)
    attr_a, attr_b = LabelFreeAttribution(encoder, IntegratedGradients).attribute(
        (a, b), additional_forward_args=(scale,), n_steps=5)
    fx = scale * (encoder.a(a) + encoder.b(b)).detach()
    torch.testing.assert_close(attr_a, a * ((scale * fx) @ encoder.a.weight.detach()))
    torch.testing.assert_close(attr_b, b * ((scale * fx) @ encoder.b.weight.detach()))
    dims_a, dims_b = LabelFreeAttribution(encoder, Saliency).attribute_dimensions(
        (a, b), additional_forward_args=(scale,), output="raw", abs=False)
    assert dims_a.shape == (4, 2, 3) and dims_b.shape == (4, 2, 5)
    torch.testing.assert_close(dims_b, (scale[:, :, None] * encoder.b.weight.detach()[None]).expand(4, 2, 5))


class MapEncoder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1)  # [N, H, W]: not a 2-D representation


def test_encoder_with_non_2d_output_is_rejected():
    x = torch.rand(2, 1, 4, 4)
    for call in (lambda lf: lf.attribute(x), lambda lf: lf.attribute_dimensions(x)):
        with pytest.raises(ValueError, match=r"2-D representation \[N, D\].*shape \(2, 4, 4\)"):
            call(LabelFreeAttribution(MapEncoder(), Saliency))


def test_bad_method_target_and_dims_raise_clear_errors():
    encoder, _ = linear_encoder()
    with pytest.raises(TypeError, match="attribution class or a factory.*got IntegratedGradients"):
        LabelFreeAttribution(encoder, IntegratedGradients(encoder))
    with pytest.raises(TypeError, match="must return a Captum Attribution, got str"):
        LabelFreeAttribution(encoder, lambda f: "not an attribution").attribute(inputs())
    with pytest.raises(TypeError, match="takes no target"):
        LabelFreeAttribution(encoder, Saliency).attribute(inputs(), target=0)
    with pytest.raises(ValueError, match=r"dims .* in \[0, 3\); got \[0, 3\]"):
        LabelFreeAttribution(encoder, Saliency).attribute_dimensions(inputs(), dims=[0, 3])


# ---- per-dimension output as the authors' attribute_individual_dim: |f_d(x) * A_d(x)| ----

@pytest.mark.parametrize("name", list(EXACT_ON_LINEAR))
def test_abs_scaled_dimensions_of_a_linear_encoder_are_abs_of_projection_times_weight_row(name):
    # For f(x) = W x and a zero baseline, A_d = x * W_d and f_d(x) = W_d . x, so |f_d A_d| = |(W_d . x) x W_d|.
    method, kwargs = EXACT_ON_LINEAR[name]
    encoder, W = linear_encoder()
    x = inputs()
    flat = x.flatten(1)
    expected = ((flat @ W.T)[:, :, None] * flat[:, None, :] * W[None]).abs().view(4, 3, 1, 2, 3)
    lf = LabelFreeAttribution(encoder, method)
    torch.testing.assert_close(lf.attribute_dimensions(x, **kwargs).double(), expected)
    torch.testing.assert_close(lf.attribute_dimensions(x, dims=[1], output="abs_scaled", **kwargs).double(),
                               expected[:, [1]])


def test_abs_scaled_saliency_of_a_nonlinear_encoder_matches_autograd():
    # Saliency A_d = |df_d/dx|; the default output is |f_d(x)| * |df_d/dx|, computed here with a float64 Jacobian.
    torch.manual_seed(2)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    jacobian = torch.stack([torch.autograd.functional.jacobian(lambda v: encoder(v[None])[0], x[n])
                            for n in range(len(x))])  # [N, 3, 3, 2, 2]
    with torch.no_grad():
        z = encoder(x)
    expected = (z[:, :, None, None, None] * jacobian.abs()).abs()
    attributions = LabelFreeAttribution(encoder, Saliency).attribute_dimensions(x)
    torch.testing.assert_close(attributions, expected)


def test_abs_scaled_applies_to_every_tuple_input_and_keeps_raw_deltas():
    torch.manual_seed(0)
    encoder = TwoInputEncoder()
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(4, 3, dtype=torch.float64, generator=gen), torch.randn(4, 5, dtype=torch.float64, generator=gen)
    scale = torch.tensor([[1.0], [2.0], [-1.0], [0.5]], dtype=torch.float64)
    lf = LabelFreeAttribution(encoder, IntegratedGradients)
    (raw_a, raw_b), raw_delta = lf.attribute_dimensions((a, b), additional_forward_args=(scale,), output="raw",
                                                        n_steps=4, return_convergence_delta=True)
    (abs_a, abs_b), delta = lf.attribute_dimensions((a, b), additional_forward_args=(scale,), n_steps=4,
                                                    return_convergence_delta=True)
    z = (scale * (encoder.a(a) + encoder.b(b))).detach()
    torch.testing.assert_close(abs_a, (z[:, :, None] * raw_a).abs())
    torch.testing.assert_close(abs_b, (z[:, :, None] * raw_b).abs())
    torch.testing.assert_close(delta, raw_delta)


def test_unknown_dimension_output_is_rejected():
    encoder, _ = linear_encoder()
    with pytest.raises(ValueError, match="unknown output 'scaled'.*'abs_scaled', 'raw'"):
        LabelFreeAttribution(encoder, Saliency).attribute_dimensions(inputs(), output="scaled")


def test_docstring_says_how_the_pairing_differs_from_the_authors_code():
    import captum_layerpair.attr.label_free as module

    assert "does *not* pass ``f(x)`` through" in module.__doc__ and "repeat_interleave" in module.__doc__
