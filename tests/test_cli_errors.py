"""Every user mistake on the command line: one line on stderr naming the problem, exit code 2, no traceback, and
no report written. Each case runs as its own process (forked from tests/cli_process_server.py, which imports
torch once); a few run in a fresh interpreter too, to prove the same end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captum_layerpair.cli import main
from captum_layerpair.demo import default_encoder, digits

SERVER = Path(__file__).with_name("cli_process_server.py")

USER_MODEL = '''
import torch
from torch import nn
from captum_layerpair.models import ConvEncoder

CONSTANT = 3


def make():
    return ConvEncoder(embed_dim=8, image_size=16, seed=None)


def needs_arguments(width):
    return ConvEncoder()


def not_a_module():
    return {"weights": 1}


def make_fails():
    raise RuntimeError("cannot reach the weights server")


class OneAtATime(nn.Module):
    """Works on one sample, fails on batches (as a model with a hard-coded view would)."""

    def __init__(self):
        super().__init__()
        self.encoder = ConvEncoder(embed_dim=8, image_size=16, seed=0)
        self.conv2 = self.encoder.conv2

    def forward(self, x):
        return self.encoder(x).view(8)


class Tokens(nn.Module):
    """Token ids [N, 12] in 0 .. 19 -> a 4-d embedding."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.conv = nn.Conv1d(6, 5, 3, padding=1)
        self.unused = nn.Linear(3, 3)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten()
        self.embed = nn.Linear(5, 4)

    def forward(self, ids):
        return self.embed(self.flatten(self.pool(self.conv(self.emb(ids).transpose(1, 2)))))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(1, 4, batch_first=True)
        self.embed = nn.Linear(4, 2)

    def forward(self, x):
        return self.embed(self.gru(x.flatten(2).transpose(1, 2)[:, :, :1])[0][:, -1])
