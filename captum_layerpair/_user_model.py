"""A user's model, checkpoint and inputs as named on the command line, and the table of the model's layers.

Files are read with ``torch.load(..., weights_only=True)``: a checkpoint or an input file can hold tensors and
plain containers only, never code. A model module is imported from the installed packages first; the working
folder is searched only for a module that is not installed, after everything else and only during that import,
so a stray file there (``skimage.py``) never shadows a package. Mistakes (a missing file, a wrong name, a shape
that does not fit, a model that fails or returns NaN) raise ``UserInputError`` with one line that says what was
given and what was expected.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["UserInputError", "load_model", "load_checkpoint", "load_inputs", "check_forward", "LayerInfo",
           "describe_layers", "check_inputs", "check_batches", "MAX_SAMPLE_ELEMENTS"]

MAX_SAMPLE_ELEMENTS = 100_000_000
"""The largest input sample (elements, without the batch dimension) ``layers --input-shape`` builds: 400 MB."""


class UserInputError(ValueError):
    """A mistake in what the user asked for (a name, a file, a shape): the CLI prints it as one line, exit code 2."""


def one_line(message: str, limit: int = 400) -> str:
    """``message`` with its whitespace collapsed to single spaces, cut to ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _import_module(name: str) -> Any:
    """Import a module by dotted name or from a ``.py`` file path.

    A dotted name is looked up in the installed packages first; only a module that is not installed is then
    looked up in the working folder, which is put at the end of ``sys.path`` for that import alone.
    """
    if name.endswith(".py"):
        return _import_file(Path(name))
    top = name.partition(".")[0]
    try:
        return _import_user_code(name, lambda: importlib.import_module(name))
    except ModuleNotFoundError as e:
        if e.name not in (top, name) or not _in_working_folder(top):
            raise UserInputError(f"cannot import module {name!r}: {one_line(e)}") from e
    folder = os.getcwd()
    sys.path.append(folder)
    try:
        return _import_user_code(name, lambda: importlib.import_module(name))
    except ModuleNotFoundError as e:
        raise UserInputError(f"cannot import module {name!r}: {one_line(e)}") from e
    finally:
        del sys.path[len(sys.path) - 1 - sys.path[::-1].index(folder)]


