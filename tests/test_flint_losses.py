"""FLINT losses: known answers in float64, the authors' formulas written out independently, gradients, weights,
and the warm-up schedule."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from captum_layerpair.flint import (
    FLINTLoss,
    InterpreterOutput,
    attribute_l1,
    conciseness_diversity_loss,
    input_fidelity_loss,
    output_fidelity_loss,
    paper_schedule,
)

D = torch.float64


def code_cross_entropy(prediction, target):
    """The authors' ``loss_cce``: softmax both, ``mean_x sum_c -t_c log p_c`` (written from its definition)."""
    p = torch.exp(prediction) / torch.exp(prediction).sum(1, keepdim=True)
    t = torch.exp(target) / torch.exp(target).sum(1, keepdim=True)
    return torch.mean(torch.sum(-t * torch.log(p), 1))


def entropy_by_hand(row):
    p = [math.exp(v) for v in row]
    z = sum(p)
    return -sum(q / z * math.log(q / z) for q in p)


# ---------------------------------------------------------------- conciseness / diversity known answers

def test_equal_rows_give_zero_entropy_difference():
    row = torch.rand(7, dtype=D)
    assert conciseness_diversity_loss(row.repeat(5, 1)).item() == pytest.approx(0.0, abs=1e-14)


def test_constant_row_has_mean_entropy_log_j():
    J = 9
    phi = torch.full((4, J), 0.7, dtype=D)
    assert conciseness_diversity_loss(phi, diversity=0.0).item() == pytest.approx(math.log(J), abs=1e-13)


def test_one_hot_rows_give_minus_log_j():
    J = 6
    phi = 50.0 * torch.eye(J, dtype=D)
    assert conciseness_diversity_loss(phi).item() == pytest.approx(-math.log(J), abs=1e-12)


def test_entropy_term_acts_on_absolute_values():
    phi = torch.randn(5, 4, dtype=D)
    assert conciseness_diversity_loss(phi).item() == conciseness_diversity_loss(phi.abs()).item()


@given(st.lists(st.lists(st.floats(-3, 3), min_size=3, max_size=3), min_size=2, max_size=5),
       st.floats(0, 2))
def test_conciseness_diversity_equals_the_code_formula(rows, mu):
    phi = torch.tensor(rows, dtype=D)
    a = phi.abs()
    mean = a.mean(0, keepdim=True)
    expected = code_cross_entropy(a, a) - mu * code_cross_entropy(mean, mean)
    by_hand = sum(entropy_by_hand(r) for r in a.tolist()) / len(rows) - mu * entropy_by_hand(mean[0].tolist())
    got = conciseness_diversity_loss(phi, diversity=mu).item()
    assert got == pytest.approx(expected.item(), abs=1e-12)
    assert got == pytest.approx(by_hand, abs=1e-12)


# ---------------------------------------------------------------- output fidelity

def test_output_fidelity_equals_the_code_cross_entropy():
    g, f = torch.randn(6, 4, dtype=D), torch.randn(6, 4, dtype=D)
    assert output_fidelity_loss(g, f).item() == pytest.approx(code_cross_entropy(g, f).item(), abs=1e-13)


def test_output_fidelity_with_g_equal_f_is_f_entropy_with_zero_gradient():
    f = torch.randn(5, 3, dtype=D)
    g = f.clone().requires_grad_(True)
    loss = output_fidelity_loss(g, f)
    assert loss.item() == pytest.approx(sum(entropy_by_hand(r) for r in f.tolist()) / 5, abs=1e-13)
    (grad,) = torch.autograd.grad(loss, g)
    assert grad.abs().max().item() < 1e-15


def test_output_fidelity_gives_no_gradient_to_predictor_logits():
    f = torch.randn(5, 3, dtype=D, requires_grad=True)
    g = torch.randn(5, 3, dtype=D, requires_grad=True)
    output_fidelity_loss(g, f).backward()
    assert f.grad is None
    assert g.grad.abs().sum() > 0


