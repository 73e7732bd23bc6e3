"""FLINT interpreter: reading hidden layers, which parameters the losses reach, post-hoc freezing, and Captum
integration (layer-pair attribution and latent scores on the attribute dictionary)."""
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from captum_layerpair import LayerPairAttribution
from captum_layerpair.flint import (
    AttributeDictionary,
    FLINTLoss,
    Interpreter,
    SmallLeNet,
    fit,
    paper_schedule,
    train_step,
)
from captum_layerpair.metrics import DisentanglementScore


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(24, 1, 8, 8, generator=g), torch.randint(0, 10, (24,), generator=g)


def hooks_on(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, m.training) for n, m in model.named_modules()],
            [(n, p.requires_grad) for n, p in model.named_parameters()])


def assert_same(model, snap):
    state, modes, flags = snap
    now = model.state_dict()
    assert state.keys() == now.keys()
    for k in state:
        assert torch.equal(state[k], now[k]), k
    assert modes == [(n, m.training) for n, m in model.named_modules()]
    assert flags == [(n, p.requires_grad) for n, p in model.named_parameters()]


# ---------------------------------------------------------------- forward and layers

def test_forward_reads_the_tapped_layer_once_and_matches_manual_hooks(data):
    x, _ = data
    f = SmallLeNet(dropout=0.0).eval()
    interp = Interpreter(f, "features", 5, x[:4]).eval()
    seen = []
    handle = f.features.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        out = interp(x)
    finally:
        handle.remove()
    assert len(seen) == 1
    assert torch.equal(out.predictor_logits, f(x))
    assert torch.equal(out.attributes, interp.psi([seen[0]]))
    assert torch.equal(out.logits, interp.head(out.attributes))
    assert out.attributes.shape == (24, 5) and out.logits.shape == (24, 10)
    assert out.reconstruction.shape == x.shape
    assert hooks_on(interp) == 0


