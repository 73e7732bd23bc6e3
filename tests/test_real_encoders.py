"""Layers of real encoders (SPEC section 2, issue 10): tuple outputs with selectors, channels-last token layers,
token reductions, in-place operations after the source, DeepLift / GuidedBackprop around frozen or
non-differentiable prefixes, and a 1-D FeatureAblation.

Every value is checked in float64 against an independent computation: per-unit ``torch.autograd.grad`` on a
hand-written sub-network, Captum's method on that sub-network, or Captum's own ``Neuron*`` methods where the
source is the model input.
"""
import copy
import time

import pytest
import torch
from captum.attr import (DeepLift, FeatureAblation, GuidedBackprop, InputXGradient, IntegratedGradients,
                         LayerDeepLift, LayerGradientXActivation, LayerIntegratedGradients, NeuronGradient,
                         NeuronIntegratedGradients, NoiseTunnel, Saliency)
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from captum_layerpair import LayerPairAttribution, aggregate
from captum_layerpair._hooks import capture_layers
from captum_layerpair.layers import Layer, LayerPair, reduce_target, resolve_layer
from captum_layerpair.sequence_models import GRUEncoder, SequenceTransformer, TinyViT, TransformerBlock

CAPTUM_ATTRIBUTES = ("input", "output", "input_ref")


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def per_unit_gradients(g, a):
    """Independent reference: one autograd call per unit of ``g(a) [N, K]``; ``[N, K, *a.shape[1:]]``."""
    a = a.detach().clone().requires_grad_()
    out = g(a)
    return torch.stack([torch.autograd.grad(out[:, k].sum(), a, retain_graph=True)[0] for k in range(out.shape[1])], 1)


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def leftover_attributes(model):
    return [(name, attr) for name, m in model.named_modules() for attr in CAPTUM_ATTRIBUTES if attr in m.__dict__]


class UnitFunction(nn.Module):
    """A hand-written sub-network ``a -> [N, K]`` as a module (so Captum's DeepLift can hook its layers)."""

    def __init__(self, body, reduce, **modules):
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self.body, self.reduce = body, reduce

    def forward(self, a, *args):
        return self.reduce(self.body(a, *args))


# ---------------------------------------------------------------- a tiny ViT: tuple selector, channels-last tokens

@pytest.fixture(scope="module")
def vit():
    return TinyViT(image_size=8, patch_size=4, dim=8, depth=2, heads=2, embed_dim=3).double().eval()


def vit_tokens(vit, x):
    tokens = vit.tokenize(x)
    return torch.cat([vit.cls.expand(len(tokens), -1, -1), tokens], 1) + vit.pos


def vit_after_attention(vit, x, a):
    """Hand-written: the rest of block 0 after its attention output ``a`` (residual keeps x's tokens), block 1."""
    block = vit.blocks[0]
    t = vit_tokens(vit, x) + a
    t = t + block.mlp(block.ln2(t))
    return vit.blocks[1](t)  # [N, L, D]


def vit_attention_output(vit, x):
    block = vit.blocks[0]
    h = block.ln1(vit_tokens(vit, x))
    return block.attn(h, h, h, need_weights=False)[0].detach()


@pytest.mark.parametrize("reduction, reduce", [
    ("sum", lambda T: T.sum(1)), ("mean", lambda T: T.mean(1)), ("first_token", lambda T: T[:, 0]),
    ("last_token", lambda T: T[:, -1]),
])
def test_attention_tuple_selector_and_channels_last_target_match_hand_written_autograd(vit, reduction, reduce):
    x = torch.randn(3, 3, 8, 8, dtype=torch.double)
    a = vit_attention_output(vit, x)
    grads = per_unit_gradients(lambda v: reduce(vit_after_attention(vit, x, v)), a)
    lp = LayerPairAttribution(vit, "blocks.0.attn[0]", "blocks.1", method=InputXGradient,
                              target_reduction=reduction, source_layout="channels_last",
                              target_layout="channels_last")
    A = lp.attribute(x)
    assert A.shape == (3, 8, 5, 8)  # K = D = 8 units, source [L = 5 tokens, D = 8]
    assert rel_err(A, grads * a[:, None]) < 1e-5
    saliency = LayerPairAttribution(vit, ("blocks.0.attn", lambda out: out[0]), "blocks.1", method=Saliency,
                                    target_reduction=reduction, target_layout="channels_last")
    assert rel_err(saliency.attribute(x, abs=False), grads) < 1e-5


