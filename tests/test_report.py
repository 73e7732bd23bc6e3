"""build_report: the numbers in scores.json are the layer-pair quantities computed independently, the page is
self-contained, runs are reproducible, and user mistakes come back as one-line UserInputErrors."""
import base64
import json
import re
from types import SimpleNamespace

import pytest
import torch

from captum_layerpair import LayerPairAttribution, _report_figures, _report_sections, aggregate
from captum_layerpair import report as report_module
from captum_layerpair._report_kwargs import input_baselines_tensor
from captum_layerpair._report_sections import attribute_pair, memory_errors, report_noise, source_layout
from captum_layerpair._user_model import UserInputError
from captum_layerpair.metrics import SCORES, DisentanglementScore, InformativenessScore, ScoreSummary
from captum_layerpair.models import ConvEncoder
from captum_layerpair.report import build_report
from captum_layerpair.sanity import ModelParameterRandomization
from captum_layerpair.visualization import plot_layer_pair_matrix

N = 6  # two batches of 4 and 2: the matrix must be the mean over inputs, not a mean of batch means


def _model():
    return ConvEncoder(embed_dim=3, image_size=8, seed=0).eval()


def _inputs():
    return torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _build(out_dir, model=None, **kwargs):
    options = dict(sources=["conv2", "conv3"], target="embed", method="InputXGradient", out_dir=out_dir,
                   batch_size=4, n_map_samples=2, n_randomization_samples=3, show_progress=False)
    return build_report(model or _model(), _inputs(), **{**options, **kwargs})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("report"))


def test_report_writes_pngs_scores_json_and_html(report):
    names = sorted(p.name for p in report.out_dir.iterdir())
    expected = [f"{s}__embed_{kind}.png" for s in ("conv2", "conv3") for kind in ("maps", "matrix", "randomization")]
    assert names == sorted(expected + ["report.html", "scores.json", "scores_disentanglement.png",
                                       "scores_informativeness.png"])
    assert sorted(p.name for p in report.figures) == sorted(n for n in names if n.endswith(".png"))
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in report.figures)


