"""Layer-pair attributions against independent computations: hand-written sub-networks with per-unit autograd,
Captum's own layer methods run per unit, and an analytic linear network."""
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (FeatureAblation, InputXGradient, IntegratedGradients, LayerFeatureAblation,
                         LayerIntegratedGradients, Saliency)

from captum_layerpair import LayerPairAttribution, LayerPairInputXGradient, LayerPairIntegratedGradients
from captum_layerpair.models import LinearConvNet, SmallCNN, SmallResNet


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope="module")
def resnet():
    return SmallResNet(widths=(4, 4, 8), embed_dim=3).eval()


def resnet_subnetwork(model, x, source_value):
    """Hand-written g_x for source = layer1.1.conv1 (inside a residual block), target = layer1.2, "sum"."""
    h = model.layer1[0](model.stem(x))  # block input: the skip path keeps its value from x
    block = model.layer1[1]
    out = F.relu(block.bn1(source_value))
    out = block.bn2(block.conv2(out))
    out = F.relu(out + block.shortcut(h))
    return model.layer1[2](out).sum(dim=(2, 3))  # [N, K]


def source_value_of(model, x):
    return model.layer1[1].conv1(model.layer1[0](model.stem(x))).detach()


def per_unit_gradients(g, a):
    """Independent reference: one autograd call per unit, [N, K, *S]."""
    a = a.clone().requires_grad_()
    out = g(a)
    rows = [torch.autograd.grad(out[:, k].sum(), a, retain_graph=True)[0] for k in range(out.shape[1])]
    return torch.stack(rows, 1)


def test_gradient_x_input_through_skip_connection_matches_hand_written_autograd(resnet):
    x = torch.randn(3, 3, 12, 12)
    a = source_value_of(resnet, x)
    grads = per_unit_gradients(lambda v: resnet_subnetwork(resnet, x, v), a)
    lp = LayerPairAttribution(resnet, "layer1.1.conv1", "layer1.2", method=InputXGradient)
    A = lp.attribute(x)
    assert A.shape == (3, 8, 4, 12, 12)
    assert rel_err(A, grads * a[:, None]) < 1e-5
    S = LayerPairAttribution(resnet, "layer1.1.conv1", "layer1.2", method=Saliency).attribute(x, abs=False)
    assert rel_err(S, grads) < 1e-5


def test_integrated_gradients_completeness_inside_residual_block(resnet):
    x = torch.randn(2, 3, 12, 12)
    a = source_value_of(resnet, x)
    baseline = torch.zeros_like(a)
    lp = LayerPairIntegratedGradients(resnet, "layer1.1.conv1", "layer1.2")
    A, delta = lp.attribute(x, baselines=baseline, n_steps=64, return_convergence_delta=True)
    assert delta.shape == (2, 8)
    with torch.no_grad():
        diff = resnet_subnetwork(resnet, x, a) - resnet_subnetwork(resnet, x, baseline)  # [N, K]
    sums = A.flatten(2).sum(-1)
    # Captum's delta is sum(A) - (g(a) - g(b)) for the sub-network g: check it against the hand-written g
    assert torch.allclose(sums - diff, delta, atol=1e-4)
    assert (delta.abs() / diff.abs().clamp_min(1e-3)).max() < 0.05


def test_integrated_gradients_equals_captum_layer_ig_per_unit(resnet):
    x = torch.randn(2, 3, 12, 12)
    lp = LayerPairAttribution(resnet, "layer1.0.conv1", "layer1.2", method=IntegratedGradients)
    ours = lp.attribute(x, input_baselines=torch.zeros_like(x), n_steps=8)
    for k in range(ours.shape[1]):
        def model_to_unit(inp, k=k):
            captured = {}
            handle = resnet.layer1[2].register_forward_hook(lambda m, i, o: captured.setdefault("t", o))
            try:
                resnet(inp)
            finally:
                handle.remove()
            return captured["t"][:, k].sum(dim=(1, 2))

        ref = LayerIntegratedGradients(model_to_unit, resnet.layer1[0].conv1).attribute(
            x, baselines=torch.zeros_like(x), n_steps=8)
        assert rel_err(ours[:, k], ref) < 1e-5