def test_integrated_gradients_and_layer_methods_through_a_selected_attention_output(vit):
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    a = vit_attention_output(vit, x)
    g = UnitFunction(lambda v, inputs: vit_after_attention(vit, inputs, v), lambda T: T[:, 0])
    lp = LayerPairAttribution(vit, "blocks.0.attn[0]", "blocks.1", method=IntegratedGradients,
                              target_reduction="first_token", target_layout="channels_last")
    A, delta = lp.attribute(x, n_steps=20, return_convergence_delta=True)
    for k in range(8):
        ref, ref_delta = IntegratedGradients(g).attribute(a, target=k, n_steps=20, additional_forward_args=x,
                                                          return_convergence_delta=True)
        assert rel_err(A[:, k], ref) < 1e-5 and torch.allclose(delta[:, k], ref_delta, atol=1e-8)
    # a Captum layer method reads the selected tensor itself (gradient x activation at the layer)
    grads = per_unit_gradients(lambda v: g(v, x), a)
    L = LayerPairAttribution(vit, "blocks.0.attn[0]", "blocks.1", method=LayerGradientXActivation,
                             target_reduction="first_token", target_layout="channels_last").attribute(x)
    assert rel_err(L, grads * a[:, None]) < 1e-5


def test_channels_last_sum_gives_one_unit_per_feature_and_channels_first_one_per_token(vit):
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    last = LayerPairAttribution(vit, "blocks.0", "blocks.1", method=Saliency, target_layout="channels_last")
    first = LayerPairAttribution(vit, "blocks.0", "blocks.1", method=Saliency)
    assert last.target_units(x) == 8 and first.target_units(x) == 5
    T = torch.randn(2, 5, 8, dtype=torch.double)
    assert torch.equal(reduce_target(T, "sum", "channels_last"), T.sum(1))
    assert torch.equal(reduce_target(T, "first_token", "channels_last"), T[:, 0])
    assert torch.equal(reduce_target(T, "last_token", "channels_first"), T[:, :, -1])
    assert torch.equal(reduce_target(T, "none", "channels_last"), T.flatten(1))  # natural order, any layout


def test_aggregate_channels_last_gives_per_token_maps_and_a_unit_by_feature_matrix():
    A = torch.randn(2, 3, 5, 4)  # [N, K, L, D]
    maps = aggregate(A, "abs", "channels", layout="channels_last")
    matrix = aggregate(A, "square", "space", layout="channels_last")
    assert maps.shape == (2, 3, 5) and matrix.shape == (2, 3, 4)
    for n in range(2):
        for k in range(3):
            for position in range(5):
                assert torch.isclose(maps[n, k, position], sum(A[n, k, position, d].abs() for d in range(4)))
            for d in range(4):
                assert torch.isclose(matrix[n, k, d], sum(A[n, k, position, d] ** 2 for position in range(5)))
    # a channels-last image source [N, K, H, W, C]: maps [N, K, H, W], matrix [N, K, C]
    B = torch.randn(2, 3, 4, 5, 6)
    assert torch.allclose(aggregate(B, "abs", "channels", "channels_last"), aggregate(B.movedim(-1, 2), "abs"))
    assert torch.allclose(aggregate(B, "abs", "space", "channels_last"), aggregate(B.movedim(-1, 2), "abs", "space"))
    with pytest.raises(ValueError, match="unknown layout"):
        aggregate(A, layout="tokens")


# ---------------------------------------------------------------- GRU: tuple output, Captum's Neuron* methods

@pytest.fixture(scope="module")
def gru():
    return GRUEncoder(in_features=4, hidden=6, embed_dim=3).double().eval()


def test_gru_output_selected_as_source_and_target_matches_hand_written_autograd(gru):
    x = torch.randn(3, 7, 4, dtype=torch.double)
    a = gru.proj(x).detach()
    grads = per_unit_gradients(lambda v: gru.gru(v)[0][:, -1], a)
    A = LayerPairAttribution(gru, "proj", "gru[0]", method=Saliency, target_reduction="last_token",
                             target_layout="channels_last").attribute(x, abs=False)
    assert rel_err(A, grads) < 1e-5
    outputs = gru.gru(a)[0].detach()
    grads = per_unit_gradients(lambda v: gru.embed(v[:, -1]), outputs)
    for source in ("gru[0]", ("gru", 0), ("gru", lambda out: out[0]), Layer("gru", gru.gru, 0)):
        A = LayerPairAttribution(gru, source, "embed", method=InputXGradient).attribute(x)
        assert rel_err(A, grads * outputs[:, None]) < 1e-5