def test_matrix_and_maps_equal_an_independent_aggregation(report):
    summary = json.loads(report.scores_json.read_text())
    for pair, entry in zip(report.pairs, summary["layer_pairs"]):
        A = LayerPairAttribution(_model(), pair.source, "embed", "InputXGradient").attribute(_inputs())
        expected = aggregate(A, "abs", over="space").mean(0)
        torch.testing.assert_close(torch.tensor(entry["matrix"]), expected, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(pair.maps, aggregate(A[:2], "abs", over="channels"), rtol=1e-5, atol=1e-7)
        assert entry["source_shape"] == list(A.shape[2:]) and entry["n_units"] == 3


def test_scores_come_with_both_baselines_and_match_the_metric(report):
    entry = json.loads(report.scores_json.read_text())["layer_pairs"][1]
    info = entry["scores"]["informativeness"]
    assert list(info)[0] == "calibrated"  # the calibrated score is shown first: I / I_null per sample
    ratio = torch.tensor(info["model"]["values"]) / torch.tensor(info["null"]["values"])
    torch.testing.assert_close(torch.tensor(info["calibrated"]["values"]), ratio, rtol=1e-4, atol=1e-6)
    for name in ("informativeness", "disentanglement"):
        conditions = entry["scores"][name]
        assert set(conditions) - {"calibrated", "calibrated_random_model"} == {"model", "random_model", "null"}
        for stats in conditions.values():
            assert stats["n"] == N and stats["mean"] == pytest.approx(sum(stats["values"]) / N, abs=1e-5)
    lp = LayerPairAttribution(_model(), "conv3", "embed", "InputXGradient")
    expected = DisentanglementScore(lp).score(_inputs())  # no noise involved: deterministic
    torch.testing.assert_close(torch.tensor(entry["scores"]["disentanglement"]["model"]["values"]), expected.float(),
                               rtol=1e-4, atol=1e-6)


def test_randomization_curve_is_the_cascading_check(report):
    entry = json.loads(report.scores_json.read_text())["layer_pairs"][0]["randomization"]
    lp = LayerPairAttribution(_model(), "conv2", "embed", "InputXGradient")
    expected = ModelParameterRandomization(lp, order="cascading", show_progress=False).evaluate(_inputs()[:3])
    assert entry["layer_names"] == expected.layer_names == ["embed", "conv3", "conv2", "conv1"]
    for measure in ("spearman_abs", "ssim"):
        torch.testing.assert_close(torch.tensor(entry["similarity"][measure]), expected.similarity[measure].float(),
                                   rtol=1e-4, atol=1e-5)
    conv3 = json.loads(report.scores_json.read_text())["layer_pairs"][1]["randomization"]
    assert set(conv3["similarity"]) == {"spearman_abs", "cosine"}  # 2x2 maps are too small for SSIM


def test_html_embeds_every_figure_and_loads_nothing_from_outside(report):
    page = report.html.read_text(encoding="utf-8")
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert sorted(base64.b64decode(data) for data in embedded) == sorted(p.read_bytes() for p in report.figures)
    assert "<script" not in page and not re.search(r'(src|href)="(?!data:)', page)
    assert "conv2 -&gt; embed" in page and "random model" in page and "InputXGradient" in page


def test_report_is_reproducible_and_leaves_the_global_rng_alone(tmp_path, report):
    model = _model()  # seeds the global RNG itself
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    again = _build(tmp_path, model)
    assert torch.equal(torch.rand(3), expected_next)
    assert again.scores_json.read_text() == report.scores_json.read_text()


def test_a_one_dimensional_source_gets_a_matrix_and_feature_maps(tmp_path):
    """A flat source [N, F] (fingerprints, a Linear layer): the matrix is K x F and the maps are |A| per feature."""
    result = _build(tmp_path, sources=["flatten"], randomization=False)
    pair = result.pairs[0]
    A = LayerPairAttribution(_model(), "flatten", "embed", "InputXGradient").attribute(_inputs())
    torch.testing.assert_close(pair.maps, A[:2].abs(), rtol=1e-5, atol=1e-7)
    assert set(pair.figures) == {"matrix", "maps"} and pair.layout == "flat"
    assert pair.matrix.shape == (3, 16 * 2 * 2) and set(pair.scores) == {"informativeness", "disentanglement"}


def test_scores_and_randomization_can_be_skipped(tmp_path):
    result = _build(tmp_path, sources=["conv3"], scores=False, randomization=False)
    entry = result.summary["layer_pairs"][0]
    assert entry["scores"] == {} and entry["randomization"] is None
    assert sorted(p.name for p in result.figures) == ["conv3__embed_maps.png", "conv3__embed_matrix.png"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(sources=["conv7"]), r"unknown source layer 'conv7'.*Did you mean"),
    (dict(method="Saliencyy"), r"unknown method 'Saliencyy'.*Did you mean: Saliency"),
    (dict(sources=["embed"], target="conv3"), "source"),
    (dict(method="IntegratedGradients", attribute_kwargs={"n_step": 4}), "unexpected keyword argument 'n_step'"),
    (dict(inputs=torch.rand(2, 1, 12, 12)), r"inputs of shape \[1, 1, 12, 12\] do not fit the model"),
    (dict(inputs=torch.ones(2, 1, 8, 8, dtype=torch.long)), "float tensor"),
    (dict(inputs=torch.full((2, 1, 8, 8), float("nan"))), "NaN"),
    (dict(sources=[]), "at least one source"),
])
def test_user_mistakes_raise_one_line_errors(tmp_path, kwargs, match):
    inputs = kwargs.pop("inputs", _inputs())
    with pytest.raises(UserInputError, match=match) as info:
        build_report(_model(), inputs, **{**dict(sources=["conv3"], target="embed", method="InputXGradient",
                                                 out_dir=tmp_path, show_progress=False), **kwargs})
    assert "\n" not in str(info.value)


def test_an_output_path_below_a_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserInputError, match="cannot create the output directory"):
        _build(blocker / "report")


