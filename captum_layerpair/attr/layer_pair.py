"""``LayerPairAttribution``: attribute every unit of a target layer onto every unit of an earlier source layer."""
from __future__ import annotations

import copy
from typing import Any, Literal
from collections.abc import Callable

import torch
from captum._utils.common import _format_additional_forward_args, _format_tensor_into_tuples
from captum.attr import Attribution
from captum.log import log_usage
from torch import nn
from tqdm import tqdm

from captum_layerpair._checks import check_choice, check_finite, check_positive_int
from captum_layerpair._model_state import model_state_preserved
from captum_layerpair._typing import LayerSpec, TargetReduction
from captum_layerpair.attr import _strategies
from captum_layerpair.attr._methods import NATIVE_MULTI_OUTPUT, MethodSpec, resolve_method
from captum_layerpair._hooks import module_attributes_restored
from captum_layerpair.attr._subnetwork import ModelToTarget, SubNetwork, hooks_modules
from captum_layerpair.layers import Layer, LayerPair

__all__ = ["LayerPairAttribution"]

Vectorize = Literal["auto", "batched", "loop"]
VECTORIZE = ("auto", "batched", "loop")


class LayerPairAttribution(Attribution):
    r"""Attribute each unit of a *target* layer onto the units of an earlier *source* layer with a Captum method.

    For inputs ``x`` let ``a = S(x)`` be the source layer's output (its input with
    ``attribute_to_source_input=True``). The sub-network ``g_x(a')`` runs the model on ``x`` with the source value
    replaced by ``a'``, captures the target output ``T`` and reduces each target unit to a scalar
    (``target_reduction``), so ``g_x(a') -> [N, K]``. Paths that skip the source keep their values from ``x``.

    * A plain Captum method (Saliency, IntegratedGradients, DeepLift, Occlusion, KernelShap, NoiseTunnel(...), ...)
      attributes ``g_x`` with ``inputs=a``; its ``baselines`` live in source-activation space, and
      ``input_baselines=`` maps model-input baselines there.
    * A Captum layer method (LayerIntegratedGradients, LayerConductance, ...) attributes ``x -> [N, K]`` with
      ``layer=source``; its ``baselines`` (and ``input_baselines``) live in model-input space.

    All target units come from one call. Gradient methods share one forward pass per step and back-propagate
    each unit through that recorded graph (memory independent of K); Captum's ablation family reads every unit
    from the same perturbed forwards; other methods share their forwards across units; the input -> source prefix
    runs once per call. Every unit sees the same random draws (noise, interpolation points, baselines), so units
    are comparable and the fast path equals the loop.

    Parameters
    ----------
    forward_func:
        The model (an ``nn.Module``; any callable when the layers are given as modules).
    source_layer, target_layer:
        ``nn.Module``s of the model or dotted names (``"layer1.0.conv1"``). The source must run before the
        target completes, and each must run exactly once per forward pass. A layer whose value is a tuple or dict
        (``nn.GRU``, ``nn.MultiheadAttention``, a VAE head) needs a selector of one tensor: ``"gru[0]"``,
        ``"blocks.0.attn[0]"``, ``"head['mu']"``, or a pair ``(layer, selector)`` with an int, a key or a callable
        ``value -> Tensor`` returning one of the value's tensors. Only the selected tensor of the source is
        replaced; the rest of its value is passed on unchanged.
    method:
        A ``captum.attr`` class, its name, ``"paper_expected_gradients"``, or a factory callable
        ``forward_func -> Attribution`` (plain) / ``(forward_func, layer) -> Attribution`` (layer method).
    target_reduction:
        ``"sum"`` (default) or ``"mean"`` over every position (K = channels), ``"first_token"`` /
        ``"last_token"`` (the first / last position, e.g. the CLS token; K = channels), ``"none"`` (every element
        a unit, K = prod(T.shape[1:])), or a callable ``T -> [N, K]``.
    method_kwargs:
        Default keyword arguments for the method's ``attribute`` (e.g. ``{"n_steps": 32}``).
    vectorize:
        ``"auto"`` (fast paths), ``"loop"`` (one independent Captum run per unit) or ``"batched"`` (one run with
        the batch repeated per unit; exact for deterministic methods).
    stop_at_target:
        End each forward pass once the target output is captured (turn off for models whose forward swallows
        exceptions).
    source_layout, target_layout:
        ``"channels_first"`` (``[N, C, *positions]``, the default) or ``"channels_last"`` (``[N, *positions, C]``,
        e.g. the ``[N, L, D]`` tokens of a transformer): which dimension of the layer's value holds its units.
        The target's layout decides what ``target_reduction`` reduces (``"sum"`` on a channels-last ``[N, L, D]``
        target sums the tokens, K = D; ``"first_token"`` reads the CLS token); the source's layout is
        ``lp.source.layout``, for ``aggregate(A, layout=...)`` and the scores. ``None`` keeps the layout of a
        ``Layer`` given as the layer.

    Examples
    --------
    >>> lp = LayerPairAttribution(model, "layer1.0.conv1", model.embed, method=IntegratedGradients)
    >>> A = lp.attribute(x, n_steps=32)              # [N, K, C, H, W]
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        source_layer: LayerSpec,
        target_layer: LayerSpec,
        method: MethodSpec,
        target_reduction: TargetReduction = "sum",
        method_kwargs: dict[str, Any] | None = None,
        vectorize: Vectorize = "auto",
        stop_at_target: bool = True,
        source_layout: str | None = None,
        target_layout: str | None = None,
    ) -> None:
        super().__init__(forward_func)
        self.pair = LayerPair.build(forward_func, source_layer, target_layer, target_reduction, stop_at_target,
                                    source_layout, target_layout)
        self.method = resolve_method(method)
        check_choice("vectorize", vectorize, VECTORIZE)
        self.method_kwargs = dict(method_kwargs or {})
        self.vectorize = vectorize

    @property
    def source(self) -> Layer:
        return self.pair.source

    @property
    def target(self) -> Layer:
        return self.pair.target

    @property
    def target_reduction(self) -> TargetReduction:
        return self.pair.reduction

    @property
    def stop_at_target(self) -> bool:
        return self.pair.stop_at_target

    @property
    def source_layer(self) -> nn.Module:
        return self.pair.source.module

    @property
    def target_layer(self) -> nn.Module:
        return self.pair.target.module

    def on(self, model: nn.Module) -> LayerPairAttribution:
        """The same attribution (method, layers by name, options) on another model, e.g. a re-initialised copy."""
        clone = copy.copy(self)
        clone.forward_func = model
        clone.pair = self.pair.on(model)
        return clone

    def has_convergence_delta(self) -> bool:
        """Whether the method has a convergence delta (asked of the method itself)."""
        if self.method.builtin is not None:
            return self.method.builtin.has_convergence_delta()
        function = ModelToTarget(self.pair, 1) if self.method.is_layer_method else SubNetwork(self.pair, 1)
        return bool(self.method.instantiate(function, self.source_layer).has_convergence_delta())

    def source_activations(self, inputs: Any, additional_forward_args: Any = None,
                           attribute_to_source_input: bool = False) -> torch.Tensor:
        """The source layer's value on ``inputs``: ``[N, *source_shape]`` (detached; no gradient)."""
        x = _format_tensor_into_tuples(inputs)
        args = _format_additional_forward_args(additional_forward_args) or ()
        with torch.no_grad(), model_state_preserved(self.forward_func):
            record = self.pair.run((*x, *args), read_target=False, to_source_input=attribute_to_source_input,
                                   stop_at_source=True)
        return record.source_value.detach()

    def target_units(self, inputs: Any, additional_forward_args: Any = None) -> int:
        """The number of target units K for these inputs (after ``target_reduction``)."""
        x = _format_tensor_into_tuples(inputs)
        args = _format_additional_forward_args(additional_forward_args) or ()
        with torch.no_grad(), model_state_preserved(self.forward_func):
            record = self.pair.run((*x, *args))
        return self.pair.reduce(record.target_output).shape[1]

    def subnetwork(self, inputs: Any, additional_forward_args: Any = None, attribute_to_source_input: bool = False,
                   ) -> tuple[nn.Module, torch.Tensor, tuple[Any, ...]]:
        """The sub-network ``g_x`` that plain methods attribute, for use with Captum's metrics.

        Returns ``(g, a, forward_args)``: ``g(a', *forward_args) -> [N, K]`` runs the model on the inputs with the
        source value replaced by ``a'``; ``a`` is the source value ``[N, *source_shape]``; ``forward_args`` are the
        model inputs (and extra arguments), which Captum expands with the batch like any
        ``additional_forward_args``. For unit ``k``::

            g, a, args = lp.subnetwork(x)
            A = lp.attribute(x, target=k)
            captum.metrics.infidelity(g, perturb_fn, a, A, additional_forward_args=args, target=k)
            captum.metrics.sensitivity_max(Saliency(g).attribute, a, additional_forward_args=args, target=k)
        """
        x = _format_tensor_into_tuples(inputs)
        _check_inputs(x)
        args = _format_additional_forward_args(additional_forward_args) or ()
        a = self.source_activations(x if len(x) > 1 else x[0], additional_forward_args, attribute_to_source_input)
        return SubNetwork(self.pair, len(x), to_source_input=attribute_to_source_input), a, (*x, *args)

    @log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: int | list[int] | torch.Tensor | None = None,
        additional_forward_args: Any = None,
        attribute_to_source_input: bool = False,
        target_batch_size: int | None = None,
        return_convergence_delta: bool = False,
        show_progress: bool = False,
        input_baselines: torch.Tensor | float | None = None,
        vectorize: Vectorize | None = None,
        **method_kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        r"""Attribute the target units to the source layer's units.

        Parameters
        ----------
        inputs:
            Model inputs ``[N, ...]`` (or a tuple of them).
        target:
            ``None``: all K target units; an ``int``: one unit; a list / 1-D tensor of unit indices.
        additional_forward_args:
            Extra model arguments, expanded with the batch as in Captum.
        attribute_to_source_input:
            Attribute to the source layer's input instead of its output.
        target_batch_size:
            Process this many target units at a time (each chunk runs its own forward passes; bounds the
            Jacobian rows DeepLift-type methods hold). ``internal_batch_size`` (IntegratedGradients) bounds the
            forward graphs gradient methods keep: one graph of at most that many rows at a time, the units in
            groups whose gradient rows fit in that graph's memory (each group repeats the forward passes).
        return_convergence_delta:
            Also return the method's convergence delta per sample and unit, measured against ``g_x``.
        show_progress:
            Show a progress bar over target units.
        input_baselines:
            Baselines in model-input space (e.g. a black image, ``[N or 1, ...]`` or a number); for plain methods
            they are mapped to the source layer (``baselines = source_activations(input_baselines)``).
        vectorize:
            Overrides the constructor's choice for this call.
        **method_kwargs:
            Passed to the method's ``attribute`` (``baselines``, ``n_steps``, ``sliding_window_shapes``, ...).

        Returns
        -------
        attributions:
            ``[N, K, *source_shape]`` for ``target=None``, ``[N, *source_shape]`` for an int,
            ``[N, len(target), *source_shape]`` for a list.
        delta:
            With ``return_convergence_delta=True``: ``[N, K]`` (``[N]`` for an int target); ``[N, K, m]``
            (``[N, m]``) for methods that give ``m`` deltas per example, as Captum returns them: a NoiseTunnel
            one per noise draw (``m = nt_samples``), GradientShap one per sample, DeepLiftShap one per baseline.
        """
        x = _format_tensor_into_tuples(inputs)
        _check_inputs(x)
        args = _format_additional_forward_args(additional_forward_args) or ()
        kwargs = {**self.method_kwargs, **method_kwargs}
        vectorize = check_choice("vectorize", vectorize or self.vectorize, VECTORIZE)
        check_positive_int("target_batch_size", target_batch_size, allow_none=True)
        if self.source_layer is self.target_layer and not attribute_to_source_input:
            raise ValueError(f"source and target are the same layer {self.source.name!r}; the source must come "
                             "strictly before the target (or use attribute_to_source_input=True)")
        with model_state_preserved(self.forward_func), module_attributes_restored(self.forward_func):
            with torch.no_grad():
                record = self.pair.run((*x, *args), to_source_input=attribute_to_source_input, stop_at_target=False)
                check_finite(f"the output of target layer {self.target.name!r} (check the model's weights and "
                             "inputs)", record.target_output)
                n_units = self.pair.reduce(record.target_output).shape[1]
            units, squeeze = _parse_target(target, n_units)
            if input_baselines is not None:
                if "baselines" in kwargs:
                    raise ValueError("give either baselines (source space) or input_baselines (input space), not both")
                check_finite("input_baselines", input_baselines)
                kwargs["baselines"] = self._map_input_baselines(input_baselines, x, args, attribute_to_source_input)
            elif "baselines" in kwargs:
                check_finite("baselines", kwargs["baselines"])
                if not self.method.baselines_in_input_space:
                    _check_source_space(kwargs["baselines"], record.source_value, self.source.name)
            if return_convergence_delta and not self.has_convergence_delta():
                raise ValueError(f"method {self.method.name} has no convergence delta; "
                                 "call attribute with return_convergence_delta=False")
            if self.method.builtin is not None:
                attr = self.method.builtin.attribute_units(self.pair, x, args, units, attribute_to_source_input,
                                                           target_batch_size, **kwargs)
                delta = None
            else:
                job = self._job(record.source_value, x, args, kwargs, attribute_to_source_input,
                                return_convergence_delta, show_progress)
                attr, delta = self._run_chunks(job, units, target_batch_size, vectorize, show_progress)
        if squeeze:
            attr, delta = attr[:, 0], None if delta is None else delta[:, 0]
        return (attr, delta) if return_convergence_delta else attr

    def _map_input_baselines(self, input_baselines: Any, x: tuple[torch.Tensor, ...], args: tuple[Any, ...],
                             to_source_input: bool) -> Any:
        if self.method.baselines_in_input_space:
            return input_baselines
        if not isinstance(input_baselines, torch.Tensor):
            input_baselines = torch.full_like(x[0], float(input_baselines))
        if len(x) > 1:
            raise ValueError("input_baselines supports single-input models; pass source-space baselines instead")
        ref_args = args if input_baselines.shape[0] == x[0].shape[0] else ()
        return self.source_activations(input_baselines, ref_args or None, to_source_input)

    def _job(self, source_value: torch.Tensor, x: tuple[torch.Tensor, ...], args: tuple[Any, ...],
             kwargs: dict[str, Any], to_source_input: bool, return_delta: bool,
             show_progress: bool) -> _strategies.AttributionJob:
        if self.method.is_layer_method:  # Captum reads the source at the function's tap (an identity module)
            model_to_target = ModelToTarget(self.pair, len(x), to_source_input=to_source_input)
            return _strategies.AttributionJob(self.method, model_to_target, model_to_target.tap, x, args, kwargs,
                                              return_delta, show_progress)
        function = SubNetwork(self.pair, len(x), to_source_input=to_source_input)
        return _strategies.AttributionJob(self.method, function, self.source_layer, (source_value.detach(),),
                                          (*x, *args), kwargs, return_delta, show_progress)

    def _run_chunks(self, job: _strategies.AttributionJob, units: torch.Tensor, target_batch_size: int | None,
                    vectorize: str, show_progress: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = target_batch_size or len(units)
        instance = job.build()
        is_native = not job.method.is_layer_method and isinstance(instance, NATIVE_MULTI_OUTPUT)
        if hooks_modules(instance):  # DeepLift, GuidedBackprop, LayerDeepLift: hook only the modules after the source
            job.function.hook_downstream_only(*job.inputs, *job.forward_args)
        if isinstance(self.forward_func, nn.Module):
            # Captum differentiates w.r.t. our own copy of the source value (or the value at the tap) only: without
            # a graph for the parameters every backward pass is cheaper, and in-place operations of the model on
            # tensors it would save for parameter gradients cannot break the backward pass. The flags come back
            # with the model state.
            for param in self.forward_func.parameters():
                param.requires_grad_(False)
        attrs, deltas = [], []
        with tqdm(total=len(units), desc=f"LayerPair {job.method.name}", unit="unit",
                  disable=not show_progress) as progress:
            for start in range(0, len(units), size):
                chunk = units[start:start + size]
                if vectorize == "batched":
                    attr, delta = _strategies.folded(job, chunk, progress)
                elif vectorize == "loop" or job.method.is_layer_method:
                    attr, delta = _strategies.per_unit(job, chunk, False, progress)
                elif is_native:
                    attr, delta = _strategies.native(job, chunk, progress)
                else:
                    attr, delta = _strategies.per_unit(job, chunk, True, progress)
                attrs.append(attr)
                deltas.append(delta)
        attr = attrs[0] if len(attrs) == 1 else torch.cat(attrs, 1)
        delta = None if deltas[0] is None else torch.cat(deltas, 1)
        return attr, delta


def _check_inputs(x: tuple[torch.Tensor, ...]) -> None:
    for i, t in enumerate(x):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"inputs must be tensors; input {i} is a {type(t).__name__}")
    check_finite("inputs", x if len(x) > 1 else x[0])


