"""The hooks that read or replace layer values during a forward pass.

``run_model`` reads (and optionally replaces) a source layer's value and reads a target layer's output in one
forward pass, with the order / reached / called-once checks of the layer-pair semantics. ``capture_layers`` reads
several layers in one full forward with the graph kept (FLINT, Network Dissection). All hooks live inside context
managers, so none is left on the user's model, whatever is raised. Layers are anything with ``.name`` and
``.module`` (``layers.Layer``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["ForwardRecord", "run_model", "capture_layers", "hooks_removed", "single_tensor"]


class _StopForward(Exception):
    """Raised by a hook to end the forward pass once every value needed is captured."""


@dataclass
class ForwardRecord:
    """What one forward pass showed: the source value, the target output and how often each layer ran."""

    source_value: torch.Tensor | None = None
    target_output: torch.Tensor | None = None
    source_calls: int = 0
    target_calls: int = 0
    order: list[str] = field(default_factory=list)


def single_tensor(value: Any, layer_name: str, what: str) -> torch.Tensor:
    """``value`` if it is one tensor; ``TypeError`` naming the layer otherwise."""
    if isinstance(value, torch.Tensor):
        return value
    raise TypeError(f"layer {layer_name!r} {what} a {type(value).__name__}, not a single tensor; layer-pair "
                    "attribution needs layers whose value is one tensor (pick a submodule, or wrap the layer "
                    "so that it returns one tensor)")


@contextmanager
def hooks_removed(handles: list[RemovableHandle]) -> Iterator[list[RemovableHandle]]:
    """Yield ``handles`` (append more inside) and remove every one on exit, also after an exception."""
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def _called_once(name: str, calls: int, role: str) -> None:
    if calls > 1:
        raise ValueError(f"{role} layer {name!r} is called more than once per forward pass; layer-pair "
                         "attribution needs a layer that runs once (use a module that is not reused)")


def run_model(
    model: Callable[..., Any],
    inputs: tuple[Any, ...],
    source: Any,
    target: Any | None,
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
        ``layers.Layer``s; ``target=None`` reads only the source.
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
    record = ForwardRecord()

    def on_source(value: Any) -> torch.Tensor | None:
        record.source_calls += 1
        _called_once(source.name, record.source_calls, "source")
        record.order.append("source")
        record.source_value = single_tensor(value, source.name, "receives" if to_source_input else "returns")
        if stop_at_source:
            raise _StopForward
        if replacement is None:
            return None
        new = replacement(record.source_value) if callable(replacement) else replacement
        if new.shape[1:] != record.source_value.shape[1:]:
            raise ValueError(f"replacement for source layer {source.name!r} has shape {tuple(new.shape)}, "
                             f"but the layer's value has shape {tuple(record.source_value.shape)}")
        return new.clone()

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args:
            raise TypeError(f"source layer {source.name!r} received no positional input to attribute to")
        new = on_source(args[0])
        return None if new is None else (new, *args[1:])

    def target_hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        record.target_calls += 1
        _called_once(target.name, record.target_calls, "target")
        record.order.append("target")
        record.target_output = single_tensor(out, target.name, "returns")
        if stop_at_target and record.source_calls > 0:
            raise _StopForward

    with hooks_removed([]) as handles:
        if to_source_input:
            handles.append(source.module.register_forward_pre_hook(pre_hook))
        else:
            handles.append(source.module.register_forward_hook(lambda module, args, out: on_source(out)))
        if target is not None:
            handles.append(target.module.register_forward_hook(target_hook))
        try:
            model(*inputs)
        except _StopForward:
            pass
    if record.source_calls == 0:
        raise ValueError(f"source layer {source.name!r} was not reached in the forward pass")
    if target is not None and record.target_calls == 0:
        raise ValueError(f"target layer {target.name!r} was not reached in the forward pass")
    if target is not None and record.order[0] == "target":
        raise ValueError(f"source layer {source.name!r} does not run before target layer {target.name!r}: the source "
                         "must come strictly before the target in the forward pass")
    return record


def capture_layers(model: Callable[..., Any], inputs: tuple[Any, ...], layers: Sequence[Any],
                   stop_after: bool = False) -> tuple[Any, list[torch.Tensor]]:
    """Run ``model(*inputs)`` once (graph kept) and return ``(output, [value of each layer])``.

    ``layers`` are ``layers.Layer``s. Each must run exactly once and return one tensor. With ``stop_after=True``
    the forward ends once every layer has been read and ``output`` is ``None``.
    Raises ``ValueError`` for a layer that is not reached or runs twice, ``TypeError`` for a non-tensor output.
    """
    values: list[torch.Tensor | None] = [None] * len(layers)
    calls = [0] * len(layers)

    def hook_for(i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            calls[i] += 1
            _called_once(layers[i].name, calls[i], "captured")
            values[i] = single_tensor(out, layers[i].name, "returns")
            if stop_after and all(calls):
                raise _StopForward
        return hook

    output = None
    with hooks_removed([]) as handles:
        handles.extend(layer.module.register_forward_hook(hook_for(i)) for i, layer in enumerate(layers))
        try:
            output = model(*inputs)
        except _StopForward:
            pass
    missing = [layer.name for layer, n in zip(layers, calls) if n == 0]
    if missing:
        raise ValueError(f"layer(s) {', '.join(map(repr, missing))} not reached in the forward pass")
    return output, values  # type: ignore[return-value]