def _global_states():
    import random

    import numpy as np
    return torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_seeded_report_ignores_and_restores_the_callers_global_rngs(tmp_path):
    """GradientShap draws from NumPy: scores.json must not depend on the caller's torch/NumPy/Python seeds."""
    import random

    import numpy as np
    texts = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        np.random.seed(caller_seed)
        random.seed(caller_seed)
        before = _global_states()
        report = _build(tmp_path / str(caller_seed), sources=["conv2"], method="GradientShap", seed=5,
                        attribute_kwargs={"n_samples": 3, "input_baselines": 0.0}, randomization=False)
        after = _global_states()
        assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
        texts.append(report.scores_json.read_text())
    assert texts[0] == texts[1]  # bit-identical scores.json


# ---- issue 16: scale, integer inputs, layouts, honest noise -------------------------------------------------------

def test_data_equal_to_the_callers_seed_0_noise_is_not_scored_as_noise(tmp_path):
    """The scores' noise comes from a private generator: data made with torch.manual_seed(0); torch.rand(...) is
    not the report's noise, so its informativeness is not exactly 0 (it was, when the noise used the seeded
    global RNG)."""
    torch.manual_seed(0)
    data = torch.rand(4, 1, 8, 8)
    result = build_report(_model(), data, sources=["conv2"], target="embed", method="InputXGradient",
                          out_dir=tmp_path, randomization=False, batch_size=4, seed=0)
    values = torch.tensor(result.summary["layer_pairs"][0]["scores"]["informativeness"]["model"]["values"])
    assert (values > 0.01).all(), values


def test_report_noise_is_private_seeded_and_token_aware():
    x = torch.rand(3, 1, 8, 8)
    before = torch.random.get_rng_state()
    first, again = report_noise(x, seed=0)(x), report_noise(x, seed=0)(x)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global stream is not used
    assert torch.equal(first, again) and not torch.equal(first, report_noise(x, seed=1)(x))
    torch.manual_seed(0)
    assert not torch.equal(first, torch.rand(x.shape))
    assert first.dtype == x.dtype and 0 <= first.min() and first.max() < 1
    ids = torch.tensor([[3, 9, 17], [5, 3, 4]])
    noise = report_noise(ids, seed=0)(ids.repeat(200, 1))
    assert noise.dtype == ids.dtype and noise.shape == (400, 3)
    assert set(noise.unique().tolist()) == set(range(3, 18))  # uniform ids in the observed range [3, 17]


def test_every_attribution_of_the_report_gets_its_target_batch_size_and_progress(tmp_path, monkeypatch, capsys):
    calls = []
    original = LayerPairAttribution.attribute

    def spy(self, inputs, *args, **kwargs):
        calls.append((kwargs.get("target_batch_size"), kwargs.get("show_progress"), kwargs.get("target")))
        return original(self, inputs, *args, **kwargs)
    monkeypatch.setattr(LayerPairAttribution, "attribute", spy)
    _build(tmp_path, sources=["conv3"], target_batch_size=2, show_progress=True)
    preflight, work = calls[0], calls[1:]
    assert preflight == (2, False, [0])  # one unit on two inputs, silently
    assert len(work) > 10 and all(call == (2, True, None) for call in work)
    err = capsys.readouterr().err
    assert "LayerPair InputXGradient" in err and "3/3" in err and "unit" in err  # a bar over the K = 3 units


def test_default_batch_sizes_bound_the_memory():
    import inspect

    defaults = inspect.signature(build_report).parameters
    assert defaults["batch_size"].default == 16 and defaults["target_batch_size"].default == 8


def test_per_channel_input_baselines_are_broadcast_over_the_input(tmp_path):
    result = _build(tmp_path, sources=["conv3"], method="IntegratedGradients", scores=False, randomization=False,
                    attribute_kwargs={"n_steps": 4, "input_baselines": [0.25]})
    lp = LayerPairAttribution(_model(), "conv3", "embed", "IntegratedGradients")
    A = lp.attribute(_inputs(), n_steps=4, input_baselines=torch.full((1, 1, 8, 8), 0.25))
    torch.testing.assert_close(result.pairs[0].matrix, aggregate(A, "abs", over="space").mean(0), rtol=1e-4,
                               atol=1e-6)
    assert result.summary["attribute_kwargs"]["input_baselines"] == [0.25]  # as given, not expanded