def test_feature_ablation_equals_captum_layer_feature_ablation_per_unit():
    model = SmallCNN(channels=(3, 4), embed_dim=3).eval()
    x = torch.randn(2, 1, 8, 8)
    ours = LayerPairAttribution(model, "conv2", "embed", method=FeatureAblation).attribute(x)
    assert ours.shape == (2, 3, 4, 4, 4)
    for k in range(3):
        ref = LayerFeatureAblation(lambda inp, k=k: model(inp)[:, k], model.conv2).attribute(x)
        assert rel_err(ours[:, k], ref) < 1e-5


def conv_matrix(conv, shape):
    """The linear map of a conv without bias as a matrix [out_numel, in_numel], from basis vectors (no autograd)."""
    n = torch.tensor(shape).prod().item()
    basis = torch.eye(n).view(n, *shape)
    with torch.no_grad():
        out = F.conv2d(basis, conv.weight, None, conv.stride, conv.padding)
    return out.flatten(1).T


def test_linear_network_gradient_x_input_equals_weight_product_times_activation():
    model = LinearConvNet(channels=3, embed_dim=4, image_size=6).eval()
    x = torch.randn(2, 1, 6, 6)
    a = model.relu(model.conv1(x)).detach()
    W = model.embed.weight @ conv_matrix(model.conv3, (3, 6, 6)) @ conv_matrix(model.conv2, (3, 6, 6))  # [K, S]
    expected = W.view(1, 4, 3, 6, 6) * a[:, None]
    A = LayerPairInputXGradient(model, "relu", "embed").attribute(x)
    assert rel_err(A, expected) < 1e-5


def test_attribute_to_source_input_equals_attribution_to_previous_layer_output():
    model = SmallCNN(channels=(3, 4), embed_dim=3).eval()
    x = torch.randn(2, 1, 8, 8)
    to_input = LayerPairInputXGradient(model, "conv2", "embed").attribute(x, attribute_to_source_input=True)
    to_pool = LayerPairInputXGradient(model, "pool1", "embed").attribute(x)
    assert to_input.shape == (2, 3, 3, 4, 4)
    assert rel_err(to_input, to_pool) < 1e-6


def test_target_reductions_are_consistent():
    model = SmallCNN(channels=(3, 4), embed_dim=3).eval()
    x = torch.randn(2, 1, 8, 8)
    kwargs = dict(forward_func=model, source_layer="conv1", target_layer="conv2", method=Saliency)
    summed = LayerPairAttribution(**kwargs, target_reduction="sum").attribute(x, abs=False)
    mean = LayerPairAttribution(**kwargs, target_reduction="mean").attribute(x, abs=False)
    per_element = LayerPairAttribution(**kwargs, target_reduction="none").attribute(x, abs=False)
    custom = LayerPairAttribution(**kwargs, target_reduction=lambda T: T.amax(dim=(2, 3))).attribute(x, abs=False)
    assert summed.shape == (2, 4, 3, 8, 8) and per_element.shape == (2, 4 * 4 * 4, 3, 8, 8)
    assert custom.shape == summed.shape
    assert rel_err(mean * 16, summed) < 1e-5  # conv2's output is 4x4
    assert rel_err(per_element.view(2, 4, 16, 3, 8, 8).sum(2), summed) < 1e-5


def test_paper_expected_gradients_matches_hand_written_loop_for_every_dimension():
    model = SmallCNN(channels=(3, 4), embed_dim=3).eval()
    x = torch.rand(2, 1, 8, 8)
    lp = LayerPairAttribution(model, "conv2", "embed", method="paper_expected_gradients")
    torch.manual_seed(5)
    A = lp.attribute(x, attribute_to_source_input=True, n_samples=3, stdev=0.2)
    torch.manual_seed(5)
    expected = torch.zeros_like(A)
    for _ in range(3):
        t = torch.rand(2, 1, 1, 1)
        x_tilde = t * (x + 0.2 * torch.randn_like(x)) + (1 - t) * torch.zeros_like(x)
        a = model.pool1(model.relu1(model.conv1(x_tilde))).detach()  # input of conv2 at the interpolated point
        g = lambda v: model.embed(model.flatten(model.pool2(model.relu2(model.conv2(v)))))  # noqa: E731
        expected += per_unit_gradients(g, a) * a[:, None] / 3
    assert rel_err(A, expected) < 1e-5
    assert torch.isfinite(A.var(dim=1)).all() and (A.abs().flatten(2).sum(-1) > 0).all()
