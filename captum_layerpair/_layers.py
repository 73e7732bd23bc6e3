"""Layers by module or dotted name, and the hooks that read or replace their values during a forward pass.

All hooks live inside context managers, so none is left on the user's model, whatever is raised.
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Union
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["LayerSpec", "resolve_layer", "ForwardRecord", "run_model", "model_state_preserved"]

LayerSpec = Union[str, nn.Module]


def resolve_layer(model: Any, layer: LayerSpec, role: str) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for ``layer`` given as a module of ``model`` or a dotted name.

    Raises ``ValueError`` for a name that is not a submodule (listing close matches) and ``TypeError`` for
    anything else.
    """
    if isinstance(layer, str):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{role} layer {layer!r} is a name, so forward_func must be an nn.Module; "
                            f"got {type(model).__name__}. Pass the layer's module instead.")
        names = [name for name, _ in model.named_modules() if name]
        if layer not in names:
            close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else f" Available: {', '.join(names[:20])}" + (
                " ..." if len(names) > 20 else "")
            raise ValueError(f"unknown {role} layer {layer!r}: the model has no submodule of that name.{hint}")
        return layer, model.get_submodule(layer)
    if isinstance(layer, nn.Module):
        if isinstance(model, nn.Module):
            for name, module in model.named_modules():
                if module is layer:
                    return name or "<model>", module
            raise ValueError(f"the {role} layer {type(layer).__name__} is not a submodule of the model")
        return type(layer).__name__, layer
    raise TypeError(f"{role}_layer must be an nn.Module or a dotted module name, got {type(layer).__name__}")


class _StopForward(Exception):
    """Raised by the target hook to end the forward pass once the target's output is captured."""


@dataclass
class ForwardRecord:
    """What one forward pass showed: the source value, the target output and how often each layer ran."""

    source_value: torch.Tensor | None = None
    target_output: torch.Tensor | None = None
    source_calls: int = 0
    target_calls: int = 0
    order: list[str] = field(default_factory=list)


def _single_tensor(value: Any, layer_name: str, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    raise TypeError(f"layer {layer_name!r} {what} a {type(value).__name__}, not a single tensor; layer-pair "
                    "attribution needs layers whose value is one tensor (pick a submodule, or wrap the layer "
                    "so that it returns one tensor)")


@contextmanager
def _hooks(handles: list[RemovableHandle]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_model(
    model: Callable[..., Any],
    inputs: tuple[Any, ...],
    source: tuple[str, nn.Module],
    target: tuple[str, nn.Module] | None,
    *,
    replacement: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    to_source_input: bool = False,
    stop_at_target: bool = True,
    stop_at_source: bool = False,
) -> ForwardRecord:
    """Run ``model(*inputs)`` once, reading (and optionally replacing) the source and reading the target.

    Parameters
    ----------
    source, target:
        ``(name, module)`` pairs from ``resolve_layer``; ``target=None`` reads only the source.
    replacement:
        If given, the source layer's output (or its first input with ``to_source_input``) is replaced by a clone
        of this tensor (or of ``replacement(value)`` for a callable), so paths that do not pass through the
        source keep their values from ``inputs``. The clone keeps in-place operations after the source away
        from the replacement.
    stop_at_target / stop_at_source:
        End the forward as soon as the target (or source) value is captured.

    Returns
    -------
    ForwardRecord with the source value (as computed, before replacement), the target output and call counts.
    Raises ``ValueError`` if a layer runs more than once, runs in the wrong order or is not reached.
    """
    src_name, src_module = source
    record = ForwardRecord()

    def on_source(value: Any) -> torch.Tensor | None:
        record.source_calls += 1
        if record.source_calls > 1:
            raise ValueError(f"source layer {src_name!r} is called more than once per forward pass; layer-pair "
                             "attribution needs a layer that runs once (use a module that is not reused)")
        record.order.append("source")
        record.source_value = _single_tensor(value, src_name, "receives" if to_source_input else "returns")
        if stop_at_source:
            raise _StopForward
        if replacement is None:
            return None
        new = replacement(record.source_value) if callable(replacement) else replacement
        if new.shape[1:] != record.source_value.shape[1:]:
            raise ValueError(f"replacement for source layer {src_name!r} has shape {tuple(new.shape)}, "
                             f"but the layer's value has shape {tuple(record.source_value.shape)}")
        return new.clone()

    handles: list[RemovableHandle] = []
    if to_source_input:
        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if not args:
                raise TypeError(f"source layer {src_name!r} received no positional input to attribute to")
            new = on_source(args[0])
            return None if new is None else (new, *args[1:])

        handles.append(src_module.register_forward_pre_hook(pre_hook))
    else:
        handles.append(src_module.register_forward_hook(lambda module, args, out: on_source(out)))

    if target is not None:
        tgt_name, tgt_module = target

        def target_hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            record.target_calls += 1
            if record.target_calls > 1:
                raise ValueError(f"target layer {tgt_name!r} is called more than once per forward pass; "
                                 "layer-pair attribution needs a layer that runs once")
            record.order.append("target")
            record.target_output = _single_tensor(out, tgt_name, "returns")
            if stop_at_target and record.source_calls > 0:
                raise _StopForward

        handles.append(tgt_module.register_forward_hook(target_hook))

    with _hooks(handles):
        try:
            model(*inputs)
        except _StopForward:
            pass
    if record.source_calls == 0:
        raise ValueError(f"source layer {src_name!r} was not reached in the forward pass")
    if target is not None and record.target_calls == 0:
        raise ValueError(f"target layer {target[0]!r} was not reached in the forward pass")
    if target is not None and record.order[0] == "target":
        raise ValueError(f"source layer {src_name!r} does not run before target layer {target[0]!r}: the source "
                         "must come strictly before the target in the forward pass")
    return record


@contextmanager
def model_state_preserved(model: Any) -> Iterator[None]:
    """Restore train/eval flags, ``requires_grad`` flags and buffers (e.g. BatchNorm statistics) on exit.

    Buffers are written through ``.data``, which leaves their autograd version counters alone, so a graph built
    inside the context (train-mode BatchNorm saves its statistics for backward) can be back-propagated after it.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
        for param, flag in flags:
            param.requires_grad_(flag)
        for buf, saved in buffers:
            if not torch.equal(buf, saved):
                buf.data.copy_(saved)