def test_input_baselines_lists_become_tensors_of_one_input():
    rgb = torch.rand(5, 3, 4, 4)
    per_channel = input_baselines_tensor([0.1, 0.2, 0.3], rgb)
    assert per_channel.shape == (1, 3, 4, 4)
    torch.testing.assert_close(per_channel[0, :, 2, 1], torch.tensor([0.1, 0.2, 0.3]))
    full = torch.rand(3, 4, 4)
    torch.testing.assert_close(input_baselines_tensor(full.tolist(), rgb), full[None])
    assert input_baselines_tensor(0.5, rgb) == 0.5
    for bad in ([0.1, 0.2], [[0.1]], "black", {"r": 0}):
        with pytest.raises(UserInputError, match="input_baselines must be"):
            input_baselines_tensor(bad, rgb)


class _Wide(torch.nn.Module):
    """A conv encoder with a 64-d embedding on 8x8 inputs."""

    def __init__(self):
        super().__init__()
        self.encoder = ConvEncoder(embed_dim=64, image_size=8, seed=0)
        self.conv2 = self.encoder.conv2

    def forward(self, x):
        return self.encoder(x)


def _png_size(path):
    header = path.read_bytes()[16:24]
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


@pytest.mark.parametrize("max_map_units, pages", [(64, 8), (16, 2)])
def test_unit_maps_of_64_units_come_in_readable_pages_ordered_by_mass(tmp_path, max_map_units, pages):
    result = build_report(_Wide().eval(), _inputs()[:4], sources=["encoder.conv2"], target="encoder.embed",
                          method="InputXGradient", out_dir=tmp_path, scores=False, randomization=False,
                          n_map_samples=2, max_map_units=max_map_units)
    pair = result.pairs[0]
    assert pair.n_units == 64
    order = torch.argsort(pair.unit_mass, descending=True, stable=True)
    assert pair.map_units == order[:max_map_units].tolist()
    names = [pair.figures[f"maps_{i}"] for i in range(1, pages + 1)]
    assert sorted(k for k in pair.figures if k.startswith("maps")) == sorted(f"maps_{i}" for i in range(1, pages + 1))
    for name in names:  # 8 maps and the input per row: each map >= 100 px wide in the 1100 px wide page
        width, height = _png_size(tmp_path / name)
        assert width <= 1700 and 1100 * (1.5 * 110) / width >= 100
    page = result.html.read_text(encoding="utf-8")
    assert page.count("_maps_") == 2 * pages and "decreasing attribution mass" in page


