"""The user's model is never changed, and bad input gets a clear error."""
import pytest
import torch
from captum.attr import DeepLift, FeatureAblation, InputXGradient, IntegratedGradients, Saliency
from torch import nn

from captum_layerpair import LayerPairAttribution
from captum_layerpair.models import SmallCNN, SmallResNet


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [p.requires_grad for p in model.parameters()], [m.training for m in model.modules()])


def assert_untouched(model, before):
    state, flags, modes = snapshot(model)
    assert all(torch.equal(state[k], before[0][k]) for k in state)
    assert flags == before[1] and modes == before[2]
    assert hook_count(model) == 0


@pytest.mark.parametrize("method", [Saliency, IntegratedGradients, DeepLift, FeatureAblation])
def test_model_untouched_after_success_in_train_mode_with_frozen_parameters(method):
    model = SmallResNet(widths=(4, 4), embed_dim=3).train()
    model.stem[0].weight.requires_grad_(False)
    model.layer1[1].eval()  # mixed modes must come back as they were
    before = snapshot(model)
    A = LayerPairAttribution(model, "layer1.0.conv1", "layer1.1", method=method).attribute(torch.randn(2, 3, 8, 8))
    assert torch.isfinite(A).all()
    assert_untouched(model, before)  # BatchNorm running statistics included


def test_model_untouched_after_exception_inside_attribution():
    model = SmallCNN(channels=(3, 4), embed_dim=3).eval()
    before = snapshot(model)

    def failing_reduction(T):
        if failing_reduction.calls > 0:  # pass the probe forward, fail inside Captum's run
            raise RuntimeError("boom")
        failing_reduction.calls += 1
        return T.flatten(2).sum(2)

    failing_reduction.calls = 0
    lp = LayerPairAttribution(model, "conv1", "conv2", method=DeepLift, target_reduction=failing_reduction)
    with pytest.raises(RuntimeError, match="boom"):
        lp.attribute(torch.randn(2, 1, 8, 8))
    assert_untouched(model, before)


def test_inplace_relu_after_source_works():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(3, 2, 3, padding=1)).eval()
    x = torch.randn(2, 1, 6, 6)
    A = LayerPairAttribution(model, "0", "2", method=InputXGradient).attribute(x)
    a = model[0](x).detach().requires_grad_()
    out = model[2](torch.relu(a)).sum(dim=(2, 3))
    grad = torch.autograd.grad(out[:, 1].sum(), a)[0]
    assert torch.allclose(A[:, 1], grad * a.detach(), atol=1e-6)


class TwiceUsed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.head = nn.Conv2d(2, 2, 1)
        self.unused = nn.Conv2d(2, 2, 1)
        self.lstm = nn.LSTM(4, 3, batch_first=True)

    def forward(self, x):
        h = self.head(self.conv(self.conv(x)))
        seq, _ = self.lstm(h.flatten(2))
        return seq


@pytest.mark.parametrize("source, target, error, match", [
    ("conv1.weight", "embed", ValueError, "unknown source layer"),
    ("conv_1", "embed", ValueError, "Did you mean: conv1"),
    ("embed", "conv1", ValueError, "does not run before target"),
    ("conv2", "conv2", ValueError, "same layer"),
])
def test_layer_errors(source, target, error, match):
    model = SmallCNN(channels=(3, 4), embed_dim=3).eval()
    with pytest.raises(error, match=match):
        LayerPairAttribution(model, source, target, method=Saliency).attribute(torch.randn(1, 1, 8, 8))
    assert hook_count(model) == 0


@pytest.mark.parametrize("source, target, error, match", [
    ("conv", "head", ValueError, "called more than once"),
    ("unused", "head", ValueError, "not reached"),
    ("head", "unused", ValueError, "not reached"),
    ("head", "lstm", TypeError, "not a single tensor"),
])
def test_forward_structure_errors(source, target, error, match):
    model = TwiceUsed()
    with pytest.raises(error, match=match):
        LayerPairAttribution(model, source, target, method=Saliency).attribute(torch.randn(1, 2, 2, 2))
    assert hook_count(model) == 0


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(target=3), ValueError, "out of range.*K = 3"),
    (dict(target=[0, -1]), ValueError, "out of range"),
    (dict(target=1.5), TypeError, "target must be"),
    (dict(target=[[0, 1]]), ValueError, "1-D"),
    (dict(target_batch_size=0), ValueError, "target_batch_size"),
    (dict(return_convergence_delta=True), ValueError, "no convergence delta"),
    (dict(vectorize="fast"), ValueError, "unknown vectorize"),
])
def test_attribute_argument_errors(kwargs, error, match):
    model = SmallCNN(channels=(3, 4), embed_dim=3).eval()
    lp = LayerPairAttribution(model, "conv1", "embed", method=Saliency)
    with pytest.raises(error, match=match):
        lp.attribute(torch.randn(2, 1, 8, 8), **kwargs)


@pytest.mark.parametrize("method, error, match", [
    ("IntegratedGradient", ValueError, "Did you mean: IntegratedGradients"),
    (nn.Linear, TypeError, "not a captum.attr Attribution"),
    (42, TypeError, "method must be"),
])
def test_unknown_method_errors(method, error, match):
    model = SmallCNN(channels=(3, 4), embed_dim=3).eval()
    with pytest.raises(error, match=match):
        LayerPairAttribution(model, "conv1", "embed", method=method)


def test_non_finite_inputs_and_bad_reduction_are_rejected():
    model = SmallCNN(channels=(3, 4), embed_dim=3).eval()
    x = torch.randn(2, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        LayerPairAttribution(model, "conv1", "embed", method=Saliency).attribute(x)
    with pytest.raises(ValueError, match="unknown target_reduction"):
        LayerPairAttribution(model, "conv1", "embed", method=Saliency, target_reduction="max")
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        LayerPairAttribution(model, "conv1", "conv2", method=Saliency,
                             target_reduction=lambda T: T.sum()).attribute(torch.randn(2, 1, 8, 8))


def test_layer_names_need_a_module_and_modules_must_belong_to_the_model():
    model = SmallCNN(channels=(3, 4), embed_dim=3).eval()
    with pytest.raises(TypeError, match="must be an nn.Module"):
        LayerPairAttribution(lambda x: model(x), "conv1", "embed", method=Saliency)
    with pytest.raises(ValueError, match="not a submodule"):
        LayerPairAttribution(model, nn.Conv2d(1, 1, 1), "embed", method=Saliency)


def test_early_stop_can_be_turned_off_for_models_that_swallow_exceptions():
    class Swallowing(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 3), nn.Linear(3, 2), nn.Linear(2, 2)

        def forward(self, x):
            try:
                return self.c(self.b(self.a(x)))
            except Exception:
                return torch.zeros(x.shape[0], 2)

    model = Swallowing()
    x = torch.randn(2, 3)
    lp = LayerPairAttribution(model, "a", "b", method=Saliency, stop_at_target=False)
    A = lp.attribute(x, abs=False)
    assert torch.allclose(A, model.b.weight.expand(2, 2, 3))


def test_progress_bar_counts_target_units(capsys):
    model = SmallCNN(channels=(3, 4), embed_dim=3).eval()
    LayerPairAttribution(model, "conv1", "embed", method=Saliency).attribute(torch.randn(2, 1, 8, 8),
                                                                             show_progress=True, target_batch_size=2)
    err = capsys.readouterr().err
    assert "LayerPair Saliency" in err and "3/3" in err
