"""Re-initialising a model's parameters, seeded: the one definition of a "random model".

Both the random-model baseline of the latent scores and ``ModelParameterRandomization`` draw a module's new
parameters with ``reinitialize(module, module_seed(seed, name))``, so the same module and seed give the same
parameters everywhere.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from captum_layerpair._random import derive_seed, seeded

__all__ = ["module_seed", "reinitialize", "randomized_copy", "parameterised_modules"]


def module_seed(seed: int, name: str) -> int:
    """The seed with which the module called ``name`` (its dotted name in the model) is re-initialised."""
    return derive_seed(seed, "reinitialize", name)


def parameterised_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(dotted name, module)`` of every module holding parameters of its own, in registration order."""
    return [(name, m) for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]


def reinitialize(module: nn.Module, seed: int) -> bool:
    """Re-initialise ``module``'s own parameters in place from ``seed``; the global RNGs are left as they were.

    Modules with ``reset_parameters()`` use it; other parameters are redrawn from a normal distribution with their
    own standard deviation (1 where that is 0 or undefined). Returns whether any parameter changed (a BatchNorm at
    its defaults keeps its affine parameters; its running statistics are buffers and are reset separately by
    ``reset_running_stats`` where the caller wants that).
    """
    before = [p.detach().clone() for p in module.parameters(recurse=False)]
    with seeded(seed), torch.no_grad():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
        else:
            for param in module.parameters(recurse=False):
                spread = float(param.std()) if param.numel() > 1 else 0.0
                param.normal_(0.0, spread if spread > 0 else 1.0)
    return not all(torch.equal(old, new) for old, new in zip(before, module.parameters(recurse=False)))


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every parameterised module re-initialised by ``reinitialize``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"a random-model copy needs an nn.Module, got {type(model).__name__}")
    clone = copy.deepcopy(model)
    for name, module in parameterised_modules(clone):
        reinitialize(module, module_seed(seed, name))
    return clone