def test_output_fidelity_checks_shapes():
    with pytest.raises(ValueError, match="same shape"):
        output_fidelity_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        output_fidelity_loss(torch.zeros(3), torch.zeros(3))


# ---------------------------------------------------------------- input fidelity, l1

def test_input_fidelity_is_the_mean_squared_or_absolute_error():
    a, b = torch.randn(3, 1, 4, 4, dtype=D), torch.randn(3, 1, 4, 4, dtype=D)
    assert input_fidelity_loss(a, b).item() == pytest.approx(((a - b) ** 2).mean().item(), abs=1e-14)
    assert input_fidelity_loss(a, b, "l1").item() == pytest.approx((a - b).abs().mean().item(), abs=1e-14)
    with pytest.raises(ValueError, match="unknown reconstruction"):
        input_fidelity_loss(a, b, "l2")
    with pytest.raises(ValueError, match="input's shape"):
        input_fidelity_loss(a, b[:, :, :2])


def test_attribute_l1_is_divided_by_n_and_j():
    phi = torch.tensor([[1.0, -2.0], [0.0, 3.0]], dtype=D)
    assert attribute_l1(phi).item() == pytest.approx(6.0 / 4)


# ---------------------------------------------------------------- gradients

def away_from_zero(*shape):
    sign = torch.where(torch.rand(*shape, dtype=D) > 0.5, 1.0, -1.0)
    return (sign * (0.2 + torch.rand(*shape, dtype=D))).requires_grad_(True)


def test_every_term_passes_gradcheck():
    f = torch.randn(4, 3, dtype=D)
    x = torch.randn(4, 5, dtype=D)
    assert torch.autograd.gradcheck(lambda g: output_fidelity_loss(g, f), (torch.randn(4, 3, dtype=D,
                                                                                      requires_grad=True),))
    assert torch.autograd.gradcheck(lambda r: input_fidelity_loss(r, x), (torch.randn(4, 5, dtype=D,
                                                                                     requires_grad=True),))
    assert torch.autograd.gradcheck(lambda r: input_fidelity_loss(r, x, "l1"), (x + away_from_zero(4, 5),))
    assert torch.autograd.gradcheck(lambda p: conciseness_diversity_loss(p, 0.7), (away_from_zero(5, 6),))
    assert torch.autograd.gradcheck(attribute_l1, (away_from_zero(5, 6),))


def test_total_loss_gradient_matches_finite_differences():
    torch.manual_seed(0)
    psi = torch.nn.Linear(3, 4).double()
    head = torch.nn.Linear(4, 2).double()
    dec = torch.nn.Linear(4, 3).double()
    f_logits = torch.randn(6, 2, dtype=D)
    x = torch.randn(6, 3, dtype=D)
    y = torch.randint(0, 2, (6,))
    loss = FLINTLoss(entropy=0.3, l1=0.2, diversity=0.5)

    def total(weight):
        phi = torch.nn.functional.linear(x, weight, psi.bias)
        out = InterpreterOutput(f_logits, phi, head(phi), dec(phi))
        return loss(out, x, y).total

    w = psi.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(total, (w,))


# ---------------------------------------------------------------- FLINTLoss

def make_output(n=6, c=3, j=5, with_rec=True):
    phi = torch.randn(n, j, dtype=D)
    return InterpreterOutput(torch.randn(n, c, dtype=D), phi, torch.randn(n, c, dtype=D),
                             torch.randn(n, 1, 2, 2, dtype=D) if with_rec else None), torch.randn(n, 1, 2, 2,
                                                                                                   dtype=D)


