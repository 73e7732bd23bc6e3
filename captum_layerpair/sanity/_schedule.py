"""Which modules a randomisation check re-initialises, in which order, and where they sit relative to the pair."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from captum_layerpair._hooks import hooks_removed
from captum_layerpair._model_state import model_state_preserved
from captum_layerpair._reinit import module_seed, parameterised_modules
from captum_layerpair.attr.layer_pair import LayerPairAttribution

__all__ = ["Step", "schedule", "parameterised_names"]


@dataclass(frozen=True)
class Step:
    """One randomisation step: the module's dotted name, the seed it is re-initialised with, its position."""

    name: str
    seed: int
    position: str


def parameterised_names(model: nn.Module) -> list[str]:
    """Dotted names of the submodules holding parameters of their own (the model itself excluded)."""
    return [name for name, _ in parameterised_modules(model) if name]


def schedule(pair: LayerPairAttribution, inputs: tuple[Any, ...], attribute_kwargs: dict[str, Any],
             layers: list[str] | None, order: str, seed: int) -> list[Step]:
    """The steps of a check on ``inputs``, in randomisation order.

    Every module is seeded with ``module_seed(seed, name)``, whatever the order, so a module gets the same new
    values in every order and in the random-model baseline of the latent scores.
    """
    runs = _forward_order(pair, inputs, attribute_kwargs)
    if layers is not None:
        missing = [name for name in layers if name not in dict(runs)]
        if missing:
            raise ValueError(f"layers {missing} do not run in the forward pass on these inputs, so randomising "
                             f"them cannot change anything; modules that run: {', '.join(n for n, _ in runs)}")
        runs = [(name, position) for name, position in runs if name in layers]
    steps = [Step(name, module_seed(seed, name), position) for name, position in runs]
    if not steps:
        raise ValueError("no module with parameters runs in the forward pass: nothing to randomise")
    return steps if order == "bottom_up" else steps[::-1]


def _forward_order(pair: LayerPairAttribution, inputs: tuple[Any, ...],
                   attribute_kwargs: dict[str, Any]) -> list[tuple[str, str]]:
    """``(name, position)`` of the parameterised modules that run on ``inputs``, in the order they are first called.

    One forward pass (no gradient, state restored) records when each module is first called and when the source
    value and the target output are ready; ``position`` follows from these times (see ``result.POSITIONS``).
    """
    model = pair.forward_func
    to_source_input = bool(attribute_kwargs.get("attribute_to_source_input", False))
    clock: dict[str, int] = {}

    def stamp(key: str) -> Any:
        def hook(*_: Any) -> None:
            clock.setdefault(key, len(clock))
        return hook

    names = parameterised_names(model)
    extra = attribute_kwargs.get("additional_forward_args")
    extra = () if extra is None else extra if isinstance(extra, tuple) else (extra,)
    with hooks_removed([]) as handles, torch.no_grad(), model_state_preserved(model):
        handles.append(pair.source_layer.register_forward_pre_hook(stamp("<source>")) if to_source_input
                       else pair.source_layer.register_forward_hook(stamp("<source>")))
        handles.append(pair.target_layer.register_forward_hook(stamp("<target>")))
        handles += [model.get_submodule(name).register_forward_pre_hook(stamp(name)) for name in names]
        model(*inputs, *extra)
    source_time, target_time = clock.get("<source>", -1), clock.get("<target>", len(clock))
    runs = sorted((time, name) for name, time in clock.items() if name in names)
    return [(name, "after_target" if time > target_time else "up_to_source" if time < source_time else "between")
            for time, name in runs]
