"""The ``captum-layerpair`` console script end to end (subprocesses), and its error paths: exit code 2 with one
line on stderr and no traceback for every user mistake."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captum_layerpair.cli import main
from captum_layerpair.demo import default_encoder, digits

USER_MODEL = """
from captum_layerpair.models import ConvEncoder


def make():
    return ConvEncoder(embed_dim=8, image_size=16, seed=None)


def needs_arguments(width):
    return ConvEncoder()
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
        assert set(pair["scores"]["informativeness"]) == {"model", "random_model", "null"}
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


REPORT = ["report", "--model", "mymodel:make", "--inputs", "inputs.pt", "--source", "conv2", "--target", "embed",
          "--method", "Saliency", "--no-progress"]


@pytest.mark.parametrize("argv, message", [
    (["layers", "--model", "mymodel:maek"], "has no attribute 'maek'; did you mean: make"),
    (["layers", "--model", "mymodel"], "--model must be MODULE:FACTORY"),
    (["layers", "--model", "no_such_module:make"], "cannot import module 'no_such_module'"),
    (["layers", "--model", "mymodel:needs_arguments"], "cannot be called without arguments"),
    (["layers", "--model", "mymodel:USER_MODEL_DOES_NOT_EXIST"], "has no attribute"),
    (["layers", "--model", "mymodel:make", "--input-shape", "3,16,16"], "inputs of shape [1, 3, 16, 16] do not fit"),
    (["layers", "--model", "mymodel:make", "--input-shape", "1,x"], "argument --input-shape: expected positive"),
    (["layers", "--model", "mymodel:make", "--checkpoint", "notes.txt"], "is not a file written by torch.save"),
    (["layers", "--model", "mymodel:make", "--checkpoint", "pickled_module.pt"],
     "holds an object of class torch.nn.modules.linear.Linear, which is never unpickled"),
    (["layers", "--model", "mymodel:make", "--checkpoint", "inputs.pt"], "not a state dict"),
    (["layers", "--model", "captum_layerpair.models:SmallCNN", "--checkpoint", "encoder.pt"],
     "does not fit the model"),
    (REPORT + ["--out", "o", "--inputs", "cropped.pt"], "inputs of shape [1, 1, 8, 16] do not fit the model"),
    (REPORT + ["--out", "o", "--method", "Saliencyy"], "unknown method 'Saliencyy'. Did you mean: Saliency?"),
    (REPORT + ["--out", "o", "--source", "embed", "--target", "conv2"], "source"),
    (REPORT + ["--out", "o", "--method", "IntegratedGradients", "--method-kwargs", '{"n_step": 3}'],
     "unexpected keyword argument 'n_step'"),
    (REPORT + ["--out", "o", "--method-kwargs", "[1, 2]"], "expected a JSON object"),
    (REPORT + ["--out", "notes.txt/o"], "cannot create the output directory"),
    (REPORT + ["--out", "o", "--max-inputs", "0"], "argument --max-inputs: expected a positive integer"),
    (REPORT, "the following arguments are required: --out"),
    (["demo"], "the following arguments are required: --out"),
    (["explain"], "invalid choice: 'explain'"),
])
def test_user_mistakes_exit_2_with_one_clear_line(workdir, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert err.startswith("captum-layerpair")


def test_version_and_help_exit_0(capsys):
    for argv in (["--version"], ["report", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    out = capsys.readouterr().out
    assert "captum-layerpair 0.1.0" in out and "--method-kwargs JSON" in out


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("captum-layerpair")
    if not script.exists():
        pytest.skip("package not installed with its console script in this environment")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("captum-layerpair ")