def test_total_is_the_weighted_sum_of_the_terms():
    out, x = make_output()
    y = torch.randint(0, 3, (6,))
    loss = FLINTLoss(output_fidelity=0.5, input_fidelity=0.8, entropy=0.2, l1=0.1, diversity=1.3, prediction=1.0)
    terms = loss(out, x, y)
    assert terms.prediction.item() == pytest.approx(F.cross_entropy(out.predictor_logits, y).item())
    assert terms.output_fidelity.item() == pytest.approx(code_cross_entropy(out.logits, out.predictor_logits).item())
    assert terms.input_fidelity.item() == pytest.approx(((out.reconstruction - x) ** 2).mean().item())
    assert terms.l1.item() == pytest.approx(out.attributes.abs().mean().item())
    assert terms.entropy.item() == pytest.approx(conciseness_diversity_loss(out.attributes, 1.3).item())
    expected = (terms.prediction + 0.5 * terms.output_fidelity + 0.8 * terms.input_fidelity + 0.1 * terms.l1
                + 0.2 * terms.entropy)
    assert terms.total.item() == pytest.approx(expected.item(), abs=1e-12)


def test_factors_scale_terms_and_missing_labels_or_decoder_drop_terms():
    out, x = make_output(with_rec=False)
    loss = FLINTLoss()
    terms = loss(out, x, None, {"output_fidelity": 0.0, "entropy": 0.5})
    assert terms.prediction.item() == 0.0 and terms.input_fidelity.item() == 0.0
    assert terms.total.item() == pytest.approx(0.1 * terms.l1.item() + 0.5 * 0.2 * terms.entropy.item())
    with pytest.raises(ValueError, match="unknown loss term"):
        loss(out, x, None, {"entropie": 1.0})


def test_negative_or_non_finite_weights_raise():
    with pytest.raises(ValueError, match="must be >= 0"):
        FLINTLoss(entropy=-0.1)
    with pytest.raises(ValueError, match="finite"):
        FLINTLoss(l1=float("nan"))
    with pytest.raises(ValueError, match="unknown reconstruction"):
        FLINTLoss(reconstruction="l2")


def test_paper_weights_per_dataset():
    assert FLINTLoss.paper("mnist").weights == FLINTLoss().weights
    qdraw = FLINTLoss.paper("qdraw")
    assert qdraw.weights == dict(prediction=1.0, output_fidelity=0.1, input_fidelity=5.0, l1=0.3, entropy=0.1)
    assert FLINTLoss.paper("cifar10").reconstruction == "l1"
    with pytest.raises(ValueError, match="Did you mean"):
        FLINTLoss.paper("mnits")


# ---------------------------------------------------------------- schedule

def code_mnist_weights(epoch):
    """The code's MNIST branch, epoch 1-based: ``lmbd * int(epoch > k)``."""
    return dict(input_fidelity=0.8 * int(epoch > 0), output_fidelity=0.5 * int(epoch > 2),
                l1=0.1 * int(epoch > 2), entropy=0.2 * int(epoch > 4))


def code_qdraw_l1(epoch):
    return 0.02 * int(epoch > 1) + 0.28 * int(epoch > 2)


def test_paper_schedule_at_the_code_length_is_the_code_schedule():
    schedule = paper_schedule(12, "mnist")
    loss = FLINTLoss()
    for epoch in range(12):
        factors = schedule(epoch)
        for term, weight in code_mnist_weights(epoch + 1).items():
            assert loss.weights[term] * factors[term] == pytest.approx(weight)
        assert factors["prediction"] == 1.0
    qdraw = paper_schedule(12, "qdraw")
    for epoch in range(12):
        assert 0.30 * qdraw(epoch)["l1"] == pytest.approx(code_qdraw_l1(epoch + 1))


def test_paper_schedule_scales_the_switch_on_epochs():
    schedule = paper_schedule(40)
    on = {term: min(e for e in range(40) if schedule(e)[term] > 0) for term in ("output_fidelity", "entropy")}
    assert on == {"output_fidelity": round(2 * 40 / 12), "entropy": round(4 * 40 / 12)}
    with pytest.raises(ValueError):
        paper_schedule(0)