def _in_working_folder(top: str) -> bool:
    return Path(f"{top}.py").is_file() or Path(top, "__init__.py").is_file()


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise UserInputError(f"cannot import {str(path)!r}: no such file")
    # a private module name: registered (dataclasses and pickle look modules up) without shadowing another module
    spec = importlib.util.spec_from_file_location(f"_captum_layerpair_model_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        _import_user_code(str(path), lambda: spec.loader.exec_module(module))
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def _import_user_code(name: str, load: Callable[[], Any]) -> Any:
    """Run ``load``; an error raised by the user's module itself (not a missing module) is a ``UserInputError``."""
    try:
        return load()
    except ModuleNotFoundError:
        raise
    except Exception as e:  # a syntax error, a failing import inside it, any error its top level raises
        raise UserInputError(f"importing {name!r} failed: {type(e).__name__}: {one_line(e)}") from e


def _factory(spec: str) -> Callable[[], Any]:
    module_name, sep, factory_name = spec.rpartition(":")
    if not sep or not module_name or not factory_name:
        raise UserInputError(f"--model must be MODULE:FACTORY (a module or .py file and a function or class in it "
                             f"that builds the model without arguments, e.g. captum_layerpair.demo:default_encoder); "
                             f"got {spec!r}")
    module = _import_module(module_name)
    obj: Any = module
    for part in factory_name.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            raise UserInputError(f"{module_name!r} has no attribute {factory_name!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserInputError(f"{spec!r} is a {type(obj).__name__}, not a function or class that builds a model")
    try:
        inspect.signature(obj).bind()
    except TypeError as e:
        raise UserInputError(f"{spec!r} cannot be called without arguments ({one_line(e)}); point --model at a "
                             "function that builds the model with no arguments") from e
    except ValueError:  # no signature available (some builtins): just call it
        pass
    return obj


def _torch_load(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"cannot read {what} {str(path)!r}: " + ("it is a directory" if path.is_dir()
                                                                       else "no such file"))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise UserInputError(f"cannot read {what} {str(path)!r}: {e.strerror or one_line(e)}") from e
    except Exception as e:  # any failure to decode a data file is the file's problem
        raise UserInputError(f"{what} {str(path)!r} {_load_failure(str(e))}") from e


def _load_failure(message: str) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in words that do not suggest unsafe loading."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if found:
        return (f"holds an object of class {found.group(1)}, which is never unpickled here: save tensors and plain "
                "containers only (torch.save(model.state_dict(), path), torch.save(inputs, path))")
    return "is not a file written by torch.save (it could not be read as tensors and plain containers)"


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a state dict (or a dict holding one under ``"state_dict"`` / ``"model_state_dict"``) into ``model``."""
    state = _torch_load(path, "checkpoint")
    if isinstance(state, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a state dict "
                             "(save it with torch.save(model.state_dict(), path))")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserInputError(f"checkpoint {str(path)!r} does not fit the model: {one_line(e)}") from e


def load_model(spec: str, checkpoint: str | Path | None = None) -> nn.Module:
    """Build the model named by ``spec`` (``"MODULE:FACTORY"``), load ``checkpoint`` into it, and set eval mode.

    ``MODULE`` is a dotted module name (an installed module, else one in the working folder) or a path to a
    ``.py`` file; ``FACTORY`` is a function or class in it that builds the model without arguments.
    """
    factory = _factory(spec)
    try:
        model = factory()
    except Exception as e:  # the user's code: whatever it raises is reported in one line
        raise UserInputError(f"{spec!r} failed while building the model: {type(e).__name__}: {one_line(e)}") from e
    if not isinstance(model, nn.Module):
        raise UserInputError(f"{spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


def load_inputs(path: str | Path) -> torch.Tensor:
    """Inputs ``[N, ...]`` from a file holding a tensor, a dict with key ``"inputs"``, or a tuple/list whose first
    element is the inputs (e.g. ``(images, labels)``).

    Floating-point inputs are used as they are; integer inputs (token ids for an ``nn.Embedding``) too.
    """
    data = _torch_load(path, "inputs file")
    if isinstance(data, Mapping) and "inputs" in data:
        data = data["inputs"]
    elif isinstance(data, (tuple, list)) and data:
        data = data[0]
    if not isinstance(data, torch.Tensor):
        raise UserInputError(f"inputs file {str(path)!r} holds a {type(data).__name__}; expected a tensor [N, ...], a "
                             "dict with key 'inputs' or a tuple (inputs, ...)")
    return check_inputs(data, f"inputs in {str(path)!r}")


def check_inputs(data: torch.Tensor, what: str = "inputs") -> torch.Tensor:
    """``data`` if it is a usable batch: floating point or integer (token ids), ``[N, ...]`` with ``N >= 1``, finite."""
    if data.dtype == torch.bool or data.is_complex() or not (data.is_floating_point() or _is_integer(data)):
        raise UserInputError(f"{what} have dtype {data.dtype}; expected floating point (e.g. images.float() / 255) "
                             "or integer token ids")
    if data.dim() < 2 or data.shape[0] == 0:
        raise UserInputError(f"{what} have shape {list(data.shape)}; expected [N, ...] with N >= 1 samples along "
                             "the first dimension")
    if data.is_floating_point() and not torch.isfinite(data).all():
        raise UserInputError(f"{what} contain {int((~torch.isfinite(data)).sum())} NaN or inf values")
    return data


def _is_integer(data: torch.Tensor) -> bool:
    return not data.is_floating_point() and not data.is_complex() and data.dtype != torch.bool


def check_forward(model: nn.Module, sample: torch.Tensor, finite: bool = False) -> Any:
    """Run ``model(sample)`` without gradients; a failure (typically a shape mismatch) is a ``UserInputError``.

    With ``finite=True``, also an output holding NaN or inf values (a broken checkpoint) is one; the message
    names the model's non-finite parameters.
    """
    try:
        with torch.no_grad():
            output = model(sample)
    except Exception as e:  # the user's model: whatever it raises on these inputs is reported in one line
        raise UserInputError(f"inputs of shape {list(sample.shape)} do not fit the model: {type(e).__name__}: "
                             f"{one_line(e, 200)}{_dtype_hint(sample, e)}") from e
    if finite and _has_non_finite(output):
        bad = [name for name, value in [*model.named_parameters(), *model.named_buffers()]
               if value.is_floating_point() and not torch.isfinite(value).all()]
        where = (f"; non-finite parameters: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} (check the "
                 "checkpoint)") if bad else ""
        first = "first input" if len(sample) == 1 else f"first {len(sample)} inputs"
        raise UserInputError(f"the model's output on the {first} contains NaN or inf values, so every attribution "
                             f"and score would be meaningless{where}")
    return output


def check_batches(model: nn.Module, inputs: torch.Tensor) -> None:
    """The model runs on one input and on a batch of two with finite outputs (else a ``UserInputError``)."""
    check_forward(model, inputs[:1], finite=True)
    if len(inputs) < 2:
        return
    try:
        check_forward(model, inputs[:2], finite=True)
    except UserInputError as e:
        raise UserInputError(f"the model runs on one input but not on a batch of two: {e}") from e


def _has_non_finite(output: Any) -> bool:
    if isinstance(output, torch.Tensor):
        return output.is_floating_point() and not torch.isfinite(output).all()
    if isinstance(output, Mapping):
        return any(_has_non_finite(v) for v in output.values())
    if isinstance(output, (tuple, list)):
        return any(_has_non_finite(v) for v in output)
    return False


def _dtype_hint(sample: torch.Tensor, error: Exception) -> str:
    if not sample.is_floating_point():
        return (" (integer inputs go to the model as they are, e.g. token ids; a model of images needs a float "
                "tensor, e.g. images.float() / 255)")
    if re.search(r"Long|Int|indices", str(error)):
        return " (if the model takes token ids, give integer inputs)"
    return ""


@dataclass(frozen=True)
class LayerInfo:
    """One named submodule: its dotted name, class, output shape (``None`` if not run) and own parameter count."""

    name: str
    kind: str
    output_shape: tuple[int, ...] | str | None
    n_parameters: int


def describe_layers(model: nn.Module, sample: torch.Tensor | None = None) -> list[LayerInfo]:
    """Every named submodule of ``model`` in definition order, with its output shape on ``sample`` (``[1, ...]``).

    Output shapes are per batch (the first entry is the batch size of ``sample``); a module that returns something
    other than one tensor is described in words, one that does not run has shape ``None``.
    """
    shapes: dict[str, tuple[int, ...] | str] = {}

    def recorder(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if name in shapes:
                return
            shapes[name] = (tuple(output.shape) if isinstance(output, torch.Tensor)
                            else f"{type(output).__name__}")
        return hook

    named = [(name, module) for name, module in model.named_modules() if name]
    if sample is not None:
        handles = [module.register_forward_hook(recorder(name)) for name, module in named]
        try:
            check_forward(model, sample)
        finally:
            for handle in handles:
                handle.remove()
    return [LayerInfo(name, type(module).__name__, shapes.get(name),
                      sum(p.numel() for p in module.parameters(recurse=False))) for name, module in named]
