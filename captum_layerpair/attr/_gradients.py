"""Saliency and InputXGradient for all target units from one forward pass, with Captum's arithmetic.

Both are one gradient per unit: Captum's run for unit ``k`` evaluates ``g(a)``, back-propagates ``g(a)[:, k]``
(a one-hot ``[N, K]`` output gradient) and returns ``|grad|`` or ``grad`` (Saliency) or ``a * grad``
(InputXGradient). Here ``g(a)`` is evaluated once and each unit's output gradient is back-propagated through that
graph, without the per-unit Captum calls around it; the values are the same operations on the same numbers.
Calls this module does not cover (subclasses, a replaced ``gradient_func``, other keyword arguments) return
``None`` and run in Captum.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum._utils.gradient import compute_gradients
from captum.attr import InputXGradient, Saliency

__all__ = ["gradient_attributions"]

_KWARGS: dict[type, set[str]] = {Saliency: {"abs"}, InputXGradient: set()}


def gradient_attributions(instance: Any, function: Callable[..., torch.Tensor], a: torch.Tensor,
                          forward_args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """Attributions ``[N, K, *S]`` of ``instance`` (Saliency or InputXGradient) for every output of
    ``function(a, *forward_args) -> [N, K]``, or ``None`` where this module does not cover the call."""
    kind = type(instance)
    if kind not in _KWARGS or not set(kwargs) <= _KWARGS[kind] or instance.gradient_func is not compute_gradients:
        return None
    with torch.enable_grad():
        leaf = a.detach().requires_grad_()
        out = function(leaf, *forward_args)
        if out.dim() != 2 or out.shape[0] != len(a):
            return None
        K = out.shape[1]
        attrs = a.new_empty(len(a), K, *a.shape[1:])
        for k in range(K):
            grad_out = torch.zeros_like(out)
            grad_out[:, k] = 1
            (grad,) = torch.autograd.grad(out, leaf, grad_outputs=grad_out, retain_graph=k < K - 1)
            if kind is InputXGradient:
                attrs[:, k] = a * grad
            else:
                attrs[:, k] = grad.abs() if kwargs.get("abs", True) else grad
    return attrs
