"""The functions Captum methods are applied to.

``SubNetwork`` is ``g_x(a') -> [B, K]``: run the model on ``x`` with the source value replaced by ``a'`` and reduce
the target output to one scalar per target unit. Plain Captum methods attribute it with ``inputs=a``.
``ModelToTarget`` is ``x -> [B, K]`` without replacement; Captum *layer* methods attribute it with
``layer=source``. Both are ``nn.Module``s holding the user's model, so module-hooking methods (DeepLift,
GuidedBackprop) reach its non-linearities.
"""
from __future__ import annotations

from typing import Any, Union
from collections.abc import Callable

import torch
from torch import nn

from captum_layerpair._layers import run_model

__all__ = ["TargetReduction", "reduce_target", "SubNetwork", "ModelToTarget"]

TargetReduction = Union[str, Callable[[torch.Tensor], torch.Tensor]]


def reduce_target(T: torch.Tensor, reduction: TargetReduction) -> torch.Tensor:
    """Reduce a target output ``[B, C, *rest]`` to one scalar per unit, ``[B, K]``.

    ``"sum"`` / ``"mean"`` reduce every dimension after the channel dimension (K = C); ``"none"`` makes every
    element a unit (K = prod(T.shape[1:])); a callable maps ``T`` to ``[B, K]`` itself.
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
    if reduction == "none":
        return T.flatten(1)
    if reduction == "sum":
        return T.flatten(2).sum(2) if T.dim() > 2 else T
    if reduction == "mean":
        return T.flatten(2).mean(2) if T.dim() > 2 else T
    raise ValueError(f"unknown target_reduction {reduction!r}; allowed: 'sum', 'mean', 'none' or a callable "
                     "T -> [N, K]")


class _LayerPairFunction(nn.Module):
    """Shared state of the two functions: the model, the layers, the reduction and the selected units."""

    def __init__(self, model: Callable[..., Any], source: tuple[str, nn.Module], target: tuple[str, nn.Module],
                 reduction: TargetReduction, stop_at_target: bool, n_inputs: int) -> None:
        super().__init__()
        self.model = model  # registered as a child when it is a Module, so hooking methods see its layers
        self.source = source
        self.target = target
        self.reduction = reduction
        self.stop_at_target = stop_at_target
        self.n_inputs = n_inputs
        self.units: torch.Tensor | None = None  # restrict the output to these units, e.g. for native paths


class SubNetwork(_LayerPairFunction):
    """``forward(a, *inputs, *additional_forward_args) -> [B, K]`` with the source value replaced by ``a``.

    ``a`` is ``[B, *source_shape]`` and every model input has the same batch ``B`` (Captum expands inputs passed
    through ``additional_forward_args`` together with ``a``). ``self.shared``, when set, is a
    ``SharedForward`` that evaluates all units once and replays them (see ``_shared_forward``).
    """

    def __init__(self, *args: Any, to_source_input: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.to_source_input = to_source_input
        self.shared = None

    def evaluate(self, a: torch.Tensor, rest: tuple[Any, ...]) -> torch.Tensor:
        """``g(a)`` for all target units (``[B, K]``), with no sharing."""
        inputs = rest[: self.n_inputs]
        for x in inputs:
            if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] != a.shape[0]:
                raise ValueError(f"the attribution method gave source activations with batch {a.shape[0]} but "
                                 f"model inputs with batch {x.shape[0]}; it must expand additional_forward_args "
                                 "together with its inputs")
        record = run_model(self.model, rest, self.source, self.target, replacement=a,
                           to_source_input=self.to_source_input, stop_at_target=self.stop_at_target)
        out = reduce_target(record.target_output, self.reduction)
        return out if self.units is None else out[:, self.units]

    def forward(self, a: torch.Tensor, *rest: Any) -> torch.Tensor:
        if self.shared is not None:
            return self.shared(a, rest, self.evaluate)
        return self.evaluate(a, rest)


class ModelToTarget(_LayerPairFunction):
    """``forward(*inputs, *additional_forward_args) -> [B, K]``: the model up to the reduced target."""

    def forward(self, *rest: Any) -> torch.Tensor:
        record = run_model(self.model, rest, self.source, self.target, stop_at_target=self.stop_at_target)
        out = reduce_target(record.target_output, self.reduction)
        return out if self.units is None else out[:, self.units]
