"""The layer-pair spec: which layers of which model, and how the target becomes K units.

``Layer`` is one layer of a model (its dotted name and module). ``LayerPair`` is a frozen spec of
``(model, source, target, reduction, stop_at_target)``; every part of the package that needs "model + source +
target" takes one. ``LayerPair.run`` is the one way to run the model with the substitution/capture hooks, and
``LayerPair.on(copy)`` gives the same pair on a copy of the model (random-model baselines, sanity checks).
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from captum_layerpair._checks import check_choice
from captum_layerpair._hooks import ForwardRecord, run_model
from captum_layerpair._typing import LayerSpec, TargetReduction

__all__ = ["Layer", "LayerPair", "resolve_layer", "reduce_target", "check_reduction", "TARGET_REDUCTIONS"]


@dataclass(frozen=True)
class Layer:
    """One layer of a model: its dotted name (``"<model>"`` for the model itself) and its module."""

    name: str
    module: nn.Module

    def __repr__(self) -> str:
        return f"Layer({self.name!r}, {type(self.module).__name__})"


def resolve_layer(model: Any, layer: LayerSpec | Layer, role: str) -> Layer:
    """The ``Layer`` for ``layer`` given as a module of ``model``, a dotted name, or a ``Layer``.

    Raises ``ValueError`` for a name that is not a submodule (listing close matches) and ``TypeError`` for
    anything else.
    """
    if isinstance(layer, Layer):
        return layer
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
        return Layer(layer, model.get_submodule(layer))
    if isinstance(layer, nn.Module):
        if isinstance(model, nn.Module):
            for name, module in model.named_modules():
                if module is layer:
                    return Layer(name or "<model>", module)
            raise ValueError(f"the {role} layer {type(layer).__name__} is not a submodule of the model")
        return Layer(type(layer).__name__, layer)
    raise TypeError(f"{role}_layer must be an nn.Module or a dotted module name, got {type(layer).__name__}")


def _sum_positions(T: torch.Tensor) -> torch.Tensor:
    return T.flatten(2).sum(2) if T.dim() > 2 else T


def _mean_positions(T: torch.Tensor) -> torch.Tensor:
    return T.flatten(2).mean(2) if T.dim() > 2 else T


TARGET_REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sum": _sum_positions,
    "mean": _mean_positions,
    "none": lambda T: T.flatten(1),
}


def check_reduction(reduction: TargetReduction) -> TargetReduction:
    """``reduction`` if it is a registered name or a callable; ``ValueError`` otherwise."""
    check_choice("target_reduction", reduction, TARGET_REDUCTIONS, allow_callable=True,
                 callable_hint="a callable T -> [N, K]")
    return reduction


def reduce_target(T: torch.Tensor, reduction: TargetReduction) -> torch.Tensor:
    """Reduce a target output ``[B, C, *rest]`` to one scalar per unit, ``[B, K]``.

    ``"sum"`` / ``"mean"`` reduce every dimension after the channel dimension (K = C); ``"none"`` makes every
    element a unit (K = prod(T.shape[1:])); a callable maps ``T`` to ``[B, K]`` itself.
    """
    if callable(reduction):
        out = reduction(T)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != T.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"target_reduction callable must map the target output {tuple(T.shape)} to "
                             f"[N, K] = [{T.shape[0]}, K]; it returned {shape}")
        return out
    if T.dim() < 2:
        raise ValueError(f"target layer output must have a batch and a unit dimension; got shape {tuple(T.shape)}")
    return TARGET_REDUCTIONS[check_reduction(reduction)](T)


@dataclass(frozen=True)
class LayerPair:
    """A source and a target layer of one model, and how the target output becomes K units.

    Build it with ``LayerPair.build(model, source_layer, target_layer, ...)`` (layers by module or dotted name).
    """

    model: Any
    source: Layer
    target: Layer
    reduction: TargetReduction = "sum"
    stop_at_target: bool = True

    @classmethod
    def build(cls, model: Any, source_layer: LayerSpec | Layer, target_layer: LayerSpec | Layer,
              reduction: TargetReduction = "sum", stop_at_target: bool = True) -> LayerPair:
        """Resolve the layers on ``model`` and check the reduction."""
        return cls(model, resolve_layer(model, source_layer, "source"), resolve_layer(model, target_layer, "target"),
                   check_reduction(reduction), stop_at_target)

    def on(self, model: nn.Module) -> LayerPair:
        """The same pair (same dotted names) on another model, e.g. a deep copy with re-initialised parameters."""
        return replace(self, model=model, source=resolve_layer(model, self.source.name, "source"),
                       target=resolve_layer(model, self.target.name, "target"))

    def run(self, inputs: tuple[Any, ...], read_target: bool = True, **options: Any) -> ForwardRecord:
        """Run the model once with the pair's hooks (``read_target=False``: the source only); ``options`` as for
        ``_hooks.run_model`` (``replacement``, ``to_source_input``, ``stop_at_source``, ``stop_at_target``)."""
        options.setdefault("stop_at_target", self.stop_at_target)
        return run_model(self.model, inputs, self.source, self.target if read_target else None, **options)

    def reduce(self, T: torch.Tensor) -> torch.Tensor:
        """The target output ``T`` reduced to ``[N, K]``."""
        return reduce_target(T, self.reduction)