@pytest.mark.parametrize("ours, neuron, kwargs", [
    (Saliency, NeuronGradient, {}),
    (IntegratedGradients, NeuronIntegratedGradients, {"n_steps": 16}),
])
def test_source_at_the_input_equals_captum_neuron_methods(gru, ours, neuron, kwargs):
    x = torch.randn(2, 5, 4, dtype=torch.double)
    lp = LayerPairAttribution(gru, "proj", "gru[0]", method=ours, target_reduction="last_token",
                              target_layout="channels_last")
    extra = {"abs": False} if ours is Saliency else {"baselines": torch.zeros_like(x)}
    A = lp.attribute(x, attribute_to_source_input=True, **kwargs, **extra)
    for k in range(6):
        ref = neuron(gru, gru.gru).attribute(x, neuron_selector=lambda out, k=k: out[0][:, -1, k], **kwargs)
        assert rel_err(A[:, k], ref) < 1e-5


# ---------------------------------------------------------------- in-place operations after the source

IN_PLACE = {
    "+=": lambda h: h.__iadd__(1.0),
    "mul_": lambda h: h.mul_(2.0),
    "relu_": lambda h: h.relu_(),
    "ReLU(inplace=True)": nn.ReLU(inplace=True),
}
REFERENCE = {"+=": lambda h: h + 1.0, "mul_": lambda h: h * 2.0, "relu_": torch.relu, "ReLU(inplace=True)": torch.relu}


class InPlaceAfterSource(nn.Module):
    """``h = src(x)``; a branch reads ``h``; then ``h`` is changed in place; the target reads both."""

    def __init__(self, op):
        super().__init__()
        torch.manual_seed(0)
        self.src, self.branch, self.tgt = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.op = op

    def forward(self, x):
        h = self.src(x)
        skip = torch.tanh(self.branch(h))
        h = self.op(h)
        return self.tgt(skip + h)


@pytest.mark.parametrize("op", list(IN_PLACE))
@pytest.mark.parametrize("method", [InputXGradient, IntegratedGradients, LayerGradientXActivation,
                                    LayerIntegratedGradients])
def test_in_place_operations_after_the_source_match_hand_written_reference(op, method):
    model = InPlaceAfterSource(IN_PLACE[op]).double()
    x = torch.randn(4, 4, dtype=torch.double)
    a = model.src(x).detach()
    g = UnitFunction(lambda v: model.tgt(torch.tanh(model.branch(v)) + REFERENCE[op](v)), lambda T: T)
    lp = LayerPairAttribution(model, "src", "tgt", method=method)
    if method is InputXGradient or method is LayerGradientXActivation:
        expected = per_unit_gradients(g, a) * a[:, None]
        A = lp.attribute(x)
    elif method is IntegratedGradients:
        expected = torch.stack([IntegratedGradients(g).attribute(a, target=k, n_steps=16) for k in range(3)], 1)
        A = lp.attribute(x, n_steps=16)
    else:  # interpolation in input space: the layer's value at scaled inputs, as Captum's LayerIG per unit
        expected = torch.stack([LayerIntegratedGradients(
            lambda inp, k=k: g(model.src(inp))[:, k], model.src).attribute(x, n_steps=16) for k in range(3)], 1)
        A = lp.attribute(x, n_steps=16)
    assert rel_err(A, expected) < 1e-5
    assert torch.equal(lp.source_activations(x), a)


def test_layer_method_attributing_to_the_source_input_equals_captum_on_the_layer_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(3, 4, dtype=torch.double)
    ours = LayerPairAttribution(model, "2", "4", method=LayerIntegratedGradients).attribute(
        x, attribute_to_source_input=True, n_steps=8)
    for k in range(3):
        ref = LayerIntegratedGradients(lambda inp, k=k: model(inp)[:, k], model[2]).attribute(
            x, attribute_to_layer_input=True, n_steps=8)
        assert rel_err(ours[:, k], ref) < 1e-5


