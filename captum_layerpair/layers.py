"""The layer-pair spec: which layers of which model, which part of their value, and how the target becomes K units.

``Layer`` is one layer of a model: its dotted module name, its module, an optional *selector* of one tensor in a
structured value (element 0 of the tuple ``nn.GRU`` or ``nn.MultiheadAttention`` returns, a key of a dict) and
the *layout* of that tensor (which dimension holds the units). ``LayerPair`` is a frozen spec of
``(model, source, target, reduction, stop_at_target)``; every part of the package that needs "model + source +
target" takes one. ``LayerPair.run`` is the one way to run the model with the substitution/capture hooks, and
``LayerPair.on(copy)`` gives the same pair on a copy of the model (random-model baselines, sanity checks).

A layer is given as a module of the model, a dotted name (``"layer1.0.conv1"``), a name with a selector
(``"blocks.0.attn[0]"``, ``"encoder['hidden']"``), a pair ``(module or name, selector)`` where the selector is an
int, a key or a callable ``value -> Tensor`` (which must return one of the tensors of the value, so that it can be
replaced), or a ``Layer``.
"""
from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Union

import torch
from torch import nn

from captum_layerpair._checks import check_choice
from captum_layerpair._hooks import ForwardRecord, run_model
from captum_layerpair._typing import LayerSpec, TargetReduction

__all__ = ["Layer", "LayerPair", "Selector", "LAYOUTS", "resolve_layer", "reduce_target", "check_reduction",
           "check_layout", "TARGET_REDUCTIONS"]

Selector = Union[int, str, Callable[[Any], torch.Tensor]]
"""Which tensor of a layer's value: an index of a tuple/list, a key of a dict, or a callable ``value -> Tensor``."""

LAYOUTS = ("channels_first", "channels_last")
"""``"channels_first"``: ``[N, C, *positions]`` (convolutions); ``"channels_last"``: ``[N, *positions, C]``
(tokens ``[N, L, D]`` of transformers and recurrent layers)."""

_NAME_WITH_SELECTOR = re.compile(r"^(?P<path>[^\[\]]*)\[(?P<selector>[^\[\]]+)\]$")


def check_layout(name: str, layout: str) -> str:
    """``layout`` if it is one of ``LAYOUTS``; ``ValueError`` otherwise."""
    return check_choice(name, layout, LAYOUTS)


@dataclass(frozen=True)
class Layer:
    """One layer of a model.

    Attributes
    ----------
    name:
        The module's dotted name (``"<model>"`` for the model itself).
    module:
        The module.
    selector:
        ``None`` (the module's value is one tensor), an int (element of a tuple / list value), a str (key of a
        dict value, e.g. a Hugging Face ``ModelOutput``), or a callable ``value -> Tensor`` returning one of the
        value's tensors.
    layout:
        ``"channels_first"`` (``[N, C, *positions]``) or ``"channels_last"`` (``[N, *positions, C]``): where the
        units of the selected tensor are, for target reductions and ``aggregate``.
    """

    name: str
    module: nn.Module
    selector: Selector | None = None
    layout: str = "channels_first"

    @property
    def label(self) -> str:
        """The name with its selector, as a user writes it: ``"blocks.0.attn[0]"``."""
        if self.selector is None:
            return self.name
        if callable(self.selector):
            return f"{self.name}[{getattr(self.selector, '__name__', type(self.selector).__name__)}]"
        return f"{self.name}[{self.selector!r}]" if isinstance(self.selector, str) else f"{self.name}[{self.selector}]"

    def __repr__(self) -> str:
        layout = "" if self.layout == "channels_first" else f", {self.layout}"
        return f"Layer({self.label!r}, {type(self.module).__name__}{layout})"

    def select(self, value: Any, what: str = "returns") -> torch.Tensor:
        """The selected tensor of the layer's ``value`` (its output, or the tuple of its positional inputs).

        Raises ``TypeError`` (with the selector to use) when the value is not one tensor and nothing is selected,
        or the selection is not a tensor; ``ValueError`` for an index or key the value does not have.
        """
        if self.selector is None:
            if isinstance(value, torch.Tensor):
                return value
            raise TypeError(f"layer {self.name!r} {what} {_describe(value)}, not a single tensor; select one "
                            f"tensor of it{_suggestion(self.name, value)}, or pick a submodule")
        if callable(self.selector):
            out = self.selector(value)
        elif isinstance(value, Mapping):
            out = _mapping_item(value, self.selector, self.label)
        elif isinstance(value, (tuple, list)) and isinstance(self.selector, int):
            if not -len(value) <= self.selector < len(value):
                raise ValueError(f"layer {self.label!r}: the layer {what} {_describe(value)}; index {self.selector} "
                                 f"is out of range")
            out = value[self.selector]
        else:
            raise TypeError(f"layer {self.label!r}: the layer {what} {_describe(value)}, which the selector "
                            f"{self.selector!r} cannot index (ints index tuples and lists, keys index dicts)")
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layer {self.label!r}: the selected value is a {type(out).__name__}, not a tensor")
        return out

    def substitute(self, value: Any, new: torch.Tensor) -> Any:
        """``value`` with the selected tensor replaced by ``new``; every other part passed on unchanged."""
        if self.selector is None:
            return new
        if callable(self.selector):
            return self._substitute_found(value, new)
        if isinstance(value, Mapping):
            key = _mapping_key(value, self.selector)
            out = copy.copy(value)
            out[key] = new
            return out
        items = list(value)
        items[self.selector] = new
        if isinstance(value, list):
            return items
        return value._make(items) if hasattr(value, "_make") else type(value)(items)

    def _substitute_found(self, value: Any, new: torch.Tensor) -> Any:
        """Replace the tensor a callable selector returned, found by identity among the value's parts."""
        selected = self.selector(value)
        if selected is value:
            return new
        parts = value.items() if isinstance(value, Mapping) else enumerate(value) \
            if isinstance(value, (tuple, list)) else ()
        for key, part in parts:
            if part is selected:
                return replace(self, selector=key).substitute(value, new)
        raise TypeError(f"source layer {self.label!r}: the selector returned a tensor that is not one of the "
                        f"parts of the layer's value ({_describe(value)}), so it cannot be replaced; select a part "
                        f"as it is (e.g. lambda out: out[0]), or give an index: '{self.name}[0]'")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    if isinstance(value, Mapping):
        return f"a {type(value).__name__} with keys {list(value.keys())}"
    if isinstance(value, (tuple, list)):
        parts = ", ".join(f"[{', '.join(map(str, v.shape))}]" if isinstance(v, torch.Tensor) else type(v).__name__
                          for v in value)
        return f"a {type(value).__name__} of {len(value)} ({parts})"
    return f"a {type(value).__name__}"


