"""The hooks that read or replace layer values during a forward pass.

``run_model`` reads (and optionally replaces) a source layer's value and reads a target layer's output in one
forward pass, with the order / reached / called-once checks of the layer-pair semantics. ``capture_layers`` reads
several layers in one full forward with the graph kept (FLINT, Network Dissection). All hooks live inside context
managers, so none is left on the user's model, whatever is raised. Layers are ``layers.Layer``s (``.module``,
``.label``, ``.selector``, ``.select(value)``, ``.substitute(value, new)``). ``module_attributes_restored`` removes
the attributes Captum's DeepLift leaves on modules.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["ForwardRecord", "run_model", "capture_layers", "hooks_removed", "single_tensor",
           "module_attributes_restored", "CAPTUM_MODULE_ATTRIBUTES"]


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
                    "attribution needs layers whose value is one tensor (select one, e.g. 'gru[0]', pick a "
                    "submodule, or wrap the layer so that it returns one tensor)")


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


def _input_layer(source: Any) -> Any:
    """The source read at its input: the selector picks among the positional inputs (the first by default)."""
    return source if source.selector is not None else replace(source, selector=0)


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
        ``layers.Layer``s; ``target=None`` reads only the source. A layer's selector picks one tensor of a
        structured value (tuple, list, dict); for the source only that tensor is replaced and the rest of the
        value is passed on unchanged. With ``to_source_input`` the value is the tuple of the source's positional
        inputs (the selector picks one; the first by default).
    replacement:
        If given, the source's selected value is replaced by a clone of this tensor (or of ``replacement(value)``
        for a callable), so paths that do not pass through the source keep their values from ``inputs``. The
        clone keeps in-place operations after the source away from the replacement.
    stop_at_target / stop_at_source:
        End the forward as soon as the target (or source) value is captured.

    Returns
    -------
    ForwardRecord with the source value as the source produced it (a copy, before replacement, untouched by
    in-place operations later in the forward), the selected target output and call counts.
    Raises ``ValueError`` if a layer runs more than once, runs in the wrong order or is not reached.
    """
    record = ForwardRecord()
    selected = _input_layer(source) if to_source_input else source
    what = "receives" if to_source_input else "returns"

    def on_source(value: Any) -> Any:
        record.source_calls += 1
        _called_once(source.label, record.source_calls, "source")
        record.order.append("source")
        tensor = selected.select(value, what)
        if stop_at_source:
            record.source_value = tensor
            raise _StopForward
        record.source_value = tensor.clone()  # the model may change its own tensor in place later on
        if replacement is None:
            return None
        new = replacement(record.source_value) if callable(replacement) else replacement
        if new.shape[1:] != tensor.shape[1:]:
            raise ValueError(f"replacement for source layer {source.label!r} has shape {tuple(new.shape)}, "
                             f"but the layer's value has shape {tuple(tensor.shape)}")
        return selected.substitute(value, new.clone())

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args:
            raise TypeError(f"source layer {source.label!r} received no positional input to attribute to")
        return on_source(args)

    def target_hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        record.target_calls += 1
        _called_once(target.label, record.target_calls, "target")
        record.order.append("target")
        record.target_output = target.select(out)
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
        raise ValueError(f"source layer {source.label!r} was not reached in the forward pass")
    if target is not None and record.target_calls == 0:
        raise ValueError(f"target layer {target.label!r} was not reached in the forward pass")
    if target is not None and record.order[0] == "target":
        raise ValueError(f"source layer {source.label!r} does not run before target layer {target.label!r}: the "
                         "source must come strictly before the target in the forward pass")
    return record


def capture_layers(model: Callable[..., Any], inputs: tuple[Any, ...], layers: Sequence[Any],
                   stop_after: bool = False) -> tuple[Any, list[torch.Tensor]]:
    """Run ``model(*inputs)`` once (graph kept) and return ``(output, [value of each layer])``.

    ``layers`` are ``layers.Layer``s (a selector picks one tensor of a structured output). Each must run exactly
    once; each value is a copy of the selected tensor as the layer produced it (graph kept; in-place operations
    later in the forward do not reach it). With ``stop_after=True`` the forward ends once every layer has been
    read and ``output`` is ``None``.
    Raises ``ValueError`` for a layer that is not reached or runs twice, ``TypeError`` for a non-tensor output.
    """
    values: list[torch.Tensor | None] = [None] * len(layers)
    calls = [0] * len(layers)

    def hook_for(i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            calls[i] += 1
            _called_once(layers[i].label, calls[i], "captured")
            values[i] = layers[i].select(out).clone()
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
    missing = [layer.label for layer, n in zip(layers, calls) if n == 0]
    if missing:
        raise ValueError(f"layer(s) {', '.join(map(repr, missing))} not reached in the forward pass")
    return output, values  # type: ignore[return-value]


# Attributes Captum's module-hooking methods set on the model's modules during a forward and delete in their
# backward hooks (DeepLift: ``input``, ``output``; DeepLiftShap / LayerDeepLift references: ``input_ref``).
CAPTUM_MODULE_ATTRIBUTES = ("input", "output", "input_ref")


@contextmanager
def module_attributes_restored(model: Any, names: Sequence[str] = CAPTUM_MODULE_ATTRIBUTES) -> Iterator[None]:
    """On exit, every module of ``model`` has exactly the attributes ``names`` it had on entry, with their values.

    Captum's DeepLift leaves ``input`` / ``output`` on modules whose backward hook never runs (modules that the
    attributed value does not depend on, or a forward that raised); this removes them, also after an exception.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    before = {(module, name): module.__dict__[name] for module in model.modules() for name in names
              if name in module.__dict__}
    try:
        yield
    finally:
        for module in model.modules():
            for name in names:
                if (module, name) in before:
                    module.__dict__[name] = before[(module, name)]
                elif name in module.__dict__:
                    del module.__dict__[name]
