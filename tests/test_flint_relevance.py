"""FLINT relevance, interpretations, fidelity and conciseness: known answers and independent recomputations."""
import warnings

import pytest
import torch
from captum.attr._utils.attribution import Attribution
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from captum_layerpair.flint import (
    AttributeRelevance,
    FLINTMetrics,
    Interpreter,
    SmallLeNet,
    attribute_contributions,
    class_relevance,
    conciseness,
    evaluate,
    fidelity,
    global_interpretation,
    local_interpretation,
    local_relevance,
)

D = torch.float64


def known_head():
    head = nn.Linear(3, 2).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]))
        head.bias.copy_(torch.tensor([0.3, -0.1]))
    return head


def test_relevance_known_answer():
    phi = torch.tensor([[2.0, 1.0, 4.0]], dtype=D)
    head = known_head()
    assert local_relevance(phi, head, 0).tolist() == [[1.0, -1.0, 1.0]]
    assert local_relevance(phi, head, 1).tolist() == [[0.0, 0.25, 1.0]]
    # phi . w = [2, -2, 2] + 0.3 vs [0, 1, 4] - 0.1: the head predicts class 1
    assert local_relevance(phi, head).tolist() == [[0.0, 0.25, 1.0]]


@given(st.integers(1, 6), st.integers(2, 7), st.integers(2, 5), st.integers(0, 10_000))
def test_contributions_sum_with_the_bias_to_the_interpreter_logit(n, J, C, seed):
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(J, C).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(C, J, generator=g, dtype=D))
        head.bias.copy_(torch.randn(C, generator=g, dtype=D))
    phi = torch.rand(n, J, generator=g, dtype=D)
    logits = head(phi)
    for c in range(C):
        alpha = attribute_contributions(phi, head, c)
        torch.testing.assert_close(alpha.sum(1) + head.bias[c], logits[:, c], rtol=0, atol=1e-12)
    r = local_relevance(phi, head)
    assert (r.abs() <= 1 + 1e-12).all()
    alpha = attribute_contributions(phi, head)
    has_positive = (alpha > 0).any(1) & (alpha.max(1).values >= alpha.abs().max(1).values)
    assert torch.allclose(r.max(1).values[has_positive], torch.ones(int(has_positive.sum()), dtype=D))


def test_relevance_of_all_zero_contributions_is_zero_and_bad_targets_raise():
    head = known_head()
    assert local_relevance(torch.zeros(2, 3, dtype=D), head, 0).abs().sum() == 0
    with pytest.raises(ValueError, match="class indices"):
        local_relevance(torch.ones(2, 3, dtype=D), head, 2)
    with pytest.raises(ValueError, match="J = 3"):
        local_relevance(torch.ones(2, 4, dtype=D), head)


def test_conciseness_counts_a_hand_made_relevance():
    r = torch.tensor([[1.0, 0.6, 0.3, -1.0], [1.0, 0.1, 0.21, 0.5]])
    # thresholds 1/tau: tau 1.5 -> .667, 2 -> .5, 5 -> .2
    assert conciseness(r, (1.5, 2, 5)).tolist() == [1.0, (2 + 1) / 2, (3 + 3) / 2]
    with pytest.raises(ValueError, match="tau must be"):
        conciseness(r, (1.0,))


def test_interpretations_threshold_at_one_over_tau():
    r = torch.tensor([[0.2, 1.0, 0.6], [1.0, -1.0, 0.5]])
    assert local_interpretation(r, tau=2) == [[1, 2], [0]]
    assert global_interpretation(r, tau=5) == [(0, 1), (0, 2), (1, 0), (1, 2)]


# ---------------------------------------------------------------- on an interpreter

@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (40,), generator=g)
    interp = Interpreter(SmallLeNet(dropout=0.0), "features", 6, x[:4])
    return interp, x, y


