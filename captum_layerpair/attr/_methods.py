"""Which method was asked for, and how it is built on the layer-pair functions.

A method is a Captum attribution class (or its name, or a factory callable), or a *built-in* method of this
package registered in ``BUILTIN_METHODS``: an object with the ``BuiltinMethod`` protocol that attributes all units
itself. Adding a built-in method is one module plus one line in that registry.
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Protocol
from collections.abc import Callable

import torch

import captum.attr as captum_attr
from captum.attr import (Attribution, Deconvolution, DeepLift, FeatureAblation, FeaturePermutation, GuidedBackprop,
                         LayerAttribution, NoiseTunnel, ShapleyValueSampling)
from torch import nn

from captum_layerpair._typing import MethodSpec
from captum_layerpair.attr.paper_expected_gradients import PAPER_METHODS
from captum_layerpair.layers import LayerPair

__all__ = ["MethodSpec", "resolve_method", "NATIVE_MULTI_OUTPUT", "MODULE_HOOKING", "BUILTIN_METHODS",
           "DISTRIBUTION_BASELINES", "BuiltinMethod", "ResolvedMethod"]



class BuiltinMethod(Protocol):
    """A method of this package: attributes the chosen target units of a layer pair itself."""

    baselines_in_input_space: bool

    def has_convergence_delta(self) -> bool: ...

    def attribute_units(self, pair: LayerPair, inputs: tuple[torch.Tensor, ...],
                        additional_forward_args: tuple[Any, ...], units: torch.Tensor,
                        attribute_to_source_input: bool, target_batch_size: int | None, **kwargs: Any) -> torch.Tensor:
        """``[N, len(units), *source_shape]``."""
        ...

# Captum's perturbation methods that accept a forward returning [N, K] with target=None and give every output
# its attribution from the same perturbed forwards (Occlusion and ShapleyValues are subclasses).
NATIVE_MULTI_OUTPUT = (FeatureAblation, FeaturePermutation, ShapleyValueSampling)

# Methods that hook the model's own modules (and the tensors flowing through them, also before the source).
MODULE_HOOKING = (DeepLift, GuidedBackprop, Deconvolution)

# Methods whose ``baselines`` are a distribution to sample from, not one baseline per example.
DISTRIBUTION_BASELINES = ("GradientShap", "DeepLiftShap", "LayerGradientShap", "LayerDeepLiftShap")

# Methods implemented in this package rather than taken from Captum: name -> BuiltinMethod.
BUILTIN_METHODS: dict[str, BuiltinMethod] = {**PAPER_METHODS}

_CAPTUM_CLASSES = {
    name: obj for name, obj in vars(captum_attr).items()
    if inspect.isclass(obj) and issubclass(obj, Attribution) and obj.__module__.startswith("captum.attr._core")
}


@dataclass(frozen=True)
class ResolvedMethod:
    """A method ready to be built: ``build(function, source_module) -> Attribution`` and its family, or a built-in."""

    name: str
    is_layer_method: bool
    build: Callable[[nn.Module, nn.Module], Attribution] | None  # None for built-in methods
    builtin: BuiltinMethod | None = None

    @property
    def baselines_in_input_space(self) -> bool:
        """Layer methods and some built-ins take model-input baselines; plain methods take source-space ones."""
        return self.is_layer_method or (self.builtin is not None and self.builtin.baselines_in_input_space)

    def instantiate(self, function: nn.Module, source_module: nn.Module) -> Attribution:
        assert self.build is not None
        instance = self.build(function, source_module)
        if not isinstance(instance, Attribution):
            raise TypeError(f"method {self.name!r} built a {type(instance).__name__}, not a captum Attribution")
        return instance


def resolve_method(method: MethodSpec) -> ResolvedMethod:
    """Accept a Captum class, its name (``"IntegratedGradients"``), a built-in name, or a factory callable.

    A factory taking one argument ``forward_func`` builds a plain method (e.g.
    ``lambda f: NoiseTunnel(IntegratedGradients(f))``); one taking ``(forward_func, layer)`` builds a layer method.
    """
    if isinstance(method, str):
        if method in BUILTIN_METHODS:
            return ResolvedMethod(method, False, None, BUILTIN_METHODS[method])
        if method not in _CAPTUM_CLASSES:
            allowed = sorted(_CAPTUM_CLASSES) + list(BUILTIN_METHODS)
            close = difflib.get_close_matches(method, allowed, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown method {method!r}.{hint} Allowed: a captum.attr class, a factory callable, "
                             f"or one of the names {', '.join(allowed)}")
        method = _CAPTUM_CLASSES[method]
    if inspect.isclass(method):
        if not issubclass(method, Attribution):
            raise TypeError(f"method {method.__name__} is not a captum.attr Attribution class")
        if issubclass(method, NoiseTunnel):
            raise ValueError("NoiseTunnel wraps another method, so it cannot be given as a class: pass a factory, "
                             "e.g. method=lambda f: NoiseTunnel(IntegratedGradients(f)), or wrap a layer-pair "
                             "attribution: NoiseTunnel(LayerPairIntegratedGradients(model, source, target))")
        if issubclass(method, LayerAttribution):
            return ResolvedMethod(method.__name__, True, lambda f, layer: method(f, layer))
        return ResolvedMethod(method.__name__, False, lambda f, layer: method(f))
    if callable(method):
        try:
            n_params = len([p for p in inspect.signature(method).parameters.values()
                            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
        except (TypeError, ValueError):
            n_params = 1
        name = getattr(method, "__name__", type(method).__name__)
        if n_params >= 2:
            return ResolvedMethod(name, True, lambda f, layer: method(f, layer))
        return ResolvedMethod(name, False, lambda f, layer: method(f))
    raise TypeError(f"method must be a captum.attr class, its name, or a factory callable; got {type(method).__name__}")
