"""Layer-pair attributions compose with Captum: NoiseTunnel around a layer-pair class, Captum's metrics on the
public sub-network, and one-line errors for NoiseTunnel as a class and for baselines in the wrong space."""
import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from captum.log import log_usage
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from captum_layerpair import LayerPairAttribution, LayerPairIntegratedGradients


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 5 * 5, 3)).double().eval()


def _x(n=2):
    return torch.rand(n, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


class _Recording(LayerPairIntegratedGradients):
    """Records the noisy inputs NoiseTunnel hands to the wrapped attribution."""

    @log_usage()
    def attribute(self, inputs, **kwargs):
        self.seen = inputs.detach().clone()
        return super().attribute.__wrapped__(self, inputs, **kwargs)


def test_noise_tunnel_around_a_layer_pair_class_is_the_mean_over_the_same_noisy_inputs():
    model, x = _model(), _x()
    lp = _Recording(model, "0", "5")
    smooth = NoiseTunnel(lp).attribute(x, nt_type="smoothgrad", nt_samples=4, stdevs=0.1, n_steps=8)
    assert lp.seen.shape == (8, 1, 5, 5) and not torch.equal(lp.seen[0], lp.seen[1])
    per_draw = LayerPairIntegratedGradients(model, "0", "5").attribute(lp.seen, n_steps=8)  # [N * 4, K, C, H, W]
    expected = per_draw.reshape(2, 4, *per_draw.shape[1:]).mean(1)
    assert smooth.shape == (2, 3, 3, 5, 5)
    torch.testing.assert_close(smooth, expected, rtol=1e-10, atol=1e-12)


def test_noise_tunnel_as_a_class_is_refused_in_one_line():
    with pytest.raises(ValueError, match="NoiseTunnel wraps another method.*factory") as info:
        LayerPairAttribution(_model(), "0", "5", method=NoiseTunnel)
    assert "\n" not in str(info.value)


def test_input_shaped_baselines_for_a_plain_method_point_to_input_baselines():
    lp = LayerPairAttribution(_model(), "0", "5", method=IntegratedGradients)
    with pytest.raises(ValueError, match="source-activation space.*input_baselines=") as info:
        lp.attribute(_x(), baselines=torch.zeros(2, 1, 5, 5, dtype=torch.float64))
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_nan_baselines_and_nan_model_outputs_are_refused():
    model = _model()
    lp = LayerPairAttribution(model, "0", "5", method=IntegratedGradients)
    with pytest.raises(ValueError, match="baselines contains 1 NaN"):
        b = torch.zeros(1, 3, 5, 5, dtype=torch.float64)
        b[0, 0, 0, 0] = float("nan")
        lp.attribute(_x(), baselines=b)
    with pytest.raises(ValueError, match="input_baselines contains"):
        lp.attribute(_x(), input_baselines=torch.full((1, 1, 5, 5), float("nan"), dtype=torch.float64))
    with torch.no_grad():
        model[2].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="output of target layer '5'.*NaN"):
        lp.attribute(_x())


def test_captum_infidelity_and_sensitivity_run_on_the_public_subnetwork():
    model, x = _model(), _x(3)
    lp = LayerPairAttribution(model, "0", "5", method=Saliency)
    g, a, args = lp.subnetwork(x)
    k = 1
    A = lp.attribute(x, target=k)
    out = g(a, *args)
    assert out.shape == (3, 3)
    torch.testing.assert_close(out, model(x))  # g(a) is the model's output when a is the true source value

    def perturb(inputs):  # deterministic, so the expected value below is exact
        noise = 0.01 * torch.linspace(-1, 1, inputs[0].numel(), dtype=inputs.dtype).reshape(inputs.shape[1:])
        noise = noise.expand_as(inputs)
        return noise, inputs - noise

    infid = infidelity(g, perturb, a, A, additional_forward_args=args, target=k, n_perturb_samples=4)
    noise, perturbed = perturb(a)  # independent: (I^T A - (g(a) - g(a - I)))^2
    expected = ((noise * A).flatten(1).sum(1) - (g(a, *args)[:, k] - g(perturbed, *args)[:, k])) ** 2
    torch.testing.assert_close(infid, expected.to(infid.dtype), rtol=1e-6, atol=1e-12)
    sens = sensitivity_max(Saliency(g).attribute, a, additional_forward_args=args, target=k, n_perturb_samples=3)
    assert sens.shape == (3,) and torch.isfinite(sens).all()