class _Sequence(torch.nn.Module):
    """[N, 2, 10] sequences -> Conv1d -> Conv1d -> a 3-d embedding."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv1d(2, 4, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv1d(4, 4, 3, padding=1)
        self.flatten = torch.nn.Flatten()
        self.embed = torch.nn.Linear(40, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)

    def forward(self, x):
        return self.embed(self.flatten(self.conv2(self.act(self.conv1(x)))))


def test_a_sequence_source_gets_one_dimensional_maps_over_positions(tmp_path):
    x = torch.rand(5, 2, 10, generator=torch.Generator().manual_seed(2))
    result = build_report(_Sequence().eval(), x, sources=["conv2"], target="embed", method="InputXGradient",
                          out_dir=tmp_path, n_map_samples=2, n_randomization_samples=3)
    pair = result.pairs[0]
    A = LayerPairAttribution(_Sequence().eval(), "conv2", "embed", "InputXGradient").attribute(x)
    torch.testing.assert_close(pair.maps, aggregate(A[:2], "abs", over="channels"), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(pair.matrix, aggregate(A, "abs", over="space").mean(0), rtol=1e-5, atol=1e-7)
    assert pair.layout == "channels_first" and pair.position_label == "position"
    assert set(pair.figures) == {"matrix", "maps", "randomization"}
    assert set(pair.randomization.similarity) == {"spearman_abs", "cosine"}


class _StubPair:
    """What attribute_pair needs of a layer pair, with fixed attributions and a token layout on the source."""

    def __init__(self, A, layout):
        self.A = A
        self.source = SimpleNamespace(name="emb", layout=layout)
        self.target = SimpleNamespace(name="embed")
        self.method = SimpleNamespace(name="Saliency")
        self.seen = 0

    def attribute(self, batch, **kwargs):
        part = self.A[self.seen:self.seen + len(batch)]
        self.seen += len(batch)
        return part


def test_a_channels_last_token_source_is_read_and_labelled_from_its_layout(tmp_path, monkeypatch):
    A = torch.randn(5, 3, 7, 4)  # [N, K, L tokens, D features]
    pair = attribute_pair(_StubPair(A, "channels_last"), list(torch.zeros(5, 1).split(2)), {}, n_maps=2)
    torch.testing.assert_close(pair.matrix, A.abs().sum(2).mean(0))  # [K, D]: features, summed over tokens
    torch.testing.assert_close(pair.maps, A[:2].abs().sum(3))  # [n, K, L]: tokens, summed over features
    assert pair.source_shape == (7, 4) and pair.channel_label == "token feature"
    assert pair.position_label == "token position"
    labels = {}

    def spy(*args, **kwargs):
        labels["matrix"] = kwargs["column_label"]
        return plot_layer_pair_matrix(*args, **kwargs)
    monkeypatch.setattr(_report_figures, "plot_layer_pair_matrix", spy)
    _report_figures.pair_figures(pair, None, tmp_path, max_map_units=64)
    assert labels["matrix"] == "token feature" and set(pair.figures) == {"matrix", "maps"}
    assert "token positions" in _report_figures.caption(pair, "maps")
    first = attribute_pair(_StubPair(A, "channels_first"), [torch.zeros(5, 1)], {}, n_maps=2)
    assert first.channel_label == "source channel" and first.matrix.shape == (3, 7)


def test_layer_pairs_without_a_layout_attribute_are_channels_first():
    lp = LayerPairAttribution(_model(), "conv3", "embed", "InputXGradient")
    assert source_layout(lp, 3) == getattr(lp.source, "layout", "channels_first")
    assert source_layout(lp, 1) == "flat"


def test_nan_attributions_and_running_out_of_memory_are_one_line_errors():
    A = torch.randn(2, 3, 4)
    A[0, 1, 2] = float("nan")
    with pytest.raises(UserInputError, match="1 NaN or inf attributions"):
        attribute_pair(_StubPair(A, "channels_first"), [torch.zeros(2, 1)], {}, n_maps=1)
    with pytest.raises(UserInputError, match="lower --batch-size or --target-batch-size"):
        with memory_errors(16, 8):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    with pytest.raises(RuntimeError, match="something else"):
        with memory_errors(16, 8):
            raise RuntimeError("something else")


class _FakeScore:
    """A registered score without a noise option, whose summary has a calibrated form."""

    name = "fake"
    description = "a score for the test"

    def __init__(self, layer_pair):
        self.layer_pair = layer_pair

    def evaluate(self, batches, random_model, null, seed, show_progress, **kwargs):
        def summary(mean):
            return ScoreSummary("fake", mean, 0.0, torch.full((N,), mean))
        result = summary(0.5)
        result.random_model, result.null = summary(0.25), summary(0.125)
        result.calibrated = summary(2.0)
        return result


def test_scores_come_from_the_registry_and_a_calibrated_score_is_shown_first(tmp_path, monkeypatch):
    monkeypatch.setitem(SCORES, "fake", _FakeScore)
    result = _build(tmp_path, sources=["conv3"], randomization=False)
    scores = result.summary["layer_pairs"][0]["scores"]
    assert list(scores) == [*[name for name in SCORES if name != "fake"], "fake"]
    assert list(scores["fake"]) == ["calibrated", "model", "random_model", "null"]  # its random model: uncalibrated
    assert scores["fake"]["calibrated"]["mean"] == 2.0 and scores["fake"]["null"]["mean"] == 0.125
    assert list(scores["informativeness"]) == ["calibrated", "calibrated_random_model", "model", "random_model",
                                               "null"]
    page = result.html.read_text(encoding="utf-8")
    assert ("<th>score</th><th>calibrated</th><th>calibrated, random model</th><th>trained model</th>"
            in page)
    assert "a score for the test" in page and (tmp_path / "scores_fake.png").exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(target_batch_size=0), "target_batch_size must be a positive int or None"),
    (dict(max_map_units=2.5), "max_map_units must be a positive int"),
    (dict(attribute_kwargs={"target": 1}), "'target' is not allowed in a report"),
    (dict(attribute_kwargs={"n_steps": 0}, method="IntegratedGradients"), "n_steps must be a positive int"),
    (dict(attribute_kwargs={"baselines": float("nan")}), "baselines is nan"),
    (dict(method="NoiseTunnel"), "wraps another attribution method"),
])
def test_argument_mistakes_are_one_line_user_errors(tmp_path, kwargs, match):
    with pytest.raises(UserInputError, match=match) as info:
        _build(tmp_path, **kwargs)
    assert "\n" not in str(info.value)


def test_a_model_that_only_takes_single_inputs_is_refused_before_any_work(tmp_path):
    class OneAtATime(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = _model()
            self.conv3 = self.encoder.conv3

        def forward(self, x):
            return self.encoder(x).view(3)
    with pytest.raises(UserInputError, match="runs on one input but not on a batch of two"):
        _build(tmp_path / "out", model=OneAtATime(), sources=["conv3"], target="encoder.embed")
    assert not (tmp_path / "out").exists()


class _Tokens(torch.nn.Module):
    """Token ids [N, 9] in 0 .. 11 -> Embedding -> Conv1d -> a 3-d embedding."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Embedding(12, 4)
        self.conv = torch.nn.Conv1d(4, 5, 3, padding=1)
        self.flatten = torch.nn.Flatten()
        self.embed = torch.nn.Linear(45, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)

    def forward(self, ids):
        return self.embed(self.flatten(self.conv(self.emb(ids).transpose(1, 2))))


