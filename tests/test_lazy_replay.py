"""Gradient methods: recorded graphs replayed per unit (not K Jacobian rows), internal_batch_size bounds them, and
Saliency / InputXGradient take every unit from one forward pass."""
import numpy as np
import pytest
import torch
from captum.attr import DeepLift, GradientShap, InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

from captum_layerpair import LayerPairAttribution
from captum_layerpair.attr import _shared_forward, _strategies
from captum_layerpair.attr._subnetwork import SubNetwork
from captum_layerpair.models import SmallResNet

SOURCE, TARGET = "layer1.1.conv1", "layer1.2"  # K = 8
N = 3


@pytest.fixture(scope="module")
def setup():
    model = SmallResNet(widths=(4, 4, 8), embed_dim=3).eval()
    return model, torch.randn(N, 3, 8, 8, generator=torch.Generator().manual_seed(4))


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def seeded(lp, x, **kwargs):
    torch.manual_seed(1)
    np.random.seed(1)  # GradientShap picks its baselines with NumPy
    return lp.attribute(x, **kwargs)


@pytest.mark.parametrize("method, kwargs", [
    (Saliency, {}),
    (InputXGradient, {}),
    (IntegratedGradients, {"n_steps": 4}),
    (GradientShap, {"baselines": torch.zeros(2, 4, 8, 8), "n_samples": 3, "stdevs": 0.1}),
    (lambda f: NoiseTunnel(IntegratedGradients(f)), {"nt_samples": 2, "n_steps": 3, "stdevs": 0.1}),
])
def test_gradient_methods_back_propagate_each_unit_without_jacobian_rows(setup, monkeypatch, method, kwargs):
    model, x = setup
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=method, method_kwargs=kwargs)
    loop = seeded(lp, x, vectorize="loop")

    def no_rows(*args, **kw):
        raise AssertionError("the lazy path computed Jacobian rows")

    monkeypatch.setattr(_shared_forward, "jacobian_rows", no_rows)
    assert rel_err(seeded(lp, x), loop) < 1e-5


def test_module_hooking_methods_still_take_all_rows_from_one_backward_pass(setup, monkeypatch):
    model, x = setup
    calls = []
    original = _shared_forward.jacobian_rows
    monkeypatch.setattr(_shared_forward, "jacobian_rows", lambda *a, **k: calls.append(1) or original(*a, **k))
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=DeepLift)
    fast = lp.attribute(x)
    assert calls and rel_err(fast, lp.attribute(x, vectorize="loop")) < 1e-5


@pytest.mark.parametrize("internal_batch_size", [None, 3, 6])
def test_internal_batch_size_bounds_the_graphs_and_groups_the_units(setup, monkeypatch, internal_batch_size):
    model, x = setup
    rows = []
    original = SubNetwork.evaluate
    monkeypatch.setattr(SubNetwork, "evaluate", lambda self, a, rest: rows.append(len(a)) or original(self, a, rest))
    extra = {} if internal_batch_size is None else {"internal_batch_size": internal_batch_size}
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=IntegratedGradients, method_kwargs={"n_steps": 4})
    fast = lp.attribute(x, **extra)
    evaluations = 4 * N // (internal_batch_size or 4 * N)  # Captum's forward passes per unit, of ib rows each
    groups, left = divmod(len(rows), evaluations)
    assert left == 0 and max(rows) == (internal_batch_size or 4 * N)
    if internal_batch_size is None:
        assert groups == 1  # every unit replays the recorded graphs
    else:
        assert 2 <= groups < 8  # the first unit alone, then groups whose rows fit in one graph's memory
    rows.clear()
    assert rel_err(fast, lp.attribute(x, vectorize="loop", **extra)) < 1e-5


def test_group_size_follows_the_measured_graph_memory():
    shared = _shared_forward.SharedForward("eager", measure=True)
    leaf_rows = torch.randn(6, 10, requires_grad=True)
    net = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Tanh(), torch.nn.Linear(10, 2)).requires_grad_(False)
    shared.record()
    out = shared(leaf_rows, (), lambda a, rest: net(a))
    assert out.shape == (6, 2)
    # saved for backward (parameters frozen): both weights (100 + 20 floats) and the tanh output (6 x 10)
    per_row = shared.graph_bytes_per_row
    assert per_row == 4 * (100 + 20 + 6 * 10) / 6
    assert shared.units_within_graph(6) == int(per_row * 6 // (6 * 10 * 4)) == 3


@pytest.mark.parametrize("method, kwargs", [(Saliency, {}), (Saliency, {"abs": False}), (InputXGradient, {})])
def test_one_gradient_methods_take_every_unit_from_one_forward_without_captum_calls(setup, monkeypatch, method,
                                                                                     kwargs):
    model, x = setup
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=method, method_kwargs=kwargs)
    loop = lp.attribute(x, vectorize="loop")
    calls = []
    original = _strategies.AttributionJob.call
    monkeypatch.setattr(_strategies.AttributionJob, "call", lambda *a, **k: calls.append(1) or original(*a, **k))
    fast = lp.attribute(x)
    assert not calls
    assert fast.shape == loop.shape and rel_err(fast, loop) < 1e-6
    assert (fast < 0).any() == (method is InputXGradient or not kwargs.get("abs", True))