def test_source_input_changed_in_place_by_the_source_itself_is_read_before():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(inplace=True), nn.Linear(5, 3)).double()
    x = torch.randn(3, 4, dtype=torch.double)
    a = model[0](x).detach()  # the ReLU's input, which the in-place ReLU overwrites
    expected = per_unit_gradients(lambda v: model[2](torch.relu(v)), a) * a[:, None]
    A = LayerPairAttribution(model, "1", "2", method=InputXGradient).attribute(x, attribute_to_source_input=True)
    assert rel_err(A, expected) < 1e-5


# ---------------------------------------------------------------- DeepLift / GuidedBackprop around the prefix

class FrozenBackbone(nn.Module):
    """A frozen backbone (starting with a Sigmoid on inputs without gradient), a head, and a ReLU on a path
    that skips the source."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.backbone = nn.Sequential(nn.Sigmoid(), nn.Conv2d(1, 3, 3, padding=1), nn.ReLU())
        self.source = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.skip = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.target = nn.Conv2d(4, 2, 3, padding=1)
        self.tail = nn.Tanh()
        self.backbone.requires_grad_(False)
        self.skip.requires_grad_(False)

    def forward(self, x):
        h = self.backbone(x)
        return self.tail(self.target(self.act(self.source(h)) + self.skip(h)))


def frozen_backbone_reference(model, x):
    with torch.no_grad():
        h = model.backbone(x)
        a, skip = model.source(h), model.skip(h)
    g = UnitFunction(lambda v, s: model.target(model.act(v) + s), lambda T: T.sum(dim=(2, 3)), act=model.act)
    return a, skip, g


@pytest.mark.parametrize("method", [DeepLift, GuidedBackprop])
def test_module_hooking_methods_around_a_frozen_non_differentiable_prefix_match_captum_on_the_sub_network(method):
    model = FrozenBackbone().double().eval()
    x = torch.randn(3, 1, 6, 6, dtype=torch.double)
    a, skip, g = frozen_backbone_reference(model, x)
    A = LayerPairAttribution(model, "source", "target", method=method).attribute(x)
    for k in range(2):
        assert rel_err(A[:, k], method(g).attribute(a.clone(), target=k, additional_forward_args=skip)) < 1e-5
    assert leftover_attributes(model) == [] and hook_count(model) == 0


class ToUnits(nn.Module):
    """``model(x)``'s target layer output summed over positions, as a module holding the model (for Captum)."""

    def __init__(self, model, target):
        super().__init__()
        self.model, self.target = model, target

    def forward(self, x):
        captured = {}
        handle = self.target.register_forward_hook(lambda m, i, o: captured.setdefault("T", o))
        try:
            self.model(x)
        finally:
            handle.remove()
        return captured["T"].sum(dim=(2, 3))


def test_layer_deeplift_and_noise_tunnel_deeplift_around_a_frozen_backbone():
    model = FrozenBackbone().double().eval()
    x = torch.randn(3, 1, 6, 6, dtype=torch.double)
    ours = LayerPairAttribution(model, "source", "target", method=LayerDeepLift).attribute(x)
    # Captum's own LayerDeepLift cannot run here (its hooks before the layer need inputs with gradients):
    # the reference runs on a copy with every parameter and the input requiring gradients (same values)
    unfrozen = copy.deepcopy(model).requires_grad_(True)
    reference = LayerDeepLift(ToUnits(unfrozen, unfrozen.target), unfrozen.source)
    for k in range(2):
        assert rel_err(ours[:, k], reference.attribute(x.clone().requires_grad_(), target=k)) < 1e-5
    assert leftover_attributes(model) == [] and hook_count(model) == 0
    deeplift = LayerPairAttribution(model, "source", "target", method=DeepLift).attribute(x)
    tunnel = LayerPairAttribution(model, "source", "target", method=lambda f: NoiseTunnel(DeepLift(f)))
    assert rel_err(tunnel.attribute(x, nt_samples=2, stdevs=0.0), deeplift) < 1e-5
    assert leftover_attributes(model) == []


