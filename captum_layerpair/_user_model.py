"""A user's model, checkpoint and inputs as named on the command line, and the table of the model's layers.

Files are read with ``torch.load(..., weights_only=True)``: a checkpoint or an input file can hold tensors and
plain containers only, never code. Mistakes (a missing file, a wrong name, a shape that does not fit) raise
``UserInputError`` with one line that says what was given and what was expected.
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
           "describe_layers"]


class UserInputError(ValueError):
    """A mistake in what the user asked for (a name, a file, a shape): the CLI prints it as one line, exit code 2."""


def one_line(message: str, limit: int = 400) -> str:
    """``message`` with its whitespace collapsed to single spaces, cut to ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _import_module(name: str) -> Any:
    """Import a module by dotted name (the working directory is searched first) or from a ``.py`` file path."""
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise UserInputError(f"cannot import {name!r}: no such file")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise UserInputError(f"cannot import module {name!r}: {one_line(e)}") from e


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

    ``MODULE`` is a dotted module name (the working directory is on the import path) or a path to a ``.py`` file;
    ``FACTORY`` is a function or class in it that builds the model without arguments.
    """
    model = _factory(spec)()
    if not isinstance(model, nn.Module):
        raise UserInputError(f"{spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


def load_inputs(path: str | Path) -> torch.Tensor:
    """Inputs ``[N, ...]`` from a file holding a float tensor, a dict with key ``"inputs"``, or a tuple/list whose
    first element is the inputs (e.g. ``(images, labels)``)."""
    data = _torch_load(path, "inputs file")
    if isinstance(data, Mapping) and "inputs" in data:
        data = data["inputs"]
    elif isinstance(data, (tuple, list)) and data:
        data = data[0]
    if not isinstance(data, torch.Tensor):
        raise UserInputError(f"inputs file {str(path)!r} holds a {type(data).__name__}; expected a tensor [N, ...], a "
                             "dict with key 'inputs' or a tuple (inputs, ...)")
    if not data.is_floating_point():
        raise UserInputError(f"inputs in {str(path)!r} have dtype {data.dtype}; expected floating point (convert "
                             "before saving, e.g. images.float() / 255)")
    if data.dim() < 2 or data.shape[0] == 0:
        raise UserInputError(f"inputs in {str(path)!r} have shape {list(data.shape)}; expected [N, ...] with N >= 1 "
                             "samples along the first dimension")
    if not torch.isfinite(data).all():
        raise UserInputError(f"inputs in {str(path)!r} contain NaN or inf values")
    return data


def check_forward(model: nn.Module, sample: torch.Tensor) -> Any:
    """Run ``model(sample)`` without gradients; a failure (typically a shape mismatch) is a ``UserInputError``."""
    try:
        with torch.no_grad():
            return model(sample)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UserInputError(f"inputs of shape {list(sample.shape)} do not fit the model: {one_line(e, 300)}") from e


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
