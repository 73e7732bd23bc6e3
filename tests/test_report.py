"""build_report: the numbers in scores.json are the layer-pair quantities computed independently, the page is
self-contained, runs are reproducible, and user mistakes come back as one-line UserInputErrors."""
import base64
import json
import re

import pytest
import torch

from captum_layerpair import LayerPairAttribution, aggregate
from captum_layerpair._user_model import UserInputError
from captum_layerpair.metrics import DisentanglementScore
from captum_layerpair.models import ConvEncoder
from captum_layerpair.report import build_report
from captum_layerpair.sanity import ModelParameterRandomization

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
    for name in ("informativeness", "disentanglement"):
        conditions = entry["scores"][name]
        assert set(conditions) == {"model", "random_model", "null"}
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