@pytest.mark.parametrize("first", [nn.Sigmoid, nn.ReLU])
@pytest.mark.parametrize("method", [DeepLift, GuidedBackprop])
def test_leading_sigmoid_or_relu_on_inputs_without_gradient(method, first):
    torch.manual_seed(0)
    model = nn.Sequential(first(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x = torch.randn(3, 4, dtype=torch.double)
    a = model[1](model[0](x)).detach()
    g = UnitFunction(lambda v: model[3](model[2](v)), lambda T: T, relu=model[2])
    A = LayerPairAttribution(model, "1", "3", method=method).attribute(x)
    expected = torch.stack([method(g).attribute(a.clone(), target=k) for k in range(3)], 1)
    assert rel_err(A, expected) < 1e-5
    assert leftover_attributes(model) == []


class RaiseOnCall(nn.Module):
    """Identity that raises on its ``k``-th call while armed."""

    def __init__(self, k):
        super().__init__()
        self.k, self.calls, self.armed = k, 0, True

    def forward(self, x):
        self.calls += 1
        if self.armed and self.calls == self.k:
            raise RuntimeError("boom")
        return x


@pytest.mark.parametrize("where", ["before_source", "after_source"])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("method", [DeepLift, GuidedBackprop, IntegratedGradients])
def test_model_is_clean_after_an_exception_on_the_kth_forward(where, k, method):
    torch.manual_seed(0)
    trap = RaiseOnCall(k)
    layers = [nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 3), nn.Sigmoid()]
    layers.insert(1 if where == "before_source" else 4, trap)
    model = nn.Sequential(*layers).double()
    source, target = ("2", "5") if where == "before_source" else ("0", "5")
    fresh = copy.deepcopy(model)
    fresh[1 if where == "before_source" else 4].armed = False
    x = torch.randn(3, 4, dtype=torch.double)
    lp = LayerPairAttribution(model, source, target, method=method,
                              method_kwargs={"internal_batch_size": 3} if method is IntegratedGradients else None)
    with pytest.raises(RuntimeError, match="boom"):
        lp.attribute(x)
    assert leftover_attributes(model) == [] and hook_count(model) == 0
    assert all(p.requires_grad for p in model.parameters()) and not any(m.training is False for m in model.modules())
    trap.armed = False
    again = lp.attribute(x)
    assert torch.equal(again, LayerPairAttribution(fresh, source, target, method=method,
                                                   method_kwargs=lp.method_kwargs).attribute(x))
    assert leftover_attributes(model) == [] and hook_count(model) == 0


# ---------------------------------------------------------------- 1-D FeatureAblation (one-hot DNA)

def test_feature_ablation_over_single_positions_of_a_conv1d_source_is_fast_and_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 16, 9, padding=4), nn.ReLU(), nn.Conv1d(16, 16, 9, padding=4), nn.ReLU(),
                          nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 16)).eval()
    dna = nn.functional.one_hot(torch.randint(0, 4, (8, 100)), 4).float().transpose(1, 2)  # [8, 4, 100]
    mask = torch.arange(100).expand(1, 16, 100)  # one feature per position, all 16 channels together
    start = time.perf_counter()
    A = LayerPairAttribution(model, "0", "6", method=FeatureAblation).attribute(dna, feature_mask=mask)
    seconds = time.perf_counter() - start
    assert A.shape == (8, 16, 16, 100)
    assert seconds < 30, f"FeatureAblation took {seconds:.1f} s"
    with torch.no_grad():
        a = model[0](dna)
        base = model[1:](a)
        for position in (0, 37, 99):
            ablated = a.clone()
            ablated[:, :, position] = 0
            diff = base - model[1:](ablated)  # [N, K]: each channel of the position carries the group's value
            assert torch.allclose(A[:, :, 0, position], diff, atol=1e-5)
            assert torch.allclose(A[:, :, :, position], diff[:, :, None].expand(8, 16, 16), atol=1e-5)


# ---------------------------------------------------------------- selectors: parsing, errors, copies, capture

def test_layer_names_with_selectors_resolve_and_keep_selector_and_layout_on_copies():
    model = SequenceTransformer(length=6, dim=8, depth=2, embed_dim=3)
    layer = resolve_layer(model, "blocks.1.attn[0]", "source", "channels_last")
    assert (layer.name, layer.module, layer.selector, layer.layout) == (
        "blocks.1.attn", model.blocks[1].attn, 0, "channels_last")
    assert layer.label == "blocks.1.attn[0]"
    assert resolve_layer(model, "blocks.1.attn[-2]", "source").selector == -2
    pair = LayerPair.build(model, "blocks.0.attn[0]", "blocks.1", source_layout="channels_last",
                           target_layout="channels_last", reduction="first_token")
    copied = copy.deepcopy(model)
    on_copy = pair.on(copied)
    assert on_copy.source.module is copied.blocks[0].attn and on_copy.source.selector == 0
    assert (on_copy.source.layout, on_copy.target.layout) == ("channels_last", "channels_last")


