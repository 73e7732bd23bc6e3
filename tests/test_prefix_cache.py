"""The input -> source prefix is computed once per call where that is safe, and never changes a result."""
import pytest
import torch
from captum.attr import DeepLift, FeatureAblation, InputXGradient, IntegratedGradients
from torch import nn

from captum_layerpair import LayerPairAttribution


class Counting(nn.Module):
    """Wraps a module and counts its forward calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


class SkipNet(nn.Module):
    """``head(tanh(mid(source(h)) + skip(h)))`` with ``h = pre(x)``: the skip path goes around the source."""

    def __init__(self, reuse: bool = False) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.pre = Counting(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()))
        self.source = nn.Conv2d(4, 4, 3, padding=1)
        self.mid = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.skip = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(4, 3, 1)
        self.reuse = reuse  # apply ``skip`` also before the source: a module used on both sides
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.5
        self.fail = False

    def forward(self, x):
        h = self.pre(x)
        if self.reuse:
            h = self.skip(h)
        t = self.mid(self.source(h)) + self.skip(h)
        if self.fail and len(x) > 3:
            raise RuntimeError("failing evaluation")
        return self.head(torch.tanh(t))


@pytest.fixture
def x():
    return torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(1))


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def hand_gradient_x_value(model, x):
    """IxG of every target unit by hand, in float64: the sub-network written out."""
    model = model.double()
    x = x.double()
    with torch.no_grad():
        h = model.pre(x)
        if model.reuse:
            h = model.skip(h)
        a = model.source(h)
    a = a.clone().requires_grad_()
    out = model.head(torch.tanh(model.mid(a) + model.skip(h))).sum((2, 3))
    rows = [torch.autograd.grad(out[:, k].sum(), a, retain_graph=True)[0] for k in range(out.shape[1])]
    model.float()
    return (torch.stack(rows, 1) * a[:, None]).float()


@pytest.mark.parametrize("reuse", [False, True])
def test_skip_around_the_source_equals_the_hand_written_reference(x, reuse):
    model = SkipNet(reuse).eval()
    lp = LayerPairAttribution(model, "source", "head", method=InputXGradient)
    assert rel_err(lp.attribute(x), hand_gradient_x_value(model, x)) < 1e-5


@pytest.mark.parametrize("method, kwargs", [
    (IntegratedGradients, {"n_steps": 4, "internal_batch_size": 3}),
    (FeatureAblation, {"perturbations_per_eval": 2}),
])
def test_prefix_runs_once_per_call_and_results_equal_the_loop(x, method, kwargs):
    model = SkipNet().eval()
    lp = LayerPairAttribution(model, "source", "head", method=method, method_kwargs=kwargs)
    model.pre.calls = 0
    fast = lp.attribute(x)
    assert model.pre.calls == 2  # attribute's reference forward + the prefix record, whatever the evaluations
    model.pre.calls = 0
    loop = lp.attribute(x, vectorize="loop")
    assert model.pre.calls >= 3 * 4  # the loop path evaluates the prefix in every forward pass (K = 3 units)
    assert rel_err(fast, loop) < 1e-6


def test_attribution_to_the_source_input_uses_the_prefix_too(x):
    model = SkipNet().eval()
    lp = LayerPairAttribution(model, "source", "head", method=IntegratedGradients, method_kwargs={"n_steps": 3})
    fast = lp.attribute(x, attribute_to_source_input=True)
    loop = lp.attribute(x, attribute_to_source_input=True, vectorize="loop")
    assert rel_err(fast, loop) < 1e-6


def test_train_mode_prefix_is_computed_in_every_forward(x):
    model = SkipNet().eval()
    model.pre.train()  # BatchNorm on batch statistics: not served from the record
    lp = LayerPairAttribution(model, "source", "head", method=FeatureAblation,
                              method_kwargs={"perturbations_per_eval": 2})
    model.pre.calls = 0
    fast = lp.attribute(x)
    assert model.pre.calls > 10
    assert rel_err(fast, lp.attribute(x, vectorize="loop")) < 1e-5
    assert model.pre.training and not model.source.training


def test_hooks_inside_a_prefix_module_keep_running(x):
    model = SkipNet().eval()
    seen = []
    handle = model.pre.inner[0].register_forward_hook(lambda m, i, o: seen.append(len(o)))
    try:
        lp = LayerPairAttribution(model, "source", "head", method=FeatureAblation,
                                  method_kwargs={"perturbations_per_eval": 1})
        fast = lp.attribute(x)
    finally:
        handle.remove()
    assert seen == [len(x)] * (3 + 4 * 6 * 6)  # reference, record, base and every perturbation (one per element)
    assert rel_err(fast, lp.attribute(x, vectorize="loop")) < 1e-6


def test_no_patched_forward_is_left_on_the_model_even_after_an_error(x):
    model = SkipNet().eval()
    lp = LayerPairAttribution(model, "source", "head", method=FeatureAblation)
    model.fail = True
    with pytest.raises(RuntimeError, match="failing evaluation"):
        lp.attribute(x)
    assert not any("forward" in vars(m) for m in model.modules())
    model.fail = False
    lp.attribute(x)
    assert not any("forward" in vars(m) for m in model.modules())


def test_prefix_outputs_that_need_a_graph_are_computed(x):
    """DeepLift keeps the parameters' gradients on and hooks every non-linearity: nothing is served."""
    model = SkipNet().eval()
    lp = LayerPairAttribution(model, "source", "head", method=DeepLift)
    model.pre.calls = 0
    fast = lp.attribute(x)
    assert model.pre.calls == 3  # reference forward, prefix record and the one evaluation
    assert rel_err(fast, lp.attribute(x, vectorize="loop")) < 1e-5