def test_attribute_relevance_is_a_captum_attribution(setup):
    interp, x, _ = setup
    interp.eval()
    method = AttributeRelevance(interp)
    assert isinstance(method, Attribution) and not method.has_convergence_delta()
    with torch.no_grad():
        out = interp(x)
    torch.testing.assert_close(method.attribute(x), local_relevance(out.attributes, interp.head, out.logits.argmax(1)))
    torch.testing.assert_close(method.attribute(x, target=3, normalize=False),
                               out.attributes * interp.head.weight[3])


def test_class_relevance_is_the_mean_over_predicted_classes(setup):
    interp, x, _ = setup
    with torch.no_grad():
        out = interp.eval()(x)
    yhat = out.predictor_logits.argmax(1)
    r = local_relevance(out.attributes, interp.head, yhat)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        R = class_relevance(interp, (x,), by="predictor", batch_size=7)
    assert R.shape == (10, 6)
    for c in range(10):
        if (yhat == c).any():
            torch.testing.assert_close(R[c], r[yhat == c].mean(0))
        else:
            assert torch.isnan(R[c]).all()
    missing = set(range(10)) - set(yhat.tolist())
    assert bool(missing) == any("relevance is NaN" in str(w.message) for w in caught)


def copying_interpreter(x):
    """Psi copies f's logits (the tapped layer is f's last layer) and h is the identity: g = f."""
    f = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))

    class Copy(nn.Module):
        def forward(self, values):
            return values[0]

    interp = Interpreter(f, "3", 4, x[:2], psi=Copy(), decoder=None)
    with torch.no_grad():
        interp.head.weight.copy_(torch.eye(4))
        interp.head.bias.zero_()
    return interp


def test_an_interpreter_that_copies_f_has_fidelity_one(setup):
    _, x, y = setup
    interp = copying_interpreter(x)
    assert fidelity(interp, (x, y)) == 1.0
    report = evaluate(interp, (x, y % 4))
    assert report.fidelity == 1.0 and report.fidelity_top5 == 1.0
    assert report.acc_f == report.acc_g


def test_a_constant_head_has_the_share_of_the_majority_class_as_fidelity(setup):
    _, x, _ = setup
    interp = copying_interpreter(x)
    with torch.no_grad():
        f_pred = interp.model(x).argmax(1)
        majority = int(torch.bincount(f_pred).argmax())
        interp.head.weight.zero_()
        interp.head.bias.zero_()
        interp.head.bias[majority] = 1.0
    expected = float((f_pred == majority).float().mean())
    assert fidelity(interp, x) == pytest.approx(expected)
    assert fidelity(interp, x, top_k=4) == 1.0


def test_metric_accumulates_like_a_recomputation_in_one_go(setup):
    interp, x, y = setup
    report = evaluate(interp, (x, y), batch_size=9)
    with torch.no_grad():
        out = interp.eval()(x)
    g_pred, f_pred = out.logits.argmax(1), out.predictor_logits.argmax(1)
    r = local_relevance(out.attributes, interp.head, g_pred)
    assert report.n == 40
    assert report.acc_f == pytest.approx(float((f_pred == y).float().mean()))
    assert report.acc_g == pytest.approx(float((g_pred == y).float().mean()))
    assert report.fidelity == pytest.approx(float((g_pred == f_pred).float().mean()))
    assert report.conciseness == pytest.approx(tuple(conciseness(r).tolist()))
    assert report.active_attributes == int((out.attributes.max(0).values > 0).sum())
    assert report.relevant_attributes == int((r.max(0).values > 0.5).sum())
    text = str(report)
    assert "fidelity" in text and "CNS_g" in text and "active attributes" in text
    metric = FLINTMetrics(interp)
    with torch.no_grad():
        for i in range(0, 40, 13):
            metric.update(interp(x[i:i + 13]), y[i:i + 13])
    assert metric.compute() == report
    assert "head" not in dict(metric.named_modules())


def test_evaluate_without_labels_gives_nan_accuracy(setup):
    interp, x, _ = setup
    report = evaluate(interp, x)
    assert report.acc_f != report.acc_f and 0 <= report.fidelity <= 1