@pytest.mark.parametrize("source, error, match", [
    ("gru", TypeError, r"tuple of 2 .*not a single tensor.*'gru\[0\]'"),
    ("gru[2]", ValueError, "index 2 is out of range"),
    ("proj[0]", TypeError, "cannot index"),
    ("gru['h']", TypeError, "cannot index"),
    ("gru[0", ValueError, "unknown source layer"),
    (("gru", lambda out: out[0] * 1), TypeError, "not one of the parts"),
    (("gru", 1.5), TypeError, "selector must be"),
    (("gru[0]", 0), ValueError, "selector in its name and another"),
])
def test_selector_errors_say_what_to_select(gru, source, error, match):
    x = torch.randn(2, 5, 4, dtype=torch.double)
    with pytest.raises(error, match=match):
        LayerPairAttribution(gru, source, "embed", method=Saliency).attribute(x)
    assert hook_count(gru) == 0


def test_layout_and_token_reduction_errors(gru):
    with pytest.raises(ValueError, match="unknown source_layout 'channel_last'.*Did you mean"):
        LayerPairAttribution(gru, "gru[0]", "embed", method=Saliency, source_layout="channel_last")
    with pytest.raises(ValueError, match="token reduction needs a target with positions"):
        LayerPairAttribution(gru, "gru[0]", "embed", method=Saliency, target_reduction="first_token").attribute(
            torch.randn(2, 5, 4, dtype=torch.double))


def test_dict_outputs_are_selected_by_key_and_the_rest_passes_on_unchanged():
    class Head(nn.Module):  # a VAE-style head returning a dict
        def __init__(self):
            super().__init__()
            self.mu, self.logvar = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x):
            return {"mu": self.mu(x), "logvar": self.logvar(x)}

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.head, self.decode = Head(), nn.Linear(3, 2)

        def forward(self, x):
            out = self.head(x)
            return self.decode(out["mu"] * out["logvar"].exp())

    model = VAE().double()
    x = torch.randn(3, 4, dtype=torch.double)
    mu, logvar = model.head.mu(x).detach(), model.head.logvar(x).detach()
    expected = per_unit_gradients(lambda v: model.decode(v * logvar.exp()), mu) * mu[:, None]
    for source in ("head['mu']", "head[mu]", ("head", "mu"), ("head", lambda out: out["mu"])):
        A = LayerPairAttribution(model, source, "decode", method=InputXGradient).attribute(x)
        assert rel_err(A, expected) < 1e-5


def test_capture_layers_honours_selectors_and_copies_values_changed_in_place_later():
    model = InPlaceAfterSource(IN_PLACE["mul_"]).double()
    gru = GRUEncoder(hidden=5).double()
    x = torch.randn(2, 4, dtype=torch.double)
    _, (value,) = capture_layers(model, (x,), [Layer("src", model.src)])
    assert torch.equal(value, model.src(x))  # not the doubled tensor
    s = torch.randn(2, 3, 4, dtype=torch.double)
    _, (outputs,) = capture_layers(gru, (s,), [resolve_layer(gru, "gru[0]", "captured")])
    assert torch.equal(outputs, gru.gru(gru.proj(s))[0])


# ---------------------------------------------------------------- hypothesis: random transformer / GRU stacks

