"""Hypothesis: properties of layer-pair attributions over random small architectures (SPEC section 5).

Random conv/linear stacks with and without residual blocks, random widths, depths, inputs and source/target pairs,
in float64. The sub-network ``g_x`` is re-implemented here with plain forward hooks, independently of the engine.
Run deeper with ``LAYERPAIR_HYPOTHESIS_PROFILE=deep``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import (DeepLift, FeatureAblation, GradientShap, GuidedBackprop, InputXGradient, IntegratedGradients,
                         Saliency)
from hypothesis import event, given, note
from hypothesis import strategies as st
from torch import nn

from captum_layerpair import LayerPairAttribution
from captum_layerpair.sanity import ModelParameterRandomization

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class Arch:
    """A random architecture: conv stem, conv or residual blocks, flatten, hidden linears, embedding, output."""

    in_channels: int
    side: int
    blocks: tuple[int, ...]  # a width for a conv + activation, 0 for a residual block keeping the width
    hidden: tuple[int, ...]
    embed: int
    activation: str
    batch: int
    seed: int


class ResBlock(nn.Module):
    """``act2(conv2(act1(conv1(x))) + x)``."""

    def __init__(self, channels: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act1 = activation()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act2 = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.conv2(self.act1(self.conv1(x))) + x)


class RandomNet(nn.Module):
    """Built from an ``Arch``; ``out`` runs after ``embed`` so every target has a parameterised module after it."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        torch.manual_seed(arch.seed)
        act = ACTIVATIONS[arch.activation]
        self.body = nn.Sequential()
        channels = arch.in_channels
        for i, width in enumerate(arch.blocks):
            if width:
                self.body.add_module(f"conv{i}", nn.Conv2d(channels, width, 3, padding=1))
                self.body.add_module(f"act{i}", act())
                channels = width
            else:
                self.body.add_module(f"res{i}", ResBlock(channels, act))
        self.flatten = nn.Flatten()
        self.head = nn.Sequential()
        features = channels * arch.side ** 2
        for i, width in enumerate(arch.hidden):
            self.head.add_module(f"linear{i}", nn.Linear(features, width))
            self.head.add_module(f"act{i}", act())
            features = width
        self.embed = nn.Linear(features, arch.embed)
        self.out = nn.Linear(arch.embed, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(self.head(self.flatten(self.body(x)))))


@st.composite
def architectures(draw: st.DrawFn, activations: tuple[str, ...] = ("relu", "tanh")) -> Arch:
    return Arch(
        in_channels=draw(st.integers(1, 2)),
        side=draw(st.integers(3, 5)),
        blocks=tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3]), min_size=1, max_size=3))),
        hidden=tuple(draw(st.lists(st.integers(2, 5), max_size=2))),
        embed=draw(st.integers(1, 3)),
        activation=draw(st.sampled_from(activations)),
        batch=draw(st.integers(1, 3)),
        seed=draw(st.integers(0, 2 ** 16)),
    )


def build(arch: Arch) -> tuple[RandomNet, torch.Tensor, list[str]]:
    """The model (float64, eval), an input batch, and its modules in the order their forward passes complete."""
    model = RandomNet(arch).double().eval()
    x = torch.randn(arch.batch, arch.in_channels, arch.side, arch.side, dtype=torch.float64)
    done: list[str] = []
    modules = {name: m for name, m in model.named_modules() if name and not isinstance(m, nn.Sequential)}
    handles = [m.register_forward_hook(lambda *_, name=name: done.append(name)) for name, m in modules.items()]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return model, x, done[:-1]  # "out" is never a source or target


def draw_pair(data: st.DataObject, order: list[str]) -> tuple[str, str]:
    i = data.draw(st.integers(0, len(order) - 2), label="source index")
    j = data.draw(st.integers(i + 1, len(order) - 1), label="target index")
    return order[i], order[j]


def own_parameters(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def scramble(module: nn.Module, seed: int) -> None:
    """New random values for the module's own parameters (certain to differ from the old ones)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in own_parameters(module):
            param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype))


class _Stop(Exception):
    pass


def run_substituted(model: nn.Module, x: torch.Tensor, source: str, target: str, a: torch.Tensor,
                    watch: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The target output with the source output replaced by ``a``, and the output of module ``watch``."""
    seen: dict[str, torch.Tensor] = {}

    def on_target(module, args, out):
        seen["target"] = out
        raise _Stop

    handles = [model.get_submodule(source).register_forward_hook(lambda *_: a),
               model.get_submodule(target).register_forward_hook(on_target)]
    if watch is not None:
        handles.append(model.get_submodule(watch).register_forward_hook(
            lambda module, args, out: seen.__setitem__("watch", out)))
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return seen["target"], seen.get("watch")


def g(model: nn.Module, x: torch.Tensor, source: str, target: str, a: torch.Tensor) -> torch.Tensor:
    """The sub-network ``g_x(a) -> [N, K]`` with ``target_reduction="sum"``."""
    T, _ = run_substituted(model, x, source, target, a)
    return T.flatten(2).sum(2) if T.dim() > 2 else T


def source_value(model: nn.Module, x: torch.Tensor, source: str) -> torch.Tensor:
    seen = []
    handle = model.get_submodule(source).register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0].detach()