def _ids():
    return torch.randint(2, 10, (5, 9), generator=torch.Generator().manual_seed(3))


def _scores_take_integer_inputs() -> bool:
    lp = LayerPairAttribution(_Tokens().eval(), "conv", "embed", "Saliency")
    try:
        InformativenessScore(lp, noise=lambda x: x.flip(0)).score(_ids())
    except Exception:  # the metrics side refuses integer inputs (or has no score() any more): skip, see the reason
        return False
    return True


def test_integer_token_ids_get_maps_matrix_and_randomisation(tmp_path):
    result = build_report(_Tokens().eval(), _ids(), sources=["conv"], target="embed", method="IntegratedGradients",
                          attribute_kwargs={"n_steps": 4, "input_baselines": 0}, out_dir=tmp_path, scores=False,
                          n_randomization_samples=3, n_map_samples=2)
    pair = result.pairs[0]
    lp = LayerPairAttribution(_Tokens().eval(), "conv", "embed", "IntegratedGradients")
    A = lp.attribute(_ids(), n_steps=4, input_baselines=0)
    torch.testing.assert_close(pair.matrix, aggregate(A, "abs", over="space").mean(0), rtol=1e-4, atol=1e-6)
    assert pair.maps.shape == (2, 3, 9) and result.summary["inputs"]["dtype"] == "int64"
    assert pair.randomization.layer_names == ["embed", "conv", "emb"]


@pytest.mark.skipif(not _scores_take_integer_inputs(), reason="the scores do not take integer inputs yet (the "
                    "metrics side of issue 16)")
def test_integer_token_ids_are_scored_against_random_ids_in_the_observed_range(tmp_path, monkeypatch):
    drawn = []
    original = _report_sections.report_noise

    def recording(inputs, seed):
        noise = original(inputs, seed)

        def draw(x):
            drawn.append(noise(x))
            return drawn[-1]
        return draw
    monkeypatch.setattr(_report_sections, "report_noise", recording)
    monkeypatch.setattr(report_module, "report_noise", recording)
    result = build_report(_Tokens().eval(), _ids(), sources=["conv"], target="embed", method="Saliency",
                          out_dir=tmp_path, randomization=False)
    assert drawn and all(d.dtype == torch.int64 and d.min() >= 2 and d.max() <= 9 for d in drawn)
    scores = result.summary["layer_pairs"][0]["scores"]
    assert set(scores) == set(SCORES) and all(s["model"]["n"] == 5 for s in scores.values())