'''

REPORT = ["report", "--model", "mymodel:make", "--inputs", "inputs.pt", "--source", "conv2", "--target", "embed",
          "--method", "Saliency", "--no-progress", "--out", "out"]
TOKENS = ["report", "--model", "mymodel:Tokens", "--inputs", "ids.pt", "--source", "conv", "--target", "embed",
          "--method", "Saliency", "--no-progress", "--out", "out"]
IG = ["--method", "IntegratedGradients"]


def report(*changes, base=REPORT):
    """``base`` with options replaced (``--method X`` replaces the method) or added (flags, new options)."""
    argv = list(base)
    items = list(changes)
    while items:
        option = items.pop(0)
        value = items.pop(0) if items and not str(items[0]).startswith("--") else None
        if option in argv:
            index = argv.index(option)
            end = index + 1
            while end < len(argv) and not argv[end].startswith("--"):
                end += 1
            argv[index:end] = [option] + ([value] if value is not None else [])
        else:
            argv += [option] + ([value] if value is not None else [])
    return argv


def kwargs(text, *changes):
    return report(*changes, "--method-kwargs", text)


def layers(*args, model="mymodel:make"):
    return ["layers", "--model", model, *args]


CASES = [
    # the command line itself (argparse)
    ([], "the following arguments are required: {demo,layers,report}"),
    (["explain"], "invalid choice: 'explain'"),
    (layers("--no-such-option"), "unrecognized arguments: --no-such-option"),
    (["demo"], "the following arguments are required: --out"),
    (["demo", "--out", "out", "--n-inputs", "0"], "argument --n-inputs: expected a positive integer, got '0'"),
    (["demo", "--out", "out", "--n-inputs", "many"], "argument --n-inputs: expected a positive integer"),
    (["demo", "--out", "out", "--threads", "-1"], "argument --threads: expected a positive integer"),
    (["demo", "--out", "out", "--model", "mnist"], "argument --model: invalid choice: 'mnist'"),
    (REPORT[:-2], "the following arguments are required: --out"),
    (["report", "--inputs", "inputs.pt", "--out", "out"], "the following arguments are required: --model"),
    (report("--max-inputs", "0"), "argument --max-inputs: expected a positive integer"),
    (report("--batch-size", "0"), "argument --batch-size: expected a positive integer"),
    (report("--target-batch-size", "0"), "argument --target-batch-size: expected a positive integer"),
    (report("--target-batch-size", "eight"), "argument --target-batch-size: expected a positive integer"),
    (report("--target-reduction", "max"), "argument --target-reduction: invalid choice: 'max'"),
    (report("--seed", "x"), "argument --seed: invalid int value"),
    (report("--method-kwargs", "{n_steps: 4}"), "argument --method-kwargs: not valid JSON"),
    (report("--method-kwargs", "[1, 2]"), "expected a JSON object"),
    (report("--method-kwargs", ""), "argument --method-kwargs: not valid JSON"),
    (layers("--input-shape", "1,x"), "argument --input-shape: expected positive"),
    (layers("--input-shape", "0,16,16"), "argument --input-shape: expected positive"),
    (layers("--input-shape", "100000,100000,100"), "has 1,000,000,000,000 elements; at most 100,000,000"),
    (layers("--input-dtype", "complex64"), "argument --input-dtype: invalid choice"),
    # the model
    (layers(model="mymodel"), "--model must be MODULE:FACTORY"),
    (layers(model=":make"), "--model must be MODULE:FACTORY"),
    (layers(model="mymodel:"), "--model must be MODULE:FACTORY"),
    (layers(model="no_such_module:make"), "cannot import module 'no_such_module'"),
    (layers(model="mymodel:maek"), "has no attribute 'maek'; did you mean: make"),
    (layers(model="mymodel:USER_MODEL_DOES_NOT_EXIST"), "has no attribute"),
    (layers(model="mymodel:needs_arguments"), "cannot be called without arguments"),
    (layers(model="mymodel:CONSTANT"), "is a int, not a function or class that builds a model"),
    (layers(model="mymodel:not_a_module"), "returned a dict, not a torch.nn.Module"),
    (layers(model="mymodel:make_fails"), "failed while building the model: RuntimeError: cannot reach the weights"),
    (layers(model="missing.py:make"), "cannot import 'missing.py': no such file"),
    (layers(model="broken.py:make"), "importing 'broken.py' failed: SyntaxError"),
    (layers(model="raising:make"), "importing 'raising' failed: RuntimeError: configure me first"),
    (layers(model="needs_dependency:make"), "No module named 'no_such_dependency_xyz'"),
    (layers("--input-shape", "3,16,16"), "inputs of shape [1, 3, 16, 16] do not fit"),
    (layers("--input-shape", "1,16,16", model="mymodel:Tokens"), "if the model takes token ids, give integer"),
    # the checkpoint
    (layers("--checkpoint", "missing.pt"), "cannot read checkpoint 'missing.pt': no such file"),
    (layers("--checkpoint", "."), "cannot read checkpoint '.': it is a directory"),
    (layers("--checkpoint", "notes.txt"), "is not a file written by torch.save"),
    (layers("--checkpoint", "empty.pt"), "is not a file written by torch.save"),
    (layers("--checkpoint", "pickled_module.pt"),
     "holds an object of class torch.nn.modules.linear.Linear, which is never unpickled"),
    (layers("--checkpoint", "inputs.pt"), "not a state dict"),
    (layers("--checkpoint", "encoder.pt", model="captum_layerpair.models:SmallCNN"), "does not fit the model"),
    (layers("--checkpoint", "wrong_shapes.pt"), "size mismatch for embed.weight"),
    # the inputs
    (report("--inputs", "missing.pt"), "cannot read inputs file 'missing.pt': no such file"),
    (report("--inputs", "notes.txt"), "is not a file written by torch.save"),
    (report("--inputs", "pickled_module.pt"), "which is never unpickled"),
    (report("--inputs", "dict_inputs.pt"), "holds a dict; expected a tensor [N, ...], a dict with key 'inputs'"),
    (report("--inputs", "vector.pt"), "have shape [10]; expected [N, ...]"),
    (report("--inputs", "no_samples.pt"), "have shape [0, 1, 16, 16]; expected [N, ...] with N >= 1"),
    (report("--inputs", "nan_inputs.pt"), "contain 3 NaN or inf values"),
    (report("--inputs", "bool.pt"), "have dtype torch.bool; expected floating point"),
    (report("--inputs", "complex.pt"), "have dtype torch.complex64; expected floating point"),
    (report("--inputs", "cropped.pt"), "inputs of shape [1, 1, 8, 16] do not fit the model"),
    (report("--inputs", "rgb.pt"), "inputs of shape [1, 3, 16, 16] do not fit the model"),
    (report("--inputs", "uint8.pt"), "a model of images needs a float tensor"),
    (report("--inputs", "inputs.pt", base=TOKENS), "if the model takes token ids, give integer inputs"),
    (report("--inputs", "ids_out_of_range.pt", base=TOKENS), "IndexError: index out of range"),
    # the layers and the method
    (report("--source", "conv9"), "unknown source layer 'conv9'"),
    (report("--target", "embd"), "unknown target layer 'embd'"),
    (report("--source", "embed", "--target", "conv2"), "source"),
    (report("--source", "conv2", "--target", "conv2"), "same layer"),
    (report("--source", "unused", base=TOKENS), "unused"),
    (report("--source", "gru", "--target", "embed", "--model", "mymodel:Recurrent", "--inputs", "vector3d.pt"),
     "tuple"),
    (report("--method", "Saliencyy"), "unknown method 'Saliencyy'. Did you mean: Saliency?"),
    (report("--method", "NoiseTunnel"), "'NoiseTunnel' wraps another attribution method and cannot be named"),
    (kwargs('{"n_step": 3}', *IG), "unexpected keyword argument 'n_step'"),
    (kwargs('{"n_steps": 0}', *IG), "n_steps must be a positive int, got 0"),
    (kwargs('{"n_steps": "many"}', *IG), "n_steps must be a positive int, got str 'many'"),
    (kwargs('{"n_steps": 2.5}', *IG), "n_steps must be a positive int, got float 2.5"),
    (kwargs('{"n_steps": true}', *IG), "n_steps must be a positive int, got bool True"),
    (kwargs('{"internal_batch_size": 0}', *IG), "internal_batch_size must be a positive int, got 0"),
    (kwargs('{"n_samples": -1}', "--method", "GradientShap"), "n_samples must be a positive int, got -1"),
    (kwargs('{"n_steps": 0}', "--method", "LayerIntegratedGradients"), "n_steps must be a positive int, got 0"),
    (report("--method", "Occlusion"), "sliding_window_shapes"),
    (kwargs('{"sliding_window_shapes": [16, 20, 20]}', "--method", "Occlusion"),
     "Sliding window dimensions (16, 20, 20) cannot exceed input dimensions"),
    (kwargs('{"sliding_window_shapes": [2, 2]}', "--method", "Occlusion"), "Occlusion from 'conv2' to 'embed' failed"),
    (kwargs('{"input_baselines": [0.5, 0.5]}', *IG), "one number per input channel (1 values)"),
    (kwargs('{"input_baselines": "black"}', *IG), "input_baselines must be a number"),
    (kwargs('{"input_baselines": NaN}', *IG), "input_baselines is nan; give a finite number"),
    (kwargs('{"input_baselines": [NaN]}', *IG), "input_baselines contain NaN or inf values"),
    (kwargs('{"baselines": 0, "input_baselines": 0}', *IG), "give either baselines"),
    (kwargs('{"target": 0}'), "'target' is not allowed in a report: the report explains every target unit"),
    (kwargs('{"target_batch_size": 4}'), "use --target-batch-size"),
    (kwargs('{"show_progress": true}'), "use --no-progress"),
    # models that fail late or give meaningless numbers
    (report("--model", "mymodel:OneAtATime", "--source", "conv2"),
     "the model runs on one input but not on a batch of two"),
    (report("--checkpoint", "nan.pt", "--method", "InputXGradient"),
     "output on the first input contains NaN or inf values"),
    (report("--checkpoint", "nan.pt"), "non-finite parameters: conv1.weight (check the checkpoint)"),
    # the output directory
    (report("--out", "notes.txt/out"), "cannot create the output directory"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's project: model modules, checkpoints, inputs, and files that are not what they claim."""
    path = tmp_path_factory.mktemp("project")
    (path / "mymodel.py").write_text(USER_MODEL)
    (path / "broken.py").write_text("def make(:\n")
    (path / "raising.py").write_text("raise RuntimeError('configure me first')\n")
    (path / "needs_dependency.py").write_text("import no_such_dependency_xyz\n")
    (path / "notes.txt").write_text("not a tensor file")
    (path / "empty.pt").write_bytes(b"")
    encoder = default_encoder().state_dict()
    torch.save(encoder, path / "encoder.pt")
    torch.save({**encoder, "conv1.weight": torch.full_like(encoder["conv1.weight"], float("nan"))}, path / "nan.pt")
    torch.save({**encoder, "embed.weight": encoder["embed.weight"][:4]}, path / "wrong_shapes.pt")
    images, labels = digits("test")
    torch.save((images[:10], labels[:10]), path / "inputs.pt")
    torch.save(images[:4, :, :8], path / "cropped.pt")
    torch.save(images[:4].expand(4, 3, 16, 16).clone(), path / "rgb.pt")
    torch.save((images[:4] * 255).to(torch.uint8), path / "uint8.pt")
    torch.save(images[:4] > 0.5, path / "bool.pt")
    torch.save(images[:4].to(torch.complex64), path / "complex.pt")
    nan_inputs = images[:4].clone()
    nan_inputs[0, 0, :3, 0] = float("nan")
    torch.save(nan_inputs, path / "nan_inputs.pt")
    torch.save({"x": images[:4]}, path / "dict_inputs.pt")
    torch.save(torch.rand(10), path / "vector.pt")
    torch.save(torch.rand(4, 1, 3, 3), path / "vector3d.pt")
    torch.save(images[:0], path / "no_samples.pt")
    torch.save(torch.randint(0, 20, (6, 12), generator=torch.Generator().manual_seed(0)), path / "ids.pt")
    torch.save(torch.randint(20, 40, (6, 12)), path / "ids_out_of_range.pt")
    torch.save({"model": torch.nn.Linear(2, 2)}, path / "pickled_module.pt")
    return path


@pytest.fixture(scope="module")
def cli(workdir):
    """``run(argv) -> {"rc", "stdout", "stderr"}``: ``captum-layerpair argv`` as its own process in ``workdir``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    server = subprocess.Popen([sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)

    def run(argv, timeout=120):
        server.stdin.write(json.dumps({"argv": argv, "cwd": str(workdir), "timeout": timeout}) + "\n")
        server.stdin.flush()
        return json.loads(server.stdout.readline())
    yield run
    server.stdin.close()
    server.wait(timeout=30)


def _assert_one_line_exit_2(result, message):
    err = result["stderr"]
    assert result["rc"] == 2, err
    assert err.count("\n") == 1 and err.startswith("captum-layerpair"), err
    assert message in err, err
    assert "Traceback" not in err and result["stdout"] == ""


def test_the_table_holds_at_least_60_distinct_mistakes():
    assert len(CASES) >= 60 and len({tuple(argv) for argv, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, message", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_each_mistake_is_one_line_and_exit_2_in_its_own_process(cli, workdir, argv, message):
    result = cli(argv)
    _assert_one_line_exit_2(result, message)
    out = workdir / "out"
    assert not out.exists() or not any(out.iterdir()), "a failed report must not leave files behind"


@pytest.mark.parametrize("argv, message", [
    (report("--model", "mymodel:OneAtATime", "--source", "conv2"), "not on a batch of two"),
    (report("--checkpoint", "nan.pt", "--method", "InputXGradient"), "NaN or inf values"),
    (kwargs('{"n_steps": "many"}', *IG), "n_steps must be a positive int"),
])
def test_mistakes_are_one_line_in_a_fresh_interpreter(workdir, argv, message):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "captum_layerpair", *argv], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=300)
    _assert_one_line_exit_2({"rc": result.returncode, "stdout": result.stdout, "stderr": result.stderr}, message)


@pytest.mark.parametrize("argv, message", [
    (["layers", "--model", "mymodel:maek"], "did you mean: make"),
    (["report", "--inputs", "x.pt", "--out", "o"], "the following arguments are required"),
    (kwargs('{"n_steps": 0}', *IG), "n_steps must be a positive int, got 0"),
])
def test_main_returns_2_in_process(workdir, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(workdir)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_stray_module_in_the_working_folder_never_shadows_an_installed_package(workdir, tmp_path):
    """--model package.module:factory: the working folder is not put first on sys.path (a stray skimage.py is not
    imported, also not by SSIM in the randomisation check); a module only found there is still imported."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "skimage.py").write_text("raise SystemExit('the stray skimage.py was imported')\n")
    (project / "mymodel.py").write_text(USER_MODEL)
    for name in ("inputs.pt", "encoder.pt"):
        (project / name).write_bytes((workdir / name).read_bytes())
    launcher = tmp_path / "bin" / "captum-layerpair"  # as the installed console script: its own folder first
    launcher.parent.mkdir()
    launcher.write_text("import sys\nfrom captum_layerpair.cli import main\nsys.exit(main())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = ["report", "--model", "mymodel:make", "--checkpoint", "encoder.pt", "--inputs", "inputs.pt", "--source",
            "conv2", "--target", "embed", "--method", "Saliency", "--max-inputs", "3", "--no-scores", "--no-progress",
            "--out", "out"]
    for command in ([sys.executable, "-m", "captum_layerpair"],  # python -m puts the folder first: undone
                    [sys.executable, str(launcher)]):
        result = subprocess.run([*command, *argv], cwd=project, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr
        assert "stray" not in result.stderr
        assert json.loads((project / "out" / "scores.json").read_text())["layer_pairs"][0]["randomization"][
            "similarity"].keys() == {"spearman_abs", "ssim"}