def test_no_hook_is_left_after_an_exception_in_the_forward(data):
    x, _ = data

    class Fails(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = SmallLeNet(dropout=0.0)
            self.fail = False

        def forward(self, x):
            out = self.net(x)
            if self.fail:
                raise RuntimeError("boom")
            return out

    model = Fails()
    interp = Interpreter(model, "net.features", 3, x[:2])
    model.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        interp(x)
    assert hooks_on(model) == 0


def test_clear_errors_for_bad_layers_and_outputs(data):
    x, _ = data
    f = SmallLeNet()
    with pytest.raises(ValueError, match="Did you mean"):
        Interpreter(f, "featurs", 3, x[:2])

    class TwoOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = SmallLeNet()

        def forward(self, x):
            return self.net(x), self.net.features(x)

    with pytest.raises(ValueError, match="more than once"):
        Interpreter(TwoOutputs(), "net.features", 3, x[:2])
    with pytest.raises(TypeError, match="one tensor of logits"):
        Interpreter(TwoOutputs(), "net.classifier", 3, x[:2])

    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(64, 4), nn.Linear(64, 4)

        def forward(self, x):
            return self.used(x.flatten(1))

    with pytest.raises(ValueError, match="not reached"):
        Interpreter(Skips(), "unused", 3, x[:2])

    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    class TupleLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair, self.fc = Pair(), nn.Linear(64, 4)

        def forward(self, x):
            return self.fc(self.pair(x.flatten(1))[0])

    with pytest.raises(TypeError, match="not a single tensor"):
        Interpreter(TupleLayer(), "pair", 3, x[:2])
    with pytest.raises(ValueError, match="n_classes=3"):
        Interpreter(f, "features", 3, x[:2], n_classes=3)
    with pytest.raises(ValueError, match="psi must map"):
        Interpreter(f, "features", 3, x[:2], psi=nn.Sequential())
    with pytest.raises(ValueError, match="unknown attribute_activation"):
        Interpreter(f, "features", 3, x[:2], attribute_activation="relux")


def test_construction_does_not_change_the_predictor_or_global_rng(data):
    x, _ = data
    f = SmallLeNet(batch_norm=True).train()
    snap = snapshot(f)
    state = torch.random.get_rng_state()
    a = Interpreter(f, "features", 4, x[:8], seed=3)
    b = Interpreter(f, "features", 4, x[:8], seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    assert_same(f, snap)
    assert all(torch.equal(p, q) for p, q in zip(a.psi.parameters(), b.psi.parameters()))


def test_several_layers_and_flat_layers_feed_the_default_psi(data):
    x, _ = data
    f = SmallLeNet(dropout=0.0)
    both = Interpreter(f, [f.features[2], "features"], 6, x[:4])
    assert [layer.name for layer in both.layers] == ["features.2", "features"]
    assert both.psi.merge is not None and both(x).attributes.shape == (24, 6)
    flat = Interpreter(f, ["features", "classifier.2"], 6, x[:4], attribute_activation="relu")
    assert flat.psi.merge is None and flat(x).attributes.shape == (24, 6)
    assert isinstance(flat.psi, AttributeDictionary)


def test_float64_interpreter(data):
    x, _ = data
    f = SmallLeNet(dropout=0.0).double()
    interp = Interpreter(f, "features", 4, x[:4].double())
    assert interp(x.double()).attributes.dtype == torch.float64


# ---------------------------------------------------------------- what the losses reach

def test_joint_losses_reach_only_layers_up_to_the_tapped_layer(data):
    x, y = data
    f = SmallLeNet(dropout=0.0)
    interp = Interpreter(f, "features", 5, x[:4])
    opt = torch.optim.SGD(interp.trainable_parameters(), lr=0.0)
    train_step(interp, FLINTLoss(prediction=0.0), opt, x, y)
    for name, p in f.named_parameters():
        if name.startswith("classifier"):
            assert p.grad is None or p.grad.abs().max() == 0, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    train_step(interp, FLINTLoss(), opt, x, y)
    assert all(p.grad.abs().sum() > 0 for p in f.classifier.parameters())


def test_posthoc_step_gives_no_predictor_gradient(data):
    x, y = data
    f = SmallLeNet(batch_norm=True)
    interp = Interpreter(f, "features", 5, x[:4], posthoc=True)
    assert {id(p) for p in interp.trainable_parameters()}.isdisjoint(id(p) for p in f.parameters())
    opt = torch.optim.Adam(interp.trainable_parameters())
    train_step(interp, FLINTLoss(), opt, x, y)
    assert all(p.grad is None for p in f.parameters())
    assert interp.head.weight.grad is not None


@pytest.mark.parametrize("seed", [0, 1])
def test_posthoc_fit_leaves_a_batchnorm_dropout_predictor_bit_identical(data, seed):
    x, y = data
    f = SmallLeNet(batch_norm=True, dropout=0.5, seed=seed).train()
    f.features[0].weight.requires_grad_(False)  # the user's own flags come back as they were
    snap = snapshot(f)
    with torch.no_grad():
        before = f.eval()(x)
    f.train()
    interp = Interpreter(f, "features", 5, x[:4], posthoc=True, seed=seed)
    psi_before = [p.clone() for p in interp.psi.parameters()]
    interp.eval()
    assert f.training  # post-hoc: the interpreter's modes do not touch the predictor
    fit(interp, (x, y), epochs=2, batch_size=8, seed=seed)
    assert_same(f, snap)
    with torch.no_grad():
        assert torch.equal(f.eval()(x), before)
    assert any(not torch.equal(a, b) for a, b in zip(psi_before, interp.psi.parameters()))
    assert not interp.training


def test_posthoc_optimizer_with_predictor_parameters_is_refused(data):
    x, y = data
    f = SmallLeNet()
    interp = Interpreter(f, "features", 5, x[:4], posthoc=True)
    with pytest.raises(ValueError, match="never changes the predictor"):
        fit(interp, (x, y), 1, optimizer=torch.optim.Adam(interp.parameters()))


def test_fit_is_seeded_and_restores_rng_and_mode(data):
    x, y = data
    runs = []
    for _ in range(2):
        interp = Interpreter(SmallLeNet(seed=0), "features", 5, x[:4]).eval()
        state = torch.random.get_rng_state()
        history = fit(interp, (x, y), 3, batch_size=8, seed=5)
        assert torch.equal(state, torch.random.get_rng_state())
        assert not interp.training
        runs.append((history.terms["total"], [p.detach().clone() for p in interp.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert history.factors == [paper_schedule(3)(e) for e in range(3)]
    assert len(history.seconds) == 3 and "epochs" in str(history)


def test_fit_needs_labels_in_joint_mode(data):
    x, _ = data
    interp = Interpreter(SmallLeNet(), "features", 5, x[:4])
    with pytest.raises(ValueError, match="needs labels"):
        fit(interp, (x,), 1)
    with pytest.raises(ValueError, match="schedule"):
        fit(interp, (x,), 1, schedule="warmup")


# ---------------------------------------------------------------- Captum integration

@pytest.mark.parametrize("posthoc", [False, True])
def test_layer_pair_attribution_onto_the_attribute_dictionary(data, posthoc):
    x, _ = data
    f = SmallLeNet(dropout=0.0)
    interp = Interpreter(f, "features", 4, x[:4], posthoc=posthoc).eval()
    lp = LayerPairAttribution(interp, "model.features.0", "psi", IntegratedGradients)
    A = lp.attribute(x[:3], n_steps=200)
    assert A.shape == (3, 4, 16, 8, 8)
    # completeness against an independent run: phi(x) - phi(x with the source output set to 0)
    handle = f.features[0].register_forward_hook(lambda m, a, out: torch.zeros_like(out))
    try:
        with torch.no_grad():
            phi0 = interp.attributes(x[:3])
    finally:
        handle.remove()
    with torch.no_grad():
        phi = interp.attributes(x[:3])
    torch.testing.assert_close(A.flatten(2).sum(2), phi - phi0, atol=2e-3, rtol=2e-3)
    assert hooks_on(interp) == 0


def test_latent_scores_and_plain_captum_methods_work_on_psi(data):
    x, _ = data
    interp = Interpreter(SmallLeNet(dropout=0.0), "features", 4, x[:4]).eval()
    lp = LayerPairAttribution(interp, "model.features.0", "psi", "InputXGradient")
    D = DisentanglementScore(lp).score(x[:5])
    assert D.shape == (5,) and torch.isfinite(D).all()
    grad = Saliency(interp.attributes).attribute(x[:2].clone().requires_grad_(True), target=1)
    assert grad.shape == (2, 1, 8, 8)