def _check_source_space(baselines: Any, source_value: torch.Tensor, source_name: str) -> None:
    """Plain methods take baselines in source-activation space: refuse other shapes in one line."""
    for b in baselines if isinstance(baselines, tuple) else (baselines,):
        if isinstance(b, torch.Tensor) and b.numel() > 1 and b.shape[1:] != source_value.shape[1:]:
            raise ValueError(f"baselines of shape {tuple(b.shape)} do not fit source layer {source_name!r}: plain "
                             f"methods take baselines in source-activation space, [N or 1, "
                             f"{', '.join(map(str, source_value.shape[1:]))}]; for model-input baselines (e.g. a "
                             "black image) use input_baselines=")


def _parse_target(target: Any, n_units: int) -> tuple[torch.Tensor, bool]:
    """Unit indices ``[k]`` and whether the unit dimension is dropped (int target)."""
    if target is None:
        return torch.arange(n_units), False
    if isinstance(target, bool):
        raise TypeError("target must be None, an int, or a list / 1-D tensor of ints; got a bool")
    if isinstance(target, int) or (isinstance(target, torch.Tensor) and target.dim() == 0):
        units, squeeze = torch.tensor([int(target)]), True
    elif isinstance(target, (list, tuple, torch.Tensor)):
        units = torch.as_tensor(target)
        if units.dim() != 1 or units.numel() == 0 or units.is_floating_point():
            raise ValueError(f"target as a list / tensor must be a non-empty 1-D sequence of ints; got {target!r}")
        squeeze = False
    else:
        raise TypeError(f"target must be None, an int, or a list / 1-D tensor of ints; got {type(target).__name__}")
    bad = units[(units < 0) | (units >= n_units)]
    if bad.numel():
        raise ValueError(f"target unit {bad[0].item()} is out of range: the target layer has K = {n_units} units "
                         f"(indices 0 .. {n_units - 1})")
    return units.long(), squeeze
