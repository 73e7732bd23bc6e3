"""The ``captum-layerpair`` console script end to end (subprocesses), and its error paths: exit code 2 with one
line on stderr and no traceback for every user mistake."""
import inspect
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from captum_layerpair import LayerPairAttribution
from captum_layerpair.cli import build_parser, main
from captum_layerpair.demo import default_encoder, digits

USER_MODEL = """
import torch
from torch import nn
from captum_layerpair.models import ConvEncoder


def make():
    return ConvEncoder(embed_dim=8, image_size=16, seed=None)


def needs_arguments(width):
    return ConvEncoder()


class Tokens(nn.Module):
    # token ids [N, 12] in 0 .. 19 -> a 4-d embedding, through a Conv1d over the positions

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 6)
        self.conv = nn.Conv1d(6, 5, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten()
        self.embed = nn.Linear(5, 4)

    def forward(self, ids):
        return self.embed(self.flatten(self.pool(self.conv(self.emb(ids).transpose(1, 2)))))
"""


def _run(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "captum_layerpair", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's project: a model module, a checkpoint, an inputs file, and files that are not what they claim."""
    path = tmp_path_factory.mktemp("project")
    (path / "mymodel.py").write_text(USER_MODEL)
    torch.save(default_encoder().state_dict(), path / "encoder.pt")
    images, labels = digits("test")
    torch.save((images[:10], labels[:10]), path / "inputs.pt")
    torch.save(images[:4, :, :8], path / "cropped.pt")
    torch.save({"model": torch.nn.Linear(2, 2)}, path / "pickled_module.pt")
    (path / "notes.txt").write_text("not a tensor file")
    torch.save(torch.randint(3, 17, (5, 12), generator=torch.Generator().manual_seed(0)), path / "ids.pt")
    return path


def test_demo_writes_the_report_with_progress_on_stderr(tmp_path):
    result = _run(["demo", "--out", "demo_out", "--n-inputs", "12"], tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "demo_out"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted([f"conv{i}__embed_{kind}.png" for i in (1, 2, 3) for kind in ("maps", "matrix",
                                                                                          "randomization")]
                          + ["scores_disentanglement.png", "scores_informativeness.png"])
    summary = json.loads((out / "scores.json").read_text())
    assert [p["source"] for p in summary["layer_pairs"]] == ["conv1", "conv2", "conv3"]
    assert summary["inputs"]["shape"] == [12, 1, 16, 16] and summary["method"] == "IntegratedGradients"
    for pair in summary["layer_pairs"]:
        assert set(pair["scores"]) == {"informativeness", "disentanglement"}
        assert list(pair["scores"]["informativeness"]) == ["calibrated", "calibrated_random_model", "model",
                                                           "random_model", "null"]
        assert pair["randomization"]["layer_names"] == ["embed", "conv3", "conv2", "conv1"]
    assert (out / "report.html").read_text().count("data:image/png;base64,") == len(pngs)
    assert "layer pairs" in result.stderr and "100%" in result.stderr  # tqdm progress bars
    assert "wrote 11 figures" in result.stdout and "conv2 -> embed" in result.stdout


def test_layers_lists_names_types_and_output_shapes(tmp_path):
    result = _run(["layers", "--model", "captum_layerpair.demo:default_encoder", "--input-shape", "1,16,16"],
                  tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["layer", "type", "output", "shape", "parameters"]
    assert ["conv2", "Conv2d", "[N,", "16,", "8,", "8]", "1168"] in rows
    assert ["embed", "Linear", "[N,", "8]", "2056"] in rows


def test_report_on_a_user_model_checkpoint_and_inputs(workdir, tmp_path):
    result = _run(["report", "--model", "mymodel:make", "--checkpoint", str(workdir / "encoder.pt"), "--inputs",
                   str(workdir / "inputs.pt"), "--source", "conv2", "--target", "embed", "--method", "Occlusion",
                   "--method-kwargs", '{"sliding_window_shapes": [16, 2, 2], "strides": [16, 2, 2]}',
                   "--max-inputs", "5", "--no-randomization", "--no-progress", "--threads", "1", "--out",
                   str(tmp_path / "rep")], workdir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --no-progress: nothing on stderr
    summary = json.loads((tmp_path / "rep" / "scores.json").read_text())
    assert summary["method"] == "Occlusion" and summary["inputs"]["shape"] == [5, 1, 16, 16]
    assert summary["attribute_kwargs"] == {"sliding_window_shapes": [16, 2, 2], "strides": [16, 2, 2]}
    assert summary["layer_pairs"][0]["randomization"] is None
    assert sorted(p.name for p in (tmp_path / "rep").glob("*.png")) == [
        "conv2__embed_maps.png", "conv2__embed_matrix.png", "scores_disentanglement.png",
        "scores_informativeness.png"]


@pytest.mark.parametrize("args, message", [
    (["--source", "conv9"], "unknown source layer 'conv9'"),
    (["--inputs", "missing.pt"], "cannot read inputs file 'missing.pt': no such file"),
    (["--method-kwargs", "{n_steps: 4}"], "argument --method-kwargs: not valid JSON"),
])
def test_user_mistakes_exit_2_with_one_line_in_a_real_process(workdir, tmp_path, args, message):
    base = {"--model": "mymodel:make", "--inputs": "inputs.pt", "--source": "conv2", "--target": "embed",
            "--method": "Saliency", "--out": str(tmp_path / "rep")}
    base.update(dict(zip(args[::2], args[1::2])))
    result = _run(["report", *[item for pair in base.items() for item in pair]], workdir)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "rep").exists() or not any((tmp_path / "rep").iterdir())


def test_version_and_help_exit_0(capsys):
    for argv in (["--version"], ["report", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    out = capsys.readouterr().out
    assert "captum-layerpair 0.1.0" in out and "--method-kwargs JSON" in out
    assert "--target-batch-size K" in out and "one number per input channel" in " ".join(out.split())


def test_the_clis_defaults_are_the_reports():
    from captum_layerpair import cli, report

    assert (cli.DEFAULT_BATCH_SIZE, cli.DEFAULT_TARGET_BATCH_SIZE) == (report.DEFAULT_BATCH_SIZE,
                                                                        report.DEFAULT_TARGET_BATCH_SIZE)
    args = build_parser().parse_args(["report", "--model", "m:f", "--inputs", "x.pt", "--source", "a", "--target",
                                      "b", "--method", "Saliency", "--out", "o"])
    assert (args.batch_size, args.target_batch_size) == (16, 8)


def test_layers_and_report_take_integer_token_ids(workdir, tmp_path):
    result = _run(["layers", "--model", "mymodel:Tokens", "--input-shape", "12", "--input-dtype", "int64"], workdir)
    assert result.returncode == 0, result.stderr
    assert ["conv", "Conv1d", "[N,", "5,", "12]", "95"] in [line.split() for line in result.stdout.splitlines()]
    result = _run(["report", "--model", "mymodel:Tokens", "--inputs", "ids.pt", "--source", "conv", "emb",
                   "--target", "embed", "--method", "IntegratedGradients", "--method-kwargs",
                   '{"n_steps": 4, "input_baselines": 0}', "--no-scores", "--no-progress", "--out",
                   str(tmp_path / "rep")], workdir)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "rep" / "scores.json").read_text())
    assert summary["inputs"] == {"description": "ids.pt", "shape": [5, 12], "dtype": "int64"}
    conv = summary["layer_pairs"][0]
    assert conv["source_shape"] == [5, 12] and len(conv["matrix"]) == 4 and len(conv["matrix"][0]) == 5
    assert conv["randomization"]["layer_names"] == ["embed", "conv", "emb"]
    assert {"conv__embed_maps.png", "emb__embed_maps.png"} <= {p.name for p in (tmp_path / "rep").iterdir()}


@pytest.mark.skipif("source_layout" not in inspect.signature(LayerPairAttribution).parameters,
                    reason="LayerPairAttribution has no source_layout yet (the encoders side of issue 16)")
def test_a_token_source_with_the_channels_last_layout_is_read_as_tokens(workdir, tmp_path):
    result = _run(["report", "--model", "mymodel:Tokens", "--inputs", "ids.pt", "--source", "emb", "--source-layout",
                   "channels_last", "--target", "embed", "--method", "Saliency", "--no-scores", "--no-randomization",
                   "--no-progress", "--out", str(tmp_path / "rep")], workdir)
    assert result.returncode == 0, result.stderr
    pair = json.loads((tmp_path / "rep" / "scores.json").read_text())["layer_pairs"][0]
    assert pair["source_layout"] == "channels_last" and pair["source_shape"] == [12, 6]
    assert len(pair["matrix"]) == 4 and len(pair["matrix"][0]) == 6  # K x D token features
    assert "token position" in (tmp_path / "rep" / "report.html").read_text()


def _demo_sequence_module(calls):
    module = types.ModuleType("captum_layerpair.demo_sequence")

    def run_demo(out_dir, n_inputs=32, show_progress=False):
        calls.append((out_dir, n_inputs, show_progress))
        return Path(out_dir)
    module.run_demo = run_demo
    return module


def test_demo_model_sequence_calls_the_sequence_demo(monkeypatch, capsys):
    calls = []
    monkeypatch.setitem(sys.modules, "captum_layerpair.demo_sequence", _demo_sequence_module(calls))
    assert main(["demo", "--model", "sequence", "--out", "seq", "--no-progress"]) == 0
    assert main(["demo", "--model", "sequence", "--out", "seq", "--n-inputs", "5"]) == 0
    assert calls == [("seq", 32, False), ("seq", 5, True)]  # the demo's own default unless --n-inputs is given
    assert "wrote the report to seq" in capsys.readouterr().out


def test_demo_model_sequence_without_the_module_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "captum_layerpair.demo_sequence", None)  # import fails
    assert main(["demo", "--model", "sequence", "--out", "seq"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the sequence demo is not available" in err


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("captum-layerpair")
    if not script.exists():
        pytest.skip("package not installed with its console script in this environment")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("captum-layerpair ")
