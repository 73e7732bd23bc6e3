"""Our ablation accounting (``attr/_ablation.py``) equals Captum's run for each unit (``vectorize="loop"``)."""
import pytest
import torch
from captum.attr import FeatureAblation, FeaturePermutation, Occlusion, ShapleyValues, ShapleyValueSampling

from captum_layerpair import LayerPairAttribution
from captum_layerpair.attr import _ablation, _strategies
from captum_layerpair.models import SmallResNet

SOURCE, TARGET = "layer1.1.conv1", "layer1.2"  # source [4, 8, 8] inside a residual block, K = 8
N = 3
SHAPE = (4, 8, 8)
GEN = torch.Generator().manual_seed(3)
CHANNELS = torch.arange(4).view(1, 4, 1, 1).expand(1, *SHAPE).contiguous()
QUADRANTS = (torch.arange(4).view(2, 2).repeat_interleave(4, 0).repeat_interleave(4, 1)).expand(1, *SHAPE).contiguous()
PER_EXAMPLE = torch.randint(0, 6, (N, *SHAPE), generator=GEN)
BASELINE_1 = torch.randn(1, *SHAPE, generator=GEN)
BASELINE_N = torch.randn(N, *SHAPE, generator=GEN)

CASES = {
    "FA-default-mask": (FeatureAblation, {}),
    "FA-channels-baseline": (FeatureAblation, {"feature_mask": CHANNELS, "baselines": BASELINE_1}),
    "FA-per-example-mask": (FeatureAblation, {"feature_mask": PER_EXAMPLE, "baselines": 0.5}),
    "FA-per-example-baseline": (FeatureAblation, {"feature_mask": QUADRANTS, "baselines": BASELINE_N}),
    "FA-broadcast-mask-ppe3": (FeatureAblation, {"feature_mask": torch.tensor([0, 1, 1, 2]).view(1, 4, 1, 1),
                                                 "perturbations_per_eval": 3}),
    "Occlusion-overlapping": (Occlusion, {"sliding_window_shapes": (2, 3, 3), "strides": (1, 2, 2),
                                          "baselines": BASELINE_1}),
    "Occlusion-tiles": (Occlusion, {"sliding_window_shapes": (4, 4, 4), "strides": (4, 4, 4)}),
    "Occlusion-cut-off-windows": (Occlusion, {"sliding_window_shapes": (4, 3, 3), "strides": 2,
                                              "perturbations_per_eval": 5}),
    "FeaturePermutation": (FeaturePermutation, {"feature_mask": QUADRANTS}),
    "FeaturePermutation-per-example": (FeaturePermutation, {"feature_mask": PER_EXAMPLE}),
    "ShapleyValueSampling": (ShapleyValueSampling, {"feature_mask": CHANNELS, "n_samples": 3,
                                                    "baselines": BASELINE_N}),
    "ShapleyValueSampling-per-example": (ShapleyValueSampling, {"feature_mask": PER_EXAMPLE % 3, "n_samples": 2,
                                                                "perturbations_per_eval": 4}),
    "ShapleyValues": (ShapleyValues, {"feature_mask": CHANNELS % 3}),
}


@pytest.fixture(scope="module")
def setup():
    model = SmallResNet(widths=(4, 4, 8), embed_dim=3).eval()
    return model, torch.randn(N, 3, 8, 8, generator=GEN)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def seeded(lp, x, **kwargs):
    torch.manual_seed(1)
    return lp.attribute(x, **kwargs)


@pytest.fixture
def engine_calls(monkeypatch):
    """How often our accounting answered (not ``None``) in the calls made during a test."""
    answered = []
    original = _strategies.ablation_attributions

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        answered.append(result is not None)
        return result

    monkeypatch.setattr(_strategies, "ablation_attributions", spy)
    return answered


@pytest.mark.parametrize("name", CASES)
def test_ablation_accounting_equals_captum_per_unit(setup, engine_calls, name):
    model, x = setup
    method, kwargs = CASES[name]
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=method, method_kwargs=kwargs)
    fast = seeded(lp, x)
    assert engine_calls == [True]
    loop = seeded(lp, x, vectorize="loop")
    assert fast.shape == loop.shape == (N, 8, *SHAPE) and fast.dtype == loop.dtype
    assert loop.abs().max() > 0
    assert rel_err(fast, loop) < 1e-6


@pytest.mark.parametrize("name", ["FA-channels-baseline", "Occlusion-overlapping", "ShapleyValueSampling"])
def test_perturbations_per_eval_does_not_change_the_result(setup, name):
    model, x = setup
    method, kwargs = CASES[name]
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=method, method_kwargs=kwargs)
    default = seeded(lp, x)
    for ppe in (1, 2, 7):
        assert rel_err(seeded(lp, x, perturbations_per_eval=ppe), default) < 1e-6


def test_feature_ablation_equals_hand_written_differences_in_float64(setup):
    model, x = setup
    model = SmallResNet(widths=(4, 4, 8), embed_dim=3).double().eval()
    x = x.double()
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=FeatureAblation)
    A = lp.attribute(x, feature_mask=PER_EXAMPLE, baselines=BASELINE_N.double())
    a = lp.source_activations(x)
    source, target = model.get_submodule(SOURCE), model.get_submodule(TARGET)

    def g(value):  # the sub-network by hand: replace the source output, read the target summed over positions
        store = {}
        h1 = source.register_forward_hook(lambda m, i, o: value)
        h2 = target.register_forward_hook(lambda m, i, o: store.setdefault("t", o))
        with torch.no_grad():
            model(x)
        h1.remove(), h2.remove()
        return store["t"].sum((2, 3))

    base = g(a)
    expected = torch.zeros_like(A)
    for f in PER_EXAMPLE.unique():
        chosen = PER_EXAMPLE == f
        diff = base - g(torch.where(chosen, BASELINE_N.double(), a))  # [N, K]
        expected += chosen[:, None] * diff[:, :, None, None, None]
    assert A.dtype == torch.float64
    assert rel_err(A, expected) < 1e-12


def test_calls_it_does_not_cover_fall_back_to_captum(setup, engine_calls):
    model, x = setup
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=FeatureAblation)
    fast = lp.attribute(x, feature_mask=CHANNELS, show_progress=False, some_captum_option=None)
    assert engine_calls == [False]
    assert rel_err(fast, lp.attribute(x, feature_mask=CHANNELS, vectorize="loop")) < 1e-6


def test_default_batch_size_follows_the_memory_budget(setup, monkeypatch):
    model, x = setup
    sizes = []
    original = _ablation._Evaluator.__call__

    def spy(self, rows):
        sizes.append(rows.shape[0])
        return original(self, rows)

    monkeypatch.setattr(_ablation._Evaluator, "__call__", spy)
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=FeatureAblation)
    monkeypatch.setattr(_ablation, "ABLATION_BATCH_BYTES", 10 * N * 4 * 8 * 8 * 4)
    lp.attribute(x)  # 256 one-element features, 10 per forward
    assert sizes[0] == 1 and max(sizes[1:]) == 10 and sum(sizes[1:]) == 256
