"""The functions Captum methods are applied to.

``SubNetwork`` is ``g_x(a') -> [B, K]``: run the model on ``x`` with the source value replaced by ``a'`` and reduce
the target output to one scalar per target unit. Plain Captum methods attribute it with ``inputs=a``.
``ModelToTarget`` is ``x -> [B, K]`` without replacement; Captum *layer* methods attribute it with
``layer=source``. Both are ``nn.Module``s holding the user's model, so module-hooking methods (DeepLift,
GuidedBackprop) reach its non-linearities.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from captum_layerpair.layers import LayerPair

__all__ = ["SubNetwork", "ModelToTarget"]


class _LayerPairFunction(nn.Module):
    """Shared state of the two functions: the model, the layers, the reduction and the selected units."""

    def __init__(self, pair: LayerPair, n_inputs: int) -> None:
        super().__init__()
        self.model = pair.model  # registered as a child when it is a Module, so hooking methods see its layers
        self.pair = pair
        self.n_inputs = n_inputs
        self.units: torch.Tensor | None = None  # restrict the output to these units, e.g. for native paths


class SubNetwork(_LayerPairFunction):
    """``forward(a, *inputs, *additional_forward_args) -> [B, K]`` with the source value replaced by ``a``.

    ``a`` is ``[B, *source_shape]`` and every model input has the same batch ``B`` (Captum expands inputs passed
    through ``additional_forward_args`` together with ``a``). ``self.shared``, when set, is a
    ``SharedForward`` that evaluates all units once and replays them (see ``_shared_forward``); ``self.prefix``,
    when set, a ``PrefixCache`` that serves the modules before the source from one recorded forward (``_prefix``).
    """

    def __init__(self, *args: Any, to_source_input: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.to_source_input = to_source_input
        self.shared = None
        self.prefix = None

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
    """``forward(*inputs, *additional_forward_args) -> [B, K]``: the model up to the reduced target."""

    def forward(self, *rest: Any) -> torch.Tensor:
        record = self.pair.run(rest)
        out = self.pair.reduce(record.target_output)
        return out if self.units is None else out[:, self.units]
