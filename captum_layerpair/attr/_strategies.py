"""Three ways to get the attributions of a chunk of target units out of a Captum method.

``per_unit``: one Captum run per unit, the RNG reset before each so all units see the same random draws; with a
``SharedForward`` the runs share their forward passes and gradients (the fast path for gradient methods and any
method without native multi-output support), without it they are independent (``vectorize="loop"``). Saliency and
InputXGradient skip the per-unit runs: one forward pass, one backward pass per unit (``_gradients``).
``native``: Captum's ablation family for all units from the same perturbed forwards, with our own accounting
(``_ablation``), or one Captum run with ``target=None`` where that does not cover the call.
``folded``: one run with the batch repeated once per unit and one target per row (``vectorize="batched"``).
Each returns ``(attributions [N, k, *S], deltas [N, k] or None)``; methods that return several deltas per example
(a NoiseTunnel: one per noise draw; GradientShap, DeepLiftShap: one per sample or baseline) give ``[N, k, m]``.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from captum.attr import DeepLift, NoiseTunnel, PerturbationAttribution
from torch import nn
from tqdm import tqdm

from captum_layerpair._random import RNGState, rng_state, set_rng_state
from captum_layerpair.attr._ablation import ablation_attributions
from captum_layerpair.attr._gradients import gradient_attributions
from captum_layerpair.attr._methods import DISTRIBUTION_BASELINES, MODULE_HOOKING, ResolvedMethod
from captum_layerpair.attr._prefix import PrefixCache
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
    prefix: PrefixCache | None | bool = field(default=None, repr=False)  # False: recorded, nothing to reuse

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

    def share_prefix(self) -> None:
        """Serve the sub-network's input -> source prefix from one forward recorded per call (``_prefix``)."""
        if self.method.is_layer_method or not hasattr(self.function, "prefix"):
            return
        if self.prefix is None:
            to_input = self.function.to_source_input
            self.prefix = PrefixCache.record(self.function.pair, self.forward_args, to_input,
                                             None if to_input else self.inputs[0]) or False
        self.function.prefix = self.prefix or None


