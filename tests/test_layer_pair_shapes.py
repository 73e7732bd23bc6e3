"""Hypothesis: output shapes over random small architectures, layer pairs, targets and reductions."""
import torch
from captum.attr import FeatureAblation, InputXGradient, IntegratedGradients
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from captum_layerpair import LayerPairAttribution, aggregate


def build(widths, residual):
    """A conv stack; with ``residual`` each same-width conv gets a skip connection around it."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths[:-1], widths[1:]))
            self.acts = nn.ModuleList(nn.ReLU() for _ in widths[1:])

        def forward(self, x):
            for conv, act in zip(self.convs, self.acts):
                y = act(conv(x))
                x = y + x if residual and y.shape == x.shape else y
            return x

    return Net().eval()


@st.composite
def case(draw):
    depth = draw(st.integers(2, 4))
    widths = [draw(st.integers(1, 3))] + [draw(st.integers(1, 4)) for _ in range(depth)]
    model = build(widths, draw(st.booleans()))
    layers = [f"convs.{i}" for i in range(depth)] + [f"acts.{i}" for i in range(depth)]
    order = sorted(layers, key=lambda name: (int(name.split(".")[1]), name.startswith("acts")))
    i = draw(st.integers(0, len(order) - 2))
    j = draw(st.integers(i + 1, len(order) - 1))
    source, target = order[i], order[j]
    src_channels, tgt_channels = widths[int(source.split(".")[1]) + 1], widths[int(target.split(".")[1]) + 1]
    reduction = draw(st.sampled_from(["sum", "mean", "none"]))
    side = draw(st.integers(2, 4))
    n_units = tgt_channels if reduction != "none" else tgt_channels * side * side
    target_kind = draw(st.sampled_from(["all", "int", "list"]))
    unit_target = {"all": None, "int": draw(st.integers(0, n_units - 1)),
                   "list": draw(st.lists(st.integers(0, n_units - 1), min_size=1, max_size=3))}[target_kind]
    x = torch.randn(draw(st.integers(1, 3)), widths[0], side, side)
    return model, source, target, reduction, unit_target, x, (src_channels, side, side), n_units


@given(case(), st.sampled_from([InputXGradient, IntegratedGradients, FeatureAblation]))
def test_shapes_follow_the_target_argument(data, method):
    model, source, target, reduction, unit_target, x, source_shape, n_units = data
    lp = LayerPairAttribution(model, source, target, method=method, target_reduction=reduction,
                              method_kwargs={"n_steps": 3} if method is IntegratedGradients else None)
    A = lp.attribute(x, target=unit_target)
    n = x.shape[0]
    if unit_target is None:
        assert A.shape == (n, n_units, *source_shape)
        assert aggregate(A, over="channels").shape == (n, n_units, *source_shape[1:])
        assert aggregate(A, over="space").shape == (n, n_units, source_shape[0])
    elif isinstance(unit_target, int):
        assert A.shape == (n, *source_shape)
    else:
        assert A.shape == (n, len(unit_target), *source_shape)
    assert torch.isfinite(A).all()
