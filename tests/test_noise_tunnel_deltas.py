"""A NoiseTunnel factory with convergence deltas: one delta per example, unit and noise draw, in every mode."""
import numpy as np
import pytest
import torch
from captum.attr import DeepLiftShap, GradientShap, IntegratedGradients, NoiseTunnel

from captum_layerpair import LayerPairAttribution
from captum_layerpair.models import SmallResNet

SOURCE, TARGET = "layer1.1.conv1", "layer1.2"  # source [4, 8, 8], K = 8
N, NT, STDEV, STEPS = 3, 3, 0.1, 3
NT_KWARGS = {"nt_samples": NT, "nt_samples_batch_size": 2, "stdevs": STDEV, "n_steps": STEPS}


@pytest.fixture(scope="module")
def setup():
    model = SmallResNet(widths=(4, 4, 8), embed_dim=3).eval()
    x = torch.randn(N, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    return model, x


def noise_tunnel(f):
    return NoiseTunnel(IntegratedGradients(f))


def seeded(lp, x, **kwargs):
    torch.manual_seed(5)
    np.random.seed(5)  # GradientShap picks its baselines with NumPy
    return lp.attribute(x, return_convergence_delta=True, **kwargs)


@pytest.mark.parametrize("vectorize", ["auto", "loop", "batched"])
def test_deltas_have_one_entry_per_noise_draw(setup, vectorize):
    model, x = setup
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=noise_tunnel, method_kwargs=NT_KWARGS)
    A, delta = seeded(lp, x, vectorize=vectorize)
    assert A.shape == (N, 8, 4, 8, 8) and delta.shape == (N, 8, NT)
    A1, delta1 = seeded(lp, x, vectorize=vectorize, target=5)
    assert A1.shape == (N, 4, 8, 8) and delta1.shape == (N, NT)


def test_fast_path_deltas_equal_the_loop(setup):
    model, x = setup
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=noise_tunnel, method_kwargs=NT_KWARGS)
    A, delta = seeded(lp, x)
    A_loop, delta_loop = seeded(lp, x, vectorize="loop")
    assert torch.allclose(A, A_loop, rtol=1e-5, atol=1e-6)
    assert torch.allclose(delta, delta_loop, rtol=1e-5, atol=1e-6)


def test_attributions_and_deltas_equal_integrated_gradients_at_the_same_noise_draws(setup):
    """Reference: NoiseTunnel's draws repeated by hand, IntegratedGradients of each unit of a hand-written
    sub-network at every noisy source value, then the mean (smoothgrad) and the per-draw deltas."""
    model, x = setup
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=noise_tunnel, method_kwargs=NT_KWARGS)
    A, delta = seeded(lp, x)
    a = lp.source_activations(x)
    torch.manual_seed(5)  # NoiseTunnel: batches of 2 and 1 draws, each example repeated (repeat_interleave)
    noisy = []
    for size in (2, 1):
        noise = torch.normal(0, torch.tensor(STDEV).repeat(N * size, *a.shape[1:]))
        noisy.append((a.repeat_interleave(size, 0) + noise).view(N, size, *a.shape[1:]))
    noisy = torch.cat(noisy, 1)  # [N, NT, *S]: draw j of example n
    source, target = model.get_submodule(SOURCE), model.get_submodule(TARGET)

    def g(value, k):
        store = {}
        h1 = source.register_forward_hook(lambda m, i, o: value)
        h2 = target.register_forward_hook(lambda m, i, o: store.setdefault("t", o))
        try:
            model(x.repeat(len(value) // N, 1, 1, 1))
        finally:
            h1.remove(), h2.remove()
        return store["t"][:, k].sum((1, 2))

    for k in (0, 5):
        attrs, deltas = [], []
        for j in range(NT):
            ig = IntegratedGradients(lambda v, k=k: g(v, k))
            attr, d = ig.attribute(noisy[:, j], n_steps=STEPS, return_convergence_delta=True)
            attrs.append(attr)
            deltas.append(d)
        assert torch.allclose(A[:, k], torch.stack(attrs).mean(0), rtol=1e-4, atol=1e-6)
        assert torch.allclose(delta[:, k], torch.stack(deltas, 1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method, kwargs, m", [
    (GradientShap, {"baselines": torch.zeros(2, 4, 8, 8), "n_samples": 4}, 4),  # one delta per sample
    (DeepLiftShap, {"baselines": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))}, 2),
])
def test_shap_deltas_come_per_sample_or_baseline(setup, method, kwargs, m):
    model, x = setup
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=method, method_kwargs=kwargs)
    A, delta = seeded(lp, x)
    _, delta_loop = seeded(lp, x, vectorize="loop")
    assert delta.shape == (N, 8, m) and torch.allclose(delta, delta_loop, rtol=1e-5, atol=1e-6)