def per_unit(job: AttributionJob, units: torch.Tensor, share_forwards: bool,
             progress: tqdm | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One Captum run per unit of ``units`` (same RNG state for each), sharing forwards if ``share_forwards``.

    Shared forwards keep their graphs for the later units (``SharedForward`` lazy mode), except for methods that
    hook the model's modules and, with ``internal_batch_size``, to bound memory by it (``_bounded``).
    """
    instance = job.build()
    if not share_forwards:
        return _run_units(job, instance, units, None, progress)
    if not job.return_delta and len(job.inputs) == 1:
        with _sub_network(job, units):
            attr = gradient_attributions(instance, job.function, job.inputs[0], job.forward_args, job.kwargs)
        if attr is not None:  # Saliency, InputXGradient: one forward, one backward pass per unit, no Captum call
            if progress is not None:
                progress.update(len(units))
            return attr, None
    inner = instance.attribution_method if isinstance(instance, NoiseTunnel) else instance
    if isinstance(inner, MODULE_HOOKING):
        # their backward hooks hold per-forward state that one backward pass consumes: all rows from that pass
        shared = SharedForward("eager", batched_vjp=True if isinstance(inner, DeepLift) else None)
        return _run_units(job, instance, units, shared, progress)
    if job.kwargs.get("internal_batch_size") is not None:
        return _bounded(job, units, job.kwargs["internal_batch_size"], progress)
    return _run_units(job, instance, units, SharedForward("lazy"), progress)


def _bounded(job: AttributionJob, units: torch.Tensor, internal_batch_size: int,
             progress: tqdm | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Memory bounded by ``internal_batch_size``: no forward graph outlives its evaluation (of at most that many
    rows); the evaluation's Jacobian rows for a group of units are kept instead. The first unit, run alone,
    measures what a graph row and the unit's rows cost; the groups are as large as keeps their rows within the
    memory of one evaluation's graph (``SharedForward.units_within_graph``)."""
    first = SharedForward("eager", measure=True)
    attr, delta = _run_units(job, job.build(), units[:1], first, progress)
    attrs = attr.new_empty(attr.shape[0], len(units), *attr.shape[2:])  # filled group by group: no concatenation
    attrs[:, :1] = attr
    deltas = [delta]
    size = first.units_within_graph(internal_batch_size)
    for start in range(1, len(units), size):
        group = units[start:start + size]
        _, delta = _run_units(job, job.build(), group, SharedForward("eager"), progress, attrs[:, start:start + size])
        deltas.append(delta)
    return attrs, None if deltas[0] is None else torch.cat(deltas, 1)


def _run_units(job: AttributionJob, instance: Any, units: torch.Tensor, shared: SharedForward | None,
               progress: tqdm | None, attrs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the method once per unit; write the attributions into ``attrs [N, k, *S]`` (allocated if ``None``)."""
    inputs = job.captum_inputs()
    if not job.method.is_layer_method and not isinstance(instance, PerturbationAttribution):
        inputs = inputs.requires_grad_()  # our own copy of the source value: gradient methods need the flag
    deltas = []
    with _sub_network(job, units) if shared is not None else nullcontext():
        if shared is not None:
            job.function.shared = shared
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
            if shared is not None:
                job.function.shared = None
                shared.release()
    return attrs, _stack_deltas(deltas, job.n, instance, job.kwargs)


@contextmanager
def _sub_network(job: AttributionJob, units: torch.Tensor) -> Iterator[None]:
    """The sub-network restricted to ``units``, with the prefix served, for the block."""
    job.function.units = units
    job.share_prefix()
    try:
        yield
    finally:
        job.function.units = None
        if hasattr(job.function, "prefix"):
            job.function.prefix = None


def native(job: AttributionJob, units: torch.Tensor,
           progress: tqdm | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An ablation-family method for all of the chunk's units from the same perturbed forwards."""
    instance = job.build()
    job.reset_rng()
    attr = None
    with _sub_network(job, units):
        if len(job.inputs) == 1 and not job.return_delta:
            attr = ablation_attributions(instance, job.function, job.inputs[0], job.forward_args, job.kwargs,
                                         job.show_progress)
        if attr is None and not _per_example_mask(job):  # Captum's own multi-output accounting
            kwargs = dict(job.kwargs)
            if job.show_progress:
                kwargs.setdefault("show_progress", True)
            attr, _ = job.call(instance, job.captum_inputs(), None, job.forward_args, kwargs)
    if attr is None:  # a per-example mask Captum's multi-output accounting cannot broadcast
        return per_unit(job, units, True, progress)
    if progress is not None:
        progress.update(len(units))
    return attr.detach().reshape(job.n, len(units), *job.inputs[0].shape[1:]), None


def _per_example_mask(job: AttributionJob) -> bool:
    masks = job.kwargs.get("feature_mask")
    masks = masks if isinstance(masks, tuple) else (masks,)
    return job.n > 1 and any(isinstance(m, torch.Tensor) and m.dim() == job.inputs[0].dim() and m.shape[0] > 1
                             for m in masks)


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
    if delta is None:
        return attr, None
    delta = _deltas_per_example(torch.as_tensor(delta).detach(), k * n, instance, kwargs)  # [k n, m]
    delta = delta.reshape(k, n, -1).transpose(0, 1)
    return attr, delta[..., 0] if delta.shape[-1] == 1 else delta


def _is_batched(value: Any, n: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n


def _repeat(t: torch.Tensor, k: int) -> torch.Tensor:
    return t.repeat(k, *([1] * (t.dim() - 1)))


def _fold_kwarg(value: Any, n: int, k: int) -> Any:
    if isinstance(value, tuple):
        return tuple(_fold_kwarg(v, n, k) for v in value)
    return _repeat(value, k) if _is_batched(value, n) and n > 1 else value


def _stack_deltas(deltas: list[torch.Tensor | None], n: int, instance: Any,
                  kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The per-unit deltas as ``[N, k]``, or ``[N, k, m]`` for methods with ``m > 1`` deltas per example."""
    if not deltas or deltas[0] is None:
        return None
    stacked = torch.stack([_deltas_per_example(torch.as_tensor(d).detach(), n, instance, kwargs) for d in deltas], 1)
    return stacked[..., 0] if stacked.shape[-1] == 1 else stacked


def _deltas_per_example(delta: torch.Tensor, n: int, instance: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    """One method run's deltas as ``[n, m]``: Captum returns ``m`` per example, example-major (``repeat_interleave``
    of the inputs), and a NoiseTunnel concatenates its batches of ``nt_samples_batch_size`` draws."""
    delta = delta.reshape(-1)
    if isinstance(instance, NoiseTunnel) and delta.numel() > n:
        total = kwargs.get("nt_samples", 5)
        size = min(total, kwargs.get("nt_samples_batch_size") or total)
        sizes = [size] * (total // size) + ([total % size] if total % size else [])
        if sum(sizes) * n == delta.numel():
            return torch.cat([part.reshape(n, -1) for part in delta.split([s * n for s in sizes])], 1)
    return delta.reshape(n, -1)
