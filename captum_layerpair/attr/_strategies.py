"""Three ways to get the attributions of a chunk of target units out of a Captum method.

``per_unit``: one Captum run per unit, the RNG reset before each so all units see the same random draws; with a
``SharedForward`` the runs share their forward passes and gradients (the fast path for gradient methods and any
method without native multi-output support), without it they are independent (``vectorize="loop"``).
``native``: one run with ``target=None`` on a function returning all units (Captum's ablation family).
``folded``: one run with the batch repeated once per unit and one target per row (``vectorize="batched"``).
Each returns ``(attributions [N, k, *S], deltas [N, k] or None)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from captum.attr import DeepLift
from captum.attr._utils.attribution import PerturbationAttribution
from torch import nn
from tqdm import tqdm

from captum_layerpair._random import RNGState, rng_state, set_rng_state
from captum_layerpair.attr._methods import DISTRIBUTION_BASELINES, ResolvedMethod
from captum_layerpair.attr._shared_forward import SharedForward

__all__ = ["AttributionJob", "per_unit", "native", "folded"]


@dataclass
class AttributionJob:
    """One attribute call: the method, the function it attributes and the arguments Captum receives.

    ``inputs`` are the attributed inputs (``a`` for plain methods, the model inputs for layer methods);
    ``forward_args`` the additional forward arguments (model inputs and the user's arguments for plain methods).
    """

    method: ResolvedMethod
    function: nn.Module
    source_module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    forward_args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    return_delta: bool = False
    show_progress: bool = False
    rng_state: RNGState = field(default_factory=rng_state)

    def reset_rng(self) -> None:
        """Every unit (and every chunk of units) starts from the RNG state of the attribute call."""
        set_rng_state(self.rng_state)

    @property
    def n(self) -> int:
        return self.inputs[0].shape[0]

    def captum_inputs(self, inputs: tuple[torch.Tensor, ...] | None = None) -> Any:
        inputs = self.inputs if inputs is None else inputs
        return inputs[0] if len(inputs) == 1 else inputs

    def call(self, instance: Any, inputs: Any, target: Any, forward_args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        extra = {"return_convergence_delta": True} if self.return_delta else {}
        result = instance.attribute(inputs, target=target, additional_forward_args=forward_args or None,
                                    **kwargs, **extra)
        attr, delta = result if self.return_delta else (result, None)
        if isinstance(attr, tuple):
            if len(attr) != 1:
                raise TypeError(f"method {self.method.name} returned {len(attr)} attribution tensors; expected one")
            attr = attr[0]
        return attr, delta

    def build(self) -> Any:
        return self.method.instantiate(self.function, self.source_module)


def per_unit(job: AttributionJob, units: torch.Tensor, share_forwards: bool,
             progress: tqdm | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One Captum run per unit of ``units`` (same RNG state for each), sharing forwards if ``share_forwards``."""
    instance = job.build()
    shared = None
    if share_forwards:
        # DeepLift's backward hooks hold per-forward state that one backward pass consumes: batch all units in it
        method = getattr(instance, "attribution_method", instance)  # also NoiseTunnel(DeepLift(...))
        shared = SharedForward(batched_vjp=True if isinstance(method, DeepLift) else None)
    inputs = job.captum_inputs()
    if not job.method.is_layer_method and not isinstance(instance, PerturbationAttribution):
        inputs = inputs.requires_grad_()  # our own copy of the source value: gradient methods need the flag
    attrs: torch.Tensor | None = None  # [N, k, *S], filled unit by unit
    deltas = []
    if shared is not None:
        job.function.units, job.function.shared = units, shared
    try:
        for i, unit in enumerate(units.tolist()):
            job.reset_rng()
            if shared is not None:
                shared.record() if i == 0 else shared.replay()
            target = i if shared is not None else unit
            attr, delta = job.call(instance, inputs, target, job.forward_args, job.kwargs)
            if attrs is None:
                attrs = attr.new_empty(attr.shape[0], len(units), *attr.shape[1:])
            attrs[:, i] = attr.detach()
            deltas.append(delta)
            if progress is not None:
                progress.update(1)
    finally:
        job.function.units, job.function.shared = None, None
    return attrs, _stack_deltas(deltas, job.n)


def native(job: AttributionJob, units: torch.Tensor,
           progress: tqdm | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One run of an ablation-family method with ``target=None`` on a function returning the chunk's units."""
    instance = job.build()
    job.function.units = units
    job.reset_rng()
    try:
        kwargs = dict(job.kwargs)
        if job.show_progress:
            kwargs.setdefault("show_progress", True)
        attr, _ = job.call(instance, job.captum_inputs(), None, job.forward_args, kwargs)
    finally:
        job.function.units = None
    if progress is not None:
        progress.update(len(units))
    return attr.detach().reshape(job.n, len(units), *job.inputs[0].shape[1:]), None


def folded(job: AttributionJob, units: torch.Tensor,
           progress: tqdm | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One run on the batch repeated ``len(units)`` times (unit-major rows), one target per row."""
    k, n = len(units), job.n
    instance = job.build()
    inputs = tuple(_repeat(t, k) for t in job.inputs)
    forward_args = tuple(_repeat(arg, k) if _is_batched(arg, n) else arg for arg in job.forward_args)
    kwargs = dict(job.kwargs)
    for key in ("baselines", "feature_mask"):
        per_example = not (key == "baselines" and job.method.name in DISTRIBUTION_BASELINES)
        if per_example and key in kwargs:
            kwargs[key] = _fold_kwarg(kwargs[key], n, k)
    targets = units.repeat_interleave(n).tolist()
    job.reset_rng()
    attr, delta = job.call(instance, job.captum_inputs(inputs), targets, forward_args, kwargs)
    if progress is not None:
        progress.update(k)
    attr = attr.detach().reshape(k, n, *attr.shape[1:]).transpose(0, 1)
    return attr, None if delta is None else delta.detach().reshape(k, n).transpose(0, 1)


def _is_batched(value: Any, n: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n


def _repeat(t: torch.Tensor, k: int) -> torch.Tensor:
    return t.repeat(k, *([1] * (t.dim() - 1)))


def _fold_kwarg(value: Any, n: int, k: int) -> Any:
    if isinstance(value, tuple):
        return tuple(_fold_kwarg(v, n, k) for v in value)
    return _repeat(value, k) if _is_batched(value, n) and n > 1 else value


def _stack_deltas(deltas: list[torch.Tensor | None], n: int) -> torch.Tensor | None:
    if not deltas or deltas[0] is None:
        return None
    return torch.stack([torch.as_tensor(d).detach().reshape(n) for d in deltas], 1)
