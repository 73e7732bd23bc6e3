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

from captum_layerpair._layers import run_model
from captum_layerpair.attr._shared_forward import jacobian_rows
from captum_layerpair.attr._subnetwork import reduce_target

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
    b = baselines if isinstance(baselines, torch.Tensor) else torch.full_like(x, float(baselines))
    size = target_batch_size or len(units)
    total: torch.Tensor | None = None
    for _ in range(n_samples):
        t = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), dtype=x.dtype, device=x.device)
        x_tilde = t * (x + stdev * torch.randn_like(x)) + (1 - t) * b
        draws = []
        for start in range(0, len(units), size):
            draws.append(_gradient_x_value(lp, x_tilde, additional_forward_args, units[start:start + size],
                                           attribute_to_source_input))
        draw = torch.cat(draws, 1)
        total = draw if total is None else total + draw
    return total / n_samples


def _gradient_x_value(lp: LayerPairAttribution, x: torch.Tensor, args: tuple[Any, ...], units: torch.Tensor,
                      to_source_input: bool) -> torch.Tensor:
    """``d f_k / d a(x) * a(x)`` for ``units``: ``[N, k, *source_shape]``."""
    leaves: list[torch.Tensor] = []

    def as_leaf(value: torch.Tensor) -> torch.Tensor:
        leaves.append(value.detach().requires_grad_())
        return leaves[-1]

    with torch.enable_grad():
        record = run_model(lp.forward_func, (x, *args), lp.source, lp.target, replacement=as_leaf,
                           to_source_input=to_source_input, stop_at_target=lp.stop_at_target)
        out = reduce_target(record.target_output, lp.target_reduction)[:, units]
        rows = jacobian_rows(out, leaves[0])  # [k, N, *S]
    return (rows * leaves[0].detach()).transpose(0, 1)