def path_gradient(model: nn.Module, x: torch.Tensor, source: str, target: str, module: str, a: torch.Tensor,
                  r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of ``sum_k r_k g_k`` w.r.t. ``a``: the part through paths via ``module``, and the whole.

    With ``v = d(r.g)/d out_m``, the part through ``module`` is ``d <v, out_m> / d a`` (``v`` held fixed): zero
    exactly when no live path runs from the source through the module to the target.
    """
    a = a.clone().requires_grad_()
    T, out_m = run_substituted(model, x, source, target, a, watch=module)
    units = T.flatten(2).sum(2) if T.dim() > 2 else T
    score = (units * r).sum()
    (total,) = torch.autograd.grad(score, a, retain_graph=True)
    (v,) = torch.autograd.grad(score, out_m, retain_graph=True)
    (through,) = torch.autograd.grad((v.detach() * out_m).sum(), a, allow_unused=True)
    return (torch.zeros_like(a) if through is None else through), total


PLAIN_METHODS = {
    "Saliency": (Saliency, {"abs": False}),
    "InputXGradient": (InputXGradient, {}),
    "IntegratedGradients": (IntegratedGradients, {"n_steps": 4}),
    "DeepLift": (DeepLift, {}),
    "GuidedBackprop": (GuidedBackprop, {}),
    "FeatureAblation": (FeatureAblation, {}),
    "GradientShap": (GradientShap, {"n_samples": 3, "stdevs": 0.1}),
}


def attribute(model: nn.Module, source: str, target: str, method: str, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """``LayerPairAttribution(model, source, target, method, **init).attribute(x, **kwargs)``, seeded."""
    cls, defaults = PLAIN_METHODS[method]
    lp = LayerPairAttribution(model, source, target, method=cls, **kwargs.pop("init", {}))
    if method == "GradientShap":
        kwargs.setdefault("baselines", torch.zeros_like(source_value(model, x, source)[:1]))
    torch.manual_seed(0)  # the same draws for stochastic methods (Captum's GradientShap draws from NumPy)
    np.random.seed(0)
    return lp.attribute(x, **defaults, **kwargs)


@given(architectures(), st.sampled_from(sorted(PLAIN_METHODS)), st.booleans(), st.data())
def test_parameters_after_the_target_never_change_the_attribution(arch, method, stop_at_target, data):
    model, x, order = build(arch)
    source, target = draw_pair(data, order)
    before = attribute(model, source, target, method, x, init={"stop_at_target": stop_at_target})
    later = [name for name in order[order.index(target) + 1:] if own_parameters(model.get_submodule(name))]
    for i, name in enumerate([*later, "out"]):
        scramble(model.get_submodule(name), arch.seed + i)
    after = attribute(model, source, target, method, x, init={"stop_at_target": stop_at_target})
    assert torch.equal(before, after)


@given(architectures(), st.sampled_from(["Saliency", "InputXGradient", "IntegratedGradients"]), st.data())
def test_reinitialising_a_module_between_source_and_target_changes_gradient_attributions(arch, method, data):
    model, x, order = build(arch)
    inner = [i for i, name in enumerate(order[1:-1], 1) if own_parameters(model.get_submodule(name))]
    if not inner:
        event("no parameterised module can sit between a source and a target")
        return
    m = data.draw(st.sampled_from(inner), label="re-initialised module index")
    source, module = order[data.draw(st.integers(0, m - 1), label="source index")], order[m]
    target = order[data.draw(st.integers(m + 1, len(order) - 1), label="target index")]
    a = source_value(model, x, source)
    r = torch.randn(g(model, x, source, target, a).shape[1], dtype=torch.float64)
    weight = torch.ones_like(a) if method == "Saliency" else a  # what the method multiplies the gradient by
    live = []
    before = attribute(model, source, target, method, x)
    for step in ("trained", "re-initialised"):
        if step == "re-initialised":
            scramble(model.get_submodule(module), arch.seed)
        through, total = path_gradient(model, x, source, target, module, a, r)
        live.append(bool((weight * through).abs().max() > 1e-3 * (weight * total).abs().max()))
    after = attribute(model, source, target, method, x)
    note(f"source={source} module={module} target={target} live={live}")
    if not any(live):
        event("degenerate: no live path through the module")  # e.g. dead ReLUs around it, or a == 0
        return
    scale = torch.maximum(before.abs().max(), after.abs().max())
    assert (after - before).abs().max() > 1e-6 * scale


def completeness_case(arch: Arch, baseline: str, data: st.DataObject,
                      method: type) -> tuple[LayerPairAttribution, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random layer pair with ``method``, the inputs, a zero or random source baseline ``b`` and the
    independently computed ``g(a) - g(b)`` ``[N, K]``."""
    model, x, order = build(arch)
    source, target = draw_pair(data, order)
    a = source_value(model, x, source)
    b = torch.zeros_like(a) if baseline == "zeros" else torch.randn(a.shape, dtype=a.dtype)
    with torch.no_grad():
        difference = g(model, x, source, target, a) - g(model, x, source, target, b)
    return LayerPairAttribution(model, source, target, method=method), x, b, difference


@given(architectures(), st.sampled_from(["zeros", "random"]), st.data())
def test_integrated_gradients_completeness_per_unit_against_the_subnetwork(arch, baseline, data):
    lp, x, b, difference = completeness_case(arch, baseline, data, IntegratedGradients)
    A, delta = lp.attribute(x, baselines=b, n_steps=64, return_convergence_delta=True)
    assert delta.shape == difference.shape
    torch.testing.assert_close(A.flatten(2).sum(2), difference + delta, rtol=1e-7, atol=1e-9)
    if arch.activation == "tanh":  # smooth: the Riemann sum converges, so the delta itself is small
        assert delta.abs().max() <= 1e-3 * (1 + difference.abs().max())


@given(architectures(), st.sampled_from(["zeros", "random"]), st.data())
def test_deeplift_sums_to_the_difference_from_the_baseline(arch, baseline, data):
    lp, x, b, difference = completeness_case(arch, baseline, data, DeepLift)
    A, delta = lp.attribute(x, baselines=b, return_convergence_delta=True)
    torch.testing.assert_close(A.flatten(2).sum(2), difference, rtol=1e-6, atol=1e-8)
    assert delta.abs().max() <= 1e-6 * (1 + difference.abs().max())


@given(architectures(), st.sampled_from(["Saliency", "InputXGradient", "IntegratedGradients", "DeepLift",
                                         "FeatureAblation", "GradientShap"]), st.data())
def test_sum_reduction_equals_sum_of_per_position_attributions(arch, method, data):
    model, x, order = build(arch)
    source, target = draw_pair(data, order)
    summed = attribute(model, source, target, method, x)  # [N, C, *S]
    per_position = attribute(model, source, target, method, x, init={"target_reduction": "none"})  # [N, C*P, *S]
    n, channels = summed.shape[:2]
    torch.testing.assert_close(per_position.reshape(n, channels, -1, *summed.shape[2:]).sum(2), summed,
                               rtol=1e-7, atol=1e-10)


class LinearStack(nn.Module):
    """``stem -> tanh`` (the source), then only linear maps: 1x1 / 3x3 convolutions, identity-skip convolutions
    ``conv(x) + x``, and optionally ``flatten -> linear`` layers."""

    def __init__(self, in_channels: int, widths: list[int], kernels: list[int], skips: list[bool],
                 linears: list[int], side: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.act = nn.Tanh()
        self.convs = nn.ModuleList(nn.Conv2d(c, w, k, padding=k // 2)
                                   for c, w, k in zip(widths[:-1], widths[1:], kernels))
        self.skips = skips
        self.flatten = nn.Flatten()
        sizes = [widths[-1] * side * side, *linears]
        self.linears = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        for conv, skip in zip(self.convs, self.skips):
            x = conv(x) + x if skip else conv(x)
        x = self.flatten(x)
        for linear in self.linears:
            x = linear(x)
        return x


def conv_matrix(conv: nn.Conv2d, side: int) -> torch.Tensor:
    """The stride-1, 'same'-padded convolution as a matrix ``[C_out*side*side, C_in*side*side]``, built entry by
    entry from its kernel (cross-correlation, zero padding)."""
    weight = conv.weight.detach()
    c_out, c_in, k, _ = weight.shape
    M = torch.zeros(c_out, side, side, c_in, side, side, dtype=weight.dtype)
    for i in range(side):
        for j in range(side):
            for di in range(k):
                for dj in range(k):
                    p, q = i + di - k // 2, j + dj - k // 2
                    if 0 <= p < side and 0 <= q < side:
                        M[:, i, j, :, p, q] = weight[:, :, di, dj]
    return M.reshape(c_out * side * side, c_in * side * side)


@st.composite
def linear_stacks(draw: st.DrawFn) -> tuple[LinearStack, torch.Tensor, int]:
    depth = draw(st.integers(1, 3))
    widths = [draw(st.integers(1, 3)) for _ in range(depth + 1)]
    kernels = [draw(st.sampled_from([1, 3])) for _ in range(depth)]
    skips = [draw(st.booleans()) and w_in == w_out for w_in, w_out in zip(widths[:-1], widths[1:])]
    linears = draw(st.lists(st.integers(1, 4), max_size=2))
    side = draw(st.integers(2, 4))
    torch.manual_seed(draw(st.integers(0, 2 ** 16)))
    model = LinearStack(1, widths, kernels, skips, linears, side).double().eval()
    x = torch.randn(draw(st.integers(1, 3)), 1, side, side, dtype=torch.float64)
    return model, x, side


@given(linear_stacks(), st.sampled_from(["sum", "none"]), st.data())
def test_linear_network_gradient_x_input_is_weight_product_times_activation(stack, reduction, data):
    model, x, side = stack
    layers = [f"convs.{i}" for i in range(len(model.convs))] + [f"linears.{i}" for i in range(len(model.linears))]
    target = data.draw(st.sampled_from(layers), label="target")
    product = torch.eye(model.stem.out_channels * side * side, dtype=torch.float64)
    for name in layers[:layers.index(target) + 1]:
        layer = model.get_submodule(name)
        if isinstance(layer, nn.Conv2d):
            step = conv_matrix(layer, side)
            if model.skips[int(name[-1])] and name != target:  # the skip is added after the module's output
                step = step + torch.eye(len(step), dtype=step.dtype)
            product = step @ product
        else:
            product = layer.weight.detach() @ product
    if reduction == "sum" and target.startswith("convs"):  # one unit per channel: sum its positions' rows
        product = product.reshape(-1, side * side, product.shape[1]).sum(1)
    a = source_value(model, x, "act")  # [N, C, side, side]
    expected = a.flatten(1)[:, None, :] * product[None]  # [N, K, C*side*side]
    lp = LayerPairAttribution(model, "act", target, method=InputXGradient, target_reduction=reduction)
    A = lp.attribute(x)
    torch.testing.assert_close(A.flatten(2), expected, rtol=1e-9, atol=1e-12)
    # Integrated gradients from a zero baseline is the same on a linear map, with any number of steps.
    torch.testing.assert_close(LayerPairAttribution(model, "act", target, method=IntegratedGradients,
                                                    target_reduction=reduction).attribute(x, n_steps=2), A)


@given(architectures(), st.sampled_from(["cascading", "independent"]), st.data())
def test_randomisation_keeps_attributions_until_a_module_before_the_target_changes(arch, order, data):
    model, x, layer_order = build(arch)
    source, target = draw_pair(data, layer_order)
    lp = LayerPairAttribution(model, source, target, method=InputXGradient)
    result = ModelParameterRandomization(lp, order=order, similarity=("spearman", "cosine"),
                                         show_progress=False).evaluate(x, keep_attributions=True)
    full_order = [*layer_order, "out"]
    parameterised = [name for name in full_order if own_parameters(model.get_submodule(name))]
    assert result.layer_names == parameterised[::-1]
    t_source, t_target = full_order.index(source), full_order.index(target)
    expected = ["after_target" if full_order.index(name) > t_target else
                "up_to_source" if full_order.index(name) <= t_source else "between" for name in result.layer_names]
    assert result.positions == expected
    for position, attribution in zip(result.positions, result.randomized):
        if position == "after_target":
            assert torch.equal(attribution, result.original)
    n_after = expected.count("after_target")
    for values in result.similarity.values():
        assert torch.equal(values[:n_after], torch.ones(n_after, dtype=torch.float64))


@given(architectures(), st.sampled_from(["InputXGradient", "GradientShap"]), st.data())
def test_randomisation_per_sample_values_do_not_depend_on_the_batching(arch, method, data):
    """Split the batch anywhere, feed the parts in any order with their dataset indices: every per-sample
    similarity is bit-identical to the one-batch run, for a drawing method (each sample alone, with draws from its
    index) and for a deterministic one with ``batch_invariant=True``."""
    model, x, layer_order = build(arch)
    source, target = draw_pair(data, layer_order)
    cls, kwargs = PLAIN_METHODS[method]
    if method == "GradientShap":
        kwargs = {**kwargs, "baselines": torch.zeros_like(source_value(model, x, source)[:1])}
    lp = LayerPairAttribution(model, source, target, method=cls)
    options = {"similarity": ("spearman", "cosine"), "batch_invariant": method == "InputXGradient"}
    whole = ModelParameterRandomization(lp, **options).evaluate(x, **kwargs)
    split = data.draw(st.integers(0, len(x)), label="split")
    check = ModelParameterRandomization(lp, **options)
    for part in (range(split, len(x)), range(split)):
        if len(part):
            check.update(x[part.start:part.stop], indices=list(part), **kwargs)
    parts = check.compute()
    assert torch.equal(parts.indices, whole.indices)
    for measure, values in whole.per_sample.items():
        assert torch.equal(parts.per_sample[measure], values)
