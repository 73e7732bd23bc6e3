"""Every fast path equals the one-run-per-unit path (``vectorize="loop"``) to 1e-5 relative."""
import numpy as np
import pytest
import torch
from captum.attr import (Deconvolution, DeepLift, DeepLiftShap, FeatureAblation, FeaturePermutation, GradientShap,
                         GuidedBackprop, InputXGradient, IntegratedGradients, KernelShap, LayerConductance,
                         LayerGradientXActivation, LayerIntegratedGradients, Lime, NoiseTunnel, Occlusion, Saliency,
                         ShapleyValueSampling)

from captum_layerpair import LayerPairAttribution
from captum_layerpair.models import SmallResNet

SOURCE, TARGET = "layer1.1.conv1", "layer1.2"  # the source sits inside a residual block
CHANNEL_MASK = torch.arange(4).view(1, 4, 1, 1).expand(1, 4, 8, 8).contiguous()

METHODS = {
    "Saliency": (Saliency, {}),
    "InputXGradient": (InputXGradient, {}),
    "IntegratedGradients": (IntegratedGradients, {"n_steps": 5}),
    "IntegratedGradients-internal-batches": (IntegratedGradients, {"n_steps": 5, "internal_batch_size": 4}),
    "GradientShap": (GradientShap, {"baselines": torch.randn(3, 4, 8, 8), "n_samples": 3, "stdevs": 0.1}),
    "DeepLift": (DeepLift, {}),
    "DeepLiftShap": (DeepLiftShap, {"baselines": torch.randn(2, 4, 8, 8)}),
    "GuidedBackprop": (GuidedBackprop, {}),
    "Deconvolution": (Deconvolution, {}),
    "NoiseTunnel(IG)": (lambda f: NoiseTunnel(IntegratedGradients(f)), {"nt_samples": 2, "n_steps": 3,
                                                                        "stdevs": 0.1}),
    "FeatureAblation": (FeatureAblation, {"feature_mask": CHANNEL_MASK}),
    "Occlusion": (Occlusion, {"sliding_window_shapes": (4, 4, 4), "strides": (4, 4, 4)}),
    "FeaturePermutation": (FeaturePermutation, {"feature_mask": CHANNEL_MASK}),
    "ShapleyValueSampling": (ShapleyValueSampling, {"feature_mask": CHANNEL_MASK, "n_samples": 2}),
    "KernelShap": (KernelShap, {"feature_mask": CHANNEL_MASK, "n_samples": 12}),
    "Lime": (Lime, {"feature_mask": CHANNEL_MASK, "n_samples": 12}),
    "LayerIntegratedGradients": (LayerIntegratedGradients, {"n_steps": 4}),
    "LayerConductance": (LayerConductance, {"n_steps": 4}),
    "LayerGradientXActivation": (LayerGradientXActivation, {}),
}
DETERMINISTIC = {"Saliency", "InputXGradient", "IntegratedGradients", "DeepLift", "GuidedBackprop", "Deconvolution",
                 "FeatureAblation", "Occlusion", "LayerIntegratedGradients", "LayerGradientXActivation"}


@pytest.fixture(scope="module")
def setup():
    model = SmallResNet(widths=(4, 4, 8), embed_dim=3).eval()
    return model, torch.randn(3, 3, 8, 8)


def seeded(lp, x, **kwargs):
    torch.manual_seed(1)
    np.random.seed(1)
    return lp.attribute(x, **kwargs)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("name", METHODS)
def test_fast_path_equals_loop(setup, name):
    model, x = setup
    method, kwargs = METHODS[name]
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=method, method_kwargs=kwargs)
    fast = seeded(lp, x)
    loop = seeded(lp, x, vectorize="loop")
    assert fast.shape == (3, 8, 4, 8, 8)
    assert loop.abs().max() > 0
    assert rel_err(fast, loop) < 1e-5


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_batched_fold_equals_loop_for_deterministic_methods(setup, name):
    model, x = setup
    method, kwargs = METHODS[name]
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=method, method_kwargs=kwargs)
    assert rel_err(lp.attribute(x, vectorize="batched"), lp.attribute(x, vectorize="loop")) < 1e-5


@pytest.mark.parametrize("name", ["IntegratedGradients", "GradientShap", "FeatureAblation"])
def test_target_chunks_and_subsets_equal_the_full_call(setup, name):
    model, x = setup
    method, kwargs = METHODS[name]
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=method, method_kwargs=kwargs)
    full = seeded(lp, x)
    assert rel_err(seeded(lp, x, target_batch_size=3), full) < 1e-5
    assert rel_err(seeded(lp, x, target=[5, 1]), full[:, [5, 1]]) < 1e-5
    single = seeded(lp, x, target=6)
    assert single.shape == (3, 4, 8, 8) and rel_err(single, full[:, 6]) < 1e-5


def test_convergence_deltas_per_unit_equal_loop(setup):
    model, x = setup
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=IntegratedGradients, method_kwargs={"n_steps": 4})
    A, delta = lp.attribute(x, return_convergence_delta=True)
    A_loop, delta_loop = lp.attribute(x, return_convergence_delta=True, vectorize="loop")
    assert delta.shape == (3, 8) and torch.allclose(delta, delta_loop, atol=1e-5)
    _, delta_one = lp.attribute(x, target=2, return_convergence_delta=True)
    assert delta_one.shape == (3,) and torch.allclose(delta_one, delta[:, 2], atol=1e-5)
