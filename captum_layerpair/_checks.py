"""Argument checks shared across the package: one message format, written once."""
from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch

__all__ = ["check_choice", "check_positive_int", "check_probability", "check_finite"]

def check_choice(name: str, value: Any, registry: Mapping[str, Any] | Collection[str],
                 allow_callable: bool = False, callable_hint: str = "a callable") -> Any:
    """Return ``registry[value]`` (or ``value`` for a collection, or the callable itself when allowed).

    Raises ``ValueError`` naming the unknown value, the allowed names and close matches.
    """
    if allow_callable and callable(value) and not isinstance(value, str):
        return value
    if isinstance(value, str) and value in registry:
        return registry[value] if isinstance(registry, Mapping) else value
    allowed = sorted(registry)
    close = difflib.get_close_matches(str(value), allowed, n=3, cutoff=0.5) if isinstance(value, str) else []
    hint = f" Did you mean: {', '.join(map(repr, close))}?" if close else ""
    extra = f" or {callable_hint}" if allow_callable else ""
    raise ValueError(f"unknown {name} {value!r}.{hint} Allowed: {', '.join(map(repr, allowed))}{extra}")

def check_positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    """``value`` as an int >= 1 (or None when allowed); ``ValueError``/``TypeError`` otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int{' or None' if allow_none else ''}, "
                        f"got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value}")
    return value

def check_probability(name: str, value: Any, open_interval: bool = True) -> float:
    """``value`` as a float in (0, 1) (``[0, 1]`` with ``open_interval=False``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    ok = 0 < value < 1 if open_interval else 0 <= value <= 1
    if not ok:
        raise ValueError(f"{name} must lie in {'(0, 1)' if open_interval else '[0, 1]'}, got {value}")
    return float(value)

def check_finite(name: str, value: Any) -> Any:
    """Refuse a floating tensor (or a tuple of them) holding NaN or inf, naming how many values are bad."""
    if isinstance(value, tuple):
        for i, v in enumerate(value):
            check_finite(f"{name}[{i}]", v)
        return value
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        bad = ~torch.isfinite(value)
        if bad.any():
            raise ValueError(f"{name} contains {int(bad.sum())} NaN or inf values (shape {tuple(value.shape)}); "
                             "give finite values")
    elif isinstance(value, float) and not torch.isfinite(torch.tensor(value)):
        raise ValueError(f"{name} is {value}; give a finite number")
    return value

Predicate = Callable[[Any], bool]
