"""The paper's attribution as registered built-in methods: baselines in input space (given either way), the
authors' defaults, and the gradient-only variant, each against a hand-written float64 loop."""
import pytest
import torch

from captum_layerpair import LayerPairAttribution
from captum_layerpair.attr._methods import BUILTIN_METHODS
from captum_layerpair.models import SmallCNN


def _model():
    return SmallCNN(channels=(3, 4), embed_dim=3).double().eval()


def _hand_written(model, x, baseline, n_samples, stdev, multiply, to_input):
    """mean over draws of d f_k / d a(x~) (* a(x~)), x~ = t (x + eps) + (1 - t) b; a = conv2's input or output."""
    total = 0
    for _ in range(n_samples):
        t = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype)
        x_tilde = t * (x + stdev * torch.randn_like(x)) + (1 - t) * baseline
        a = model.pool1(model.relu1(model.conv1(x_tilde))).detach()
        if not to_input:
            a = model.conv2(a).detach()
        a.requires_grad_()
        rest = (lambda v: model.conv2(v)) if to_input else (lambda v: v)
        out = model.embed(model.flatten(model.pool2(model.relu2(rest(a)))))
        rows = torch.stack([torch.autograd.grad(out[:, k].sum(), a, retain_graph=True)[0]
                            for k in range(out.shape[1])], 1)
        total = total + (rows * a.detach()[:, None] if multiply else rows)
    return total / n_samples


@pytest.mark.parametrize("name, multiply", [("paper_expected_gradients", True),
                                            ("paper_expected_gradients_gradient_only", False)])
@pytest.mark.parametrize("to_input", [True, False])  # a 3-channel source input and a 4-channel source output
def test_paper_methods_match_a_hand_written_loop_with_a_non_zero_baseline(name, multiply, to_input):
    model = _model()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    baseline = torch.full((1, 1, 8, 8), 0.3, dtype=torch.float64)
    lp = LayerPairAttribution(model, "conv2", "embed", method=name)
    torch.manual_seed(4)
    A = lp.attribute(x, attribute_to_source_input=to_input, n_samples=3, stdev=0.2, baselines=baseline)
    torch.manual_seed(4)
    expected = _hand_written(model, x, baseline, 3, 0.2, multiply, to_input)
    torch.testing.assert_close(A, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("to_input", [True, False])
def test_input_baselines_equal_baselines_for_the_paper_method(to_input):
    model = _model()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    baseline = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    lp = LayerPairAttribution(model, "conv2", "embed", method="paper_expected_gradients")
    torch.manual_seed(1)
    A = lp.attribute(x, attribute_to_source_input=to_input, n_samples=2, input_baselines=baseline)
    torch.manual_seed(1)
    B = lp.attribute(x, attribute_to_source_input=to_input, n_samples=2, baselines=baseline)
    assert torch.equal(A, B)


def test_authors_defaults_are_ten_samples_of_noise_std_half():
    model = _model()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    lp = LayerPairAttribution(model, "conv2", "embed", method="paper_expected_gradients")
    torch.manual_seed(2)
    A = lp.attribute(x, attribute_to_source_input=True)
    torch.manual_seed(2)
    expected = _hand_written(model, x, 0.0, 10, 0.5, True, True)
    torch.testing.assert_close(A, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(BUILTIN_METHODS))
def test_every_builtin_method_gives_all_units_and_says_it_has_no_delta(name):
    lp = LayerPairAttribution(_model(), "conv2", "embed", method=name)
    assert lp.has_convergence_delta() is False
    A = lp.attribute(torch.rand(2, 1, 8, 8, dtype=torch.float64), n_samples=2)
    assert A.shape == (2, 3, 4, 4, 4) and torch.isfinite(A).all()
    with pytest.raises(ValueError, match="has no convergence delta"):
        lp.attribute(torch.rand(2, 1, 8, 8, dtype=torch.float64), return_convergence_delta=True)
