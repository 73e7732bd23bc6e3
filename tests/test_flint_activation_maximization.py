"""AM+PI and maximally activating samples: the objective goes up, the penalties do what they say, the
interpreter is left as it was."""
import pytest
import torch

from captum_layerpair.flint import (
    Interpreter,
    SmallLeNet,
    activation_maximization,
    maximally_activating_samples,
    total_variation,
)


@pytest.fixture
def interp():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return Interpreter(SmallLeNet(batch_norm=True), "features", 5, x), x


def test_total_variation_hand_value():
    img = torch.tensor([[[[0.0, 1.0, 1.0], [0.0, 0.0, 3.0]]]])
    # rows: |0-0|, |0-1|, |3-1| -> mean 1; columns: |1-0|, |1-1|, |0-0|, |3-0| -> mean 1
    assert total_variation(img).tolist() == [2.0]


def test_am_raises_the_attribute_and_keeps_the_interpreter(interp):
    model, x = interp
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    with torch.no_grad():
        before = model.eval().attributes(0.3 * x)[:, 2]
    model.train()
    out = activation_maximization(model, 2, x, rounds=2, steps_per_round=20, tv_weight=0.0, bound_weight=0.0)
    assert out.shape == x.shape
    with torch.no_grad():
        after = model.eval().attributes(out)[:, 2]
    model.train()
    assert (after > before).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert modes == [m.training for m in model.modules()]
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_am_is_deterministic_and_leaves_the_global_rng(interp):
    model, _ = interp
    state = torch.random.get_rng_state()
    a = activation_maximization(model, 1, rounds=1, steps_per_round=5, jitter=2, seed=4, n=2)
    b = activation_maximization(model, 1, rounds=1, steps_per_round=5, jitter=2, seed=4, n=2)
    assert torch.equal(a, b) and a.shape == (2, 1, 8, 8)
    assert torch.equal(state, torch.random.get_rng_state())


def test_a_large_bound_weight_keeps_the_result_within_bounds(interp):
    model, x = interp
    out = activation_maximization(model, 0, 3 * x, init_scale=1.0, scale=50.0, bound_weight=1e4, rounds=3,
                                  steps_per_round=30)
    assert out.min() >= -0.05 and out.max() <= 1.05


def test_am_checks_its_arguments(interp):
    model, _ = interp
    with pytest.raises(ValueError, match="attribute must be"):
        activation_maximization(model, 5)
    with pytest.raises(ValueError, match="bounds"):
        activation_maximization(model, 0, bounds=(1.0, 0.0))


def test_maximally_activating_samples_rank_within_the_class(interp):
    model, _ = interp
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(30, 1, 8, 8, generator=g), torch.randint(0, 3, (30,), generator=g)
    with torch.no_grad():
        phi = model.eval().attributes(x)[:, 3]
    idx = maximally_activating_samples(model, (x, y), 3, cls=1, k=3, batch_size=7)
    members = (y == 1).nonzero().flatten()
    expected = members[phi[members].argsort(descending=True)[:3]]
    assert idx.tolist() == expected.tolist()
    assert maximally_activating_samples(model, (x, y), 3, k=2).tolist() == phi.argsort(descending=True)[:2].tolist()
    with pytest.raises(ValueError, match="labelled"):
        maximally_activating_samples(model, (x,), 3, cls=1)
