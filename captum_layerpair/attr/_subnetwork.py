"""The functions Captum methods are applied to.

``SubNetwork`` is ``g_x(a') -> [B, K]``: run the model on ``x`` with the source value replaced by ``a'`` and reduce
the target output to one scalar per target unit. Plain Captum methods attribute it with ``inputs=a``.
``ModelToTarget`` is ``x -> [B, K]`` without replacement; Captum *layer* methods attribute it with
``layer=function.tap``, an identity module the source's selected value flows through (so a selector of a tuple
output, the source's input and in-place operations after the source need nothing from Captum).

Both are ``nn.Module``s holding the user's model, so module-hooking methods (DeepLift, GuidedBackprop) reach its
non-linearities. ``hook_downstream_only`` narrows what such a method hooks to the modules the source value flows
into: the modules before the source (a frozen backbone, a leading ``nn.Sigmoid`` on inputs without
gradient) and those on paths that skip it compute constants of ``g_x``, as in a hand-written sub-network.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from captum_layerpair._hooks import hooks_removed
from captum_layerpair._model_state import model_state_preserved
from captum_layerpair.attr._methods import MODULE_HOOKING
from captum_layerpair.layers import LayerPair

__all__ = ["SubNetwork", "ModelToTarget", "downstream_modules", "hooks_modules"]


class _LayerPairFunction(nn.Module):
    """Shared state of the two functions: the model, the layers, the reduction and the selected units."""

    def __init__(self, pair: LayerPair, n_inputs: int, to_source_input: bool = False) -> None:
        super().__init__()
        self.model = pair.model  # registered as a child when it is a Module, so hooking methods see its layers
        self.pair = pair
        self.n_inputs = n_inputs
        self.to_source_input = to_source_input  # the source value is the source layer's input
        self.units: torch.Tensor | None = None  # restrict the output to these units, e.g. for native paths

    def model_inputs(self, *forward_args: Any) -> tuple[Any, ...]:
        """The model's inputs among the arguments of ``forward``."""
        return forward_args

    def hook_downstream_only(self, *forward_args: Any) -> None:
        """Show module-hooking methods only the leaf modules whose input depends on the source value.

        Captum's DeepLift, GuidedBackprop and LayerDeepLift hook every module of the function they are given;
        after this call (with the arguments ``forward`` will get) ``self.modules()`` holds this function and those
        modules only (found with one forward), while ``forward`` still runs the whole model.
        """
        if not isinstance(self.model, nn.Module):
            return
        modules = downstream_modules(self.pair, self.model_inputs(*forward_args), self.to_source_input)
        model = self._modules.pop("model", None) or self.model
        object.__setattr__(self, "model", model)  # a plain attribute: no longer traversed by .modules()/.apply()
        self.downstream = nn.ModuleList(modules)


class SubNetwork(_LayerPairFunction):
    """``forward(a, *inputs, *additional_forward_args) -> [B, K]`` with the source value replaced by ``a``.

    ``a`` is ``[B, *source_shape]`` and every model input has the same batch ``B`` (Captum expands inputs passed
    through ``additional_forward_args`` together with ``a``). ``self.shared``, when set, is a
    ``SharedForward`` that evaluates all units once and replays them (see ``_shared_forward``); ``self.prefix``,
    when set, a ``PrefixCache`` that serves the modules before the source from one recorded forward (``_prefix``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared = None
        self.prefix = None

    def model_inputs(self, a: torch.Tensor, *rest: Any) -> tuple[Any, ...]:
        return rest

    def evaluate(self, a: torch.Tensor, rest: tuple[Any, ...]) -> torch.Tensor:
        """``g(a)`` for all target units (``[B, K]``), with no sharing."""
        inputs = rest[: self.n_inputs]
        for x in inputs:
            if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] != a.shape[0]:
                raise ValueError(f"the attribution method gave source activations with batch {a.shape[0]} but "
                                 f"model inputs with batch {x.shape[0]}; it must expand additional_forward_args "
                                 "together with its inputs")
        with self.prefix.applied() if self.prefix is not None else nullcontext():
            record = self.pair.run(rest, replacement=a, to_source_input=self.to_source_input)
        out = self.pair.reduce(record.target_output)
        return out if self.units is None else out[:, self.units]

    def forward(self, a: torch.Tensor, *rest: Any) -> torch.Tensor:
        if self.shared is not None:
            return self.shared(a, rest, self.evaluate)
        return self.evaluate(a, rest)


class ModelToTarget(_LayerPairFunction):
    """``forward(*inputs, *additional_forward_args) -> [B, K]``: the model up to the reduced target.

    The source's selected value (its input with ``to_source_input``) passes through ``self.tap``, an identity
    module: Captum layer methods take ``layer=self.tap`` and read or replace the value there.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tap = nn.Identity()

    def forward(self, *rest: Any) -> torch.Tensor:
        record = self.pair.run(rest, replacement=self.tap, to_source_input=self.to_source_input)
        out = self.pair.reduce(record.target_output)
        return out if self.units is None else out[:, self.units]


def downstream_modules(pair: LayerPair, inputs: tuple[Any, ...], to_source_input: bool = False) -> list[nn.Module]:
    """The model's leaf modules (in call order) that receive a tensor depending on the source value.

    One forward on ``inputs`` with the source value as the only tensor that requires a gradient (parameters and
    inputs held constant); the model's state comes back afterwards.
    """
    model = pair.model
    found: dict[int, nn.Module] = {}

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        if any(isinstance(arg, torch.Tensor) and arg.requires_grad for arg in args):
            found.setdefault(id(module), module)

    leaves = [module for module in model.modules() if next(module.children(), None) is None]
    constants = tuple(arg.detach() if isinstance(arg, torch.Tensor) else arg for arg in inputs)
    with model_state_preserved(model), torch.enable_grad(), \
            hooks_removed([leaf.register_forward_pre_hook(pre_hook) for leaf in leaves]):
        for param in model.parameters():
            param.requires_grad_(False)
        pair.run(constants, replacement=lambda value: value.detach().requires_grad_(), to_source_input=to_source_input)
    return list(found.values())


def hooks_modules(instance: Any) -> bool:
    """Whether a Captum attribution (or the method a ``NoiseTunnel`` wraps) hooks the model's own modules."""
    return isinstance(instance, MODULE_HOOKING) or isinstance(getattr(instance, "attribution_method", None),
                                                              MODULE_HOOKING)