def _suggestion(name: str, value: Any) -> str:
    if isinstance(value, Mapping):
        keys = [k for k, v in value.items() if isinstance(v, torch.Tensor)]
        return f", e.g. {name}[{keys[0]!r}]" if keys else ""
    if isinstance(value, (tuple, list)):
        index = next((i for i, v in enumerate(value) if isinstance(v, torch.Tensor)), None)
        return "" if index is None else f", e.g. '{name}[{index}]' or ({name!r}, lambda value: value[{index}])"
    return ""


def _mapping_key(value: Mapping, selector: Any) -> Any:
    if isinstance(selector, int) and selector not in value:
        keys = list(value.keys())  # a Hugging Face ModelOutput is indexed by position too
        if -len(keys) <= selector < len(keys):
            return keys[selector]
    return selector


def _mapping_item(value: Mapping, selector: Any, label: str) -> Any:
    key = _mapping_key(value, selector)
    if key not in value:
        raise ValueError(f"layer {label!r}: the layer's value has no key {selector!r}; keys: {list(value.keys())}")
    return value[key]


def _parse_selector(text: str) -> int | str:
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _check_selector(selector: Any, role: str) -> Selector:
    if isinstance(selector, bool) or not (isinstance(selector, (int, str)) or callable(selector)):
        raise TypeError(f"the {role} layer's selector must be an int, a key (str) or a callable value -> Tensor; "
                        f"got {type(selector).__name__}")
    return selector


def _resolve_module(model: Any, layer: LayerSpec, role: str) -> Layer:
    if isinstance(layer, str):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{role} layer {layer!r} is a name, so forward_func must be an nn.Module; "
                            f"got {type(model).__name__}. Pass the layer's module instead.")
        if layer == "":
            return Layer("<model>", model)
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
    raise TypeError(f"{role}_layer must be an nn.Module, a dotted module name (optionally with a selector such as "
                    f"'gru[0]'), a (layer, selector) pair or a Layer; got {type(layer).__name__}")


def resolve_layer(model: Any, layer: LayerSpec | Layer | tuple[LayerSpec, Selector], role: str,
                  layout: str | None = None) -> Layer:
    """The ``Layer`` for ``layer`` given as a module of ``model``, a dotted name with an optional selector
    (``"blocks.0.attn[0]"``), a pair ``(module or name, selector)``, or a ``Layer``.

    ``layout`` (``"channels_first"`` / ``"channels_last"``) sets the layer's layout; ``None`` keeps a ``Layer``'s
    own layout (``"channels_first"`` for everything else).
    Raises ``ValueError`` for a name that is not a submodule (listing close matches) and ``TypeError`` for
    anything else.
    """
    if layout is not None:
        check_layout(f"{role}_layout", layout)
    if isinstance(layer, Layer):
        resolved = layer
    elif isinstance(layer, tuple):
        if len(layer) != 2 or isinstance(layer[0], tuple):
            raise TypeError(f"a {role} layer given as a tuple must be a pair (module or name, selector); got "
                            f"{len(layer)} items")
        if isinstance(layer[0], str) and _NAME_WITH_SELECTOR.match(layer[0]) is not None:
            raise ValueError(f"the {role} layer {layer[0]!r} has a selector in its name and another in the pair; "
                             "give one of them")
        resolved = _resolve_module(model, layer[0], role)
        resolved = replace(resolved, selector=_check_selector(layer[1], role))
    elif isinstance(layer, str) and (match := _NAME_WITH_SELECTOR.match(layer)) is not None:
        resolved = replace(_resolve_module(model, match["path"], role), selector=_parse_selector(match["selector"]))
    else:
        resolved = _resolve_module(model, layer, role)
    return resolved if layout is None else replace(resolved, layout=layout)