class Stack(nn.Module):
    """``inp`` (linear per token), then transformer blocks and GRUs in the given order, then ``out`` on the last
    token. A GRU returns a tuple: its layer is ``layers.i[0]``."""

    def __init__(self, kinds, dim, heads, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.kinds = kinds
        self.inp = nn.Linear(3, dim)
        self.layers = nn.ModuleList(TransformerBlock(dim, heads) if kind == "transformer" else
                                    nn.GRU(dim, dim, batch_first=True) for kind in kinds)
        self.out = nn.Linear(dim, 2)

    def step(self, i, h):
        return self.layers[i](h) if self.kinds[i] == "transformer" else self.layers[i](h)[0]

    def forward(self, x):
        h = self.inp(x)
        for i in range(len(self.kinds)):
            h = self.step(i, h)
        return self.out(h[:, -1])

    def replaced(self, source, a, target):
        """Hand-written: the target layer's output with the output of layer ``source`` (-1: ``inp``) replaced by
        ``a``; every layer is sequential, so nothing before the source matters."""
        h = a
        for i in range(source + 1, target + 1):
            h = self.step(i, h)
        return h

    def attention_replaced(self, x, block, a, target):
        h = self.inp(x)
        for i in range(block):
            h = self.step(i, h)
        t = h + a
        h = t + self.layers[block].mlp(self.layers[block].ln2(t))
        for i in range(block + 1, target + 1):
            h = self.step(i, h)
        return h


EXPECTED_K = {  # (reduction, target layout) -> K for a [N, L, D] target
    ("sum", "channels_last"): lambda L, D: D, ("mean", "channels_last"): lambda L, D: D,
    ("first_token", "channels_last"): lambda L, D: D, ("last_token", "channels_last"): lambda L, D: D,
    ("sum", "channels_first"): lambda L, D: L, ("first_token", "channels_first"): lambda L, D: L,
    ("none", "channels_last"): lambda L, D: L * D, ("none", "channels_first"): lambda L, D: L * D,
}
REDUCE = {
    ("sum", "channels_last"): lambda T: T.sum(1), ("mean", "channels_last"): lambda T: T.mean(1),
    ("first_token", "channels_last"): lambda T: T[:, 0], ("last_token", "channels_last"): lambda T: T[:, -1],
    ("sum", "channels_first"): lambda T: T.sum(2), ("first_token", "channels_first"): lambda T: T[:, :, 0],
    ("none", "channels_last"): lambda T: T.flatten(1), ("none", "channels_first"): lambda T: T.flatten(1),
}


@given(st.data())
def test_random_transformer_and_gru_stacks_give_channels_last_shapes_and_exact_gradients(data):
    kinds = tuple(data.draw(st.lists(st.sampled_from(["transformer", "gru"]), min_size=1, max_size=3), "kinds"))
    heads = data.draw(st.sampled_from([1, 2]), "heads")
    dim = heads * data.draw(st.integers(2, 3), "dim per head")
    length, batch = data.draw(st.integers(2, 5), "length"), data.draw(st.integers(1, 3), "batch")
    net = Stack(kinds, dim, heads, data.draw(st.integers(0, 1000), "seed")).double().eval()
    x = torch.randn(batch, length, 3, dtype=torch.double)

    sources = [("inp", (-1, None))]
    for i, kind in enumerate(kinds):
        if kind == "transformer":
            sources += [(f"layers.{i}", (i, None)), (f"layers.{i}.attn[0]", (i, "attn"))]
        else:
            sources += [(f"layers.{i}[0]", (i, None)), ((f"layers.{i}", lambda out: out[0]), (i, None))]
    source_name, (where, part) = data.draw(st.sampled_from(sources), "source")
    target = data.draw(st.integers(max(where, 0) if part == "attn" else where + 1, len(kinds) - 1)
                       if (part == "attn" or where + 1 <= len(kinds) - 1) else st.nothing(), "target")
    target_name = f"layers.{target}" if kinds[target] == "transformer" else f"layers.{target}[0]"
    reduction, layout = data.draw(st.sampled_from(sorted(EXPECTED_K)), "reduction, target layout")
    method = data.draw(st.sampled_from([Saliency, LayerGradientXActivation]), "method")

    lp = LayerPairAttribution(net, source_name, target_name, method=method, target_reduction=reduction,
                              source_layout="channels_last", target_layout=layout)
    A = lp.attribute(x, **({"abs": False} if method is Saliency else {}))
    K = EXPECTED_K[(reduction, layout)](length, dim)
    assert A.shape == (batch, K, length, dim)
    assert aggregate(A, "abs", "channels", lp.source.layout).shape == (batch, K, length)
    assert aggregate(A, "abs", "space", lp.source.layout).shape == (batch, K, dim)

    value = lp.source_activations(x)
    if part == "attn":
        g = lambda v: REDUCE[(reduction, layout)](net.attention_replaced(x, where, v, target))  # noqa: E731
    else:
        g = lambda v: REDUCE[(reduction, layout)](net.replaced(where, v, target))  # noqa: E731
    expected = per_unit_gradients(g, value) * (1 if method is Saliency else value[:, None])
    assert rel_err(A, expected) < 1e-5
    assert hook_count(net) == 0
