"""The attribution of Bertolini et al. (2022), as in the authors' code, for every embedding dimension.

For ``s = 1..S``: ``x~ = t (x + eps) + (1 - t) b`` with ``t ~ U(0, 1)`` per sample, ``eps ~ N(0, stdev^2)`` per
input element and ``b`` a baseline image (black by default); the attribution of unit ``k`` is the mean over
``s`` of ``d f_k / d a(x~) * a(x~)``: the gradient at the source value *of the interpolated input*, times that
value. Captum's ``GradientShap`` differs in multiplying by ``a(x) - a(b)``. The paper attributes to the *input*
of its source layer: use ``attribute_to_source_input=True`` to match it. The authors' published code returns
after the first embedding dimension; here every dimension is computed, with one batched vector-Jacobian
product per sample draw.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from captum_layerpair._layers import run_model
from captum_layerpair.attr._shared_forward import jacobian_rows
from captum_layerpair.attr._subnetwork import TargetReduction, reduce_target

if TYPE_CHECKING:
    from captum_layerpair.attr.layer_pair import LayerPairAttribution

__all__ = ["paper_expected_gradients"]


def paper_expected_gradients(
    lp: LayerPairAttribution,
    inputs: tuple[torch.Tensor, ...],
    additional_forward_args: tuple[Any, ...],
    units: torch.Tensor,
    attribute_to_source_input: bool = False,
    target_batch_size: int | None = None,
    n_samples: int = 16,
    stdev: float = 0.1,
    baselines: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Paper-style expected gradients of ``units`` (``[k]``), returning ``[N, k, *source_shape]``.

    ``baselines`` are in model-input space (a tensor broadcastable to the input, or a number). Random draws use
    the global torch RNG, so ``torch.manual_seed`` makes results reproducible.
    """
    if len(inputs) != 1:
        raise ValueError("paper_expected_gradients supports single-input models")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    x = inputs[0]
    size = target_batch_size or len(units)
    total: torch.Tensor | None = None
    for _ in range(n_samples):
        x_tilde = interpolated_input(x, stdev, baselines)
        draw = torch.cat([gradient_x_value(lp.forward_func, lp.source, lp.target, lp.target_reduction,
                                           (x_tilde, *additional_forward_args), units[start:start + size],
                                           attribute_to_source_input, lp.stop_at_target)
                          for start in range(0, len(units), size)], 1)
        total = draw if total is None else total + draw
    return total / n_samples


def interpolated_input(x: torch.Tensor, stdev: float, baselines: torch.Tensor | float) -> torch.Tensor:
    """One draw ``t (x + eps) + (1 - t) b`` with ``t ~ U(0, 1)`` per sample and ``eps ~ N(0, stdev^2)``."""
    t = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), dtype=x.dtype, device=x.device)
    return t * (x + stdev * torch.randn_like(x)) + (1 - t) * baselines


def gradient_x_value(model: Any, source: tuple[str, nn.Module], target: tuple[str, nn.Module],
                     reduction: TargetReduction, inputs: tuple[Any, ...], units: torch.Tensor | None,
                     to_source_input: bool, stop_at_target: bool = True, create_graph: bool = False) -> torch.Tensor:
    """``d f_k / d a(x) * a(x)`` for ``units`` (all when ``None``): ``[N, k, *source_shape]``.

    With ``create_graph=True`` the result stays differentiable w.r.t. the model's parameters (the source value keeps
    its graph, and the Jacobian rows are built with ``create_graph``), for training constraints.
    """
    values: list[torch.Tensor] = []

    def track(value: torch.Tensor) -> torch.Tensor:
        keep = create_graph and value.requires_grad  # run_model passes a clone on: in-place ops leave it intact
        values.append(value if keep else value.detach().requires_grad_())
        return values[-1]

    with torch.enable_grad():
        record = run_model(model, inputs, source, target, replacement=track, to_source_input=to_source_input,
                           stop_at_target=stop_at_target)
        out = reduce_target(record.target_output, reduction)
        rows = jacobian_rows(out if units is None else out[:, units], values[0], create_graph=create_graph)
    value = values[0] if create_graph else values[0].detach()
    return (rows * value).transpose(0, 1)