def _channels_first(T: torch.Tensor, layout: str) -> torch.Tensor:
    return T.movedim(-1, 1) if layout == "channels_last" and T.dim() > 2 else T


def _sum_positions(T: torch.Tensor) -> torch.Tensor:
    return T.flatten(2).sum(2) if T.dim() > 2 else T


def _mean_positions(T: torch.Tensor) -> torch.Tensor:
    return T.flatten(2).mean(2) if T.dim() > 2 else T


def _position(index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def at_position(T: torch.Tensor) -> torch.Tensor:
        if T.dim() < 3:
            raise ValueError(f"a token reduction needs a target with positions ([N, L, D] channels_last or "
                             f"[N, C, L] channels_first); got shape {tuple(T.shape)}")
        return T.flatten(2)[:, :, index]
    return at_position


TARGET_REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sum": _sum_positions,
    "mean": _mean_positions,
    "none": lambda T: T.flatten(1),
    "first_token": _position(0),
    "last_token": _position(-1),
}
"""Named target reductions ``T [N, C, *positions] -> [N, K]``, applied after moving a channels-last target's
units to dimension 1. ``"first_token"`` reads the first position (the CLS token of a transformer), ``"last_token"``
the last one (the final state of a recurrent layer); both give K = C."""


def check_reduction(reduction: TargetReduction) -> TargetReduction:
    """``reduction`` if it is a registered name or a callable; ``ValueError`` otherwise."""
    check_choice("target_reduction", reduction, TARGET_REDUCTIONS, allow_callable=True,
                 callable_hint="a callable T -> [N, K]")
    return reduction


def reduce_target(T: torch.Tensor, reduction: TargetReduction, layout: str = "channels_first") -> torch.Tensor:
    """Reduce a target output to one scalar per unit, ``[B, K]``.

    ``T`` is ``[B, C, *positions]`` (``layout="channels_first"``) or ``[B, *positions, C]`` (``"channels_last"``).
    ``"sum"`` / ``"mean"`` reduce every position (K = C); ``"first_token"`` / ``"last_token"`` take the first /
    last position (K = C); ``"none"`` makes every element a unit in ``T.flatten(1)`` order (K = prod(T.shape[1:]));
    a callable maps ``T`` as the layer returned it to ``[B, K]`` itself.
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
    check_reduction(reduction)
    if reduction == "none":
        return T.flatten(1)
    return TARGET_REDUCTIONS[reduction](_channels_first(T, layout))


@dataclass(frozen=True)
class LayerPair:
    """A source and a target layer of one model, and how the target output becomes K units.

    Build it with ``LayerPair.build(model, source_layer, target_layer, ...)`` (layers by module, dotted name,
    name with selector, ``(layer, selector)`` pair or ``Layer``).
    """

    model: Any
    source: Layer
    target: Layer
    reduction: TargetReduction = "sum"
    stop_at_target: bool = True

    @classmethod
    def build(cls, model: Any, source_layer: Any, target_layer: Any, reduction: TargetReduction = "sum",
              stop_at_target: bool = True, source_layout: str | None = None,
              target_layout: str | None = None) -> LayerPair:
        """Resolve the layers on ``model`` (with their layouts; ``None`` keeps a ``Layer``'s own, else
        ``"channels_first"``) and check the reduction."""
        return cls(model, resolve_layer(model, source_layer, "source", source_layout),
                   resolve_layer(model, target_layer, "target", target_layout), check_reduction(reduction),
                   stop_at_target)

    def on(self, model: nn.Module) -> LayerPair:
        """The same pair (same dotted names, selectors and layouts) on another model, e.g. a deep copy with
        re-initialised parameters."""
        return replace(self, model=model, source=_same_layer_on(model, self.source, "source"),
                       target=_same_layer_on(model, self.target, "target"))

    def run(self, inputs: tuple[Any, ...], read_target: bool = True, **options: Any) -> ForwardRecord:
        """Run the model once with the pair's hooks (``read_target=False``: the source only); ``options`` as for
        ``_hooks.run_model`` (``replacement``, ``to_source_input``, ``stop_at_source``, ``stop_at_target``)."""
        options.setdefault("stop_at_target", self.stop_at_target)
        return run_model(self.model, inputs, self.source, self.target if read_target else None, **options)

    def reduce(self, T: torch.Tensor) -> torch.Tensor:
        """The target output ``T`` reduced to ``[N, K]`` (in the target's layout)."""
        return reduce_target(T, self.reduction, self.target.layout)


def _same_layer_on(model: nn.Module, layer: Layer, role: str) -> Layer:
    name = "" if layer.name == "<model>" else layer.name
    return replace(layer, module=_resolve_module(model, name, role).module)
