"""The attribution of Bertolini et al. (2022), as in the authors' code, for every embedding dimension.

For ``s = 1..S``: ``x~ = t (x + eps) + (1 - t) b`` with ``t ~ U(0, 1)`` per sample, ``eps ~ N(0, stdev^2)`` per
input element and ``b`` a baseline image (black by default); the attribution of unit ``k`` is the mean over
``s`` of ``d f_k / d a(x~) * a(x~)``: the gradient at the source value *of the interpolated input*, times that
value. Captum's ``GradientShap`` differs in multiplying by ``a(x) - a(b)``. The paper attributes to the *input*
of its source layer: use ``attribute_to_source_input=True`` to match it.

Registered methods (``LayerPairAttribution(..., method=NAME)``):

* ``"paper_expected_gradients"``: gradient x value, averaged over ``n_samples`` draws.
* ``"paper_expected_gradients_gradient_only"``: the gradient alone, averaged the same way (the authors' variant
  for their drift experiment).

Defaults are the authors' (``n_samples=10``, ``stdev=0.5``, black baseline). Differences from their code: their
published function returns after the first embedding dimension (so their variance score is NaN); here every
dimension is computed, with the K Jacobian rows of one forward graph per draw. Baselines (``baselines=`` or
``input_baselines=``, the same thing here) live in model-input space.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from captum_layerpair._checks import check_positive_int
from captum_layerpair.attr._shared_forward import jacobian_rows
from captum_layerpair.layers import LayerPair

__all__ = ["PaperExpectedGradients", "PAPER_METHODS", "interpolated_input", "gradient_x_value"]

AUTHORS_N_SAMPLES = 10
AUTHORS_STDEV = 0.5


@dataclass(frozen=True)
class PaperExpectedGradients:
    """The paper's expected-gradients attribution as a built-in layer-pair method.

    ``multiply_by_activation=False`` gives the gradient-only variant.
    """

    multiply_by_activation: bool = True
    baselines_in_input_space: bool = True

    def has_convergence_delta(self) -> bool:
        return False

    def attribute_units(
        self,
        pair: LayerPair,
        inputs: tuple[torch.Tensor, ...],
        additional_forward_args: tuple[Any, ...],
        units: torch.Tensor,
        attribute_to_source_input: bool = False,
        target_batch_size: int | None = None,
        n_samples: int = AUTHORS_N_SAMPLES,
        stdev: float = AUTHORS_STDEV,
        baselines: torch.Tensor | float = 0.0,
    ) -> torch.Tensor:
        """Attributions of ``units`` (``[k]``): ``[N, k, *source_shape]``.

        ``baselines`` are in model-input space (a tensor broadcastable to the input, or a number). Random draws use
        the global torch RNG, so ``torch.manual_seed`` makes results reproducible.
        """
        if len(inputs) != 1:
            raise ValueError("paper_expected_gradients supports single-input models")
        check_positive_int("n_samples", n_samples)
        x = inputs[0]
        size = target_batch_size or len(units)
        total: torch.Tensor | None = None
        for _ in range(n_samples):
            x_tilde = interpolated_input(x, stdev, baselines)
            draw = torch.cat([gradient_x_value(pair, (x_tilde, *additional_forward_args), units[start:start + size],
                                               attribute_to_source_input,
                                               multiply_by_activation=self.multiply_by_activation)
                              for start in range(0, len(units), size)], 1)
            total = draw if total is None else total + draw
        return total / n_samples


PAPER_METHODS = {
    "paper_expected_gradients": PaperExpectedGradients(),
    "paper_expected_gradients_gradient_only": PaperExpectedGradients(multiply_by_activation=False),
}


def interpolated_input(x: torch.Tensor, stdev: float, baselines: torch.Tensor | float) -> torch.Tensor:
    """One draw ``t (x + eps) + (1 - t) b`` with ``t ~ U(0, 1)`` per sample and ``eps ~ N(0, stdev^2)``."""
    t = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), dtype=x.dtype, device=x.device)
    return t * (x + stdev * torch.randn_like(x)) + (1 - t) * baselines


def gradient_x_value(pair: LayerPair, inputs: tuple[Any, ...], units: torch.Tensor | None, to_source_input: bool,
                     create_graph: bool = False, multiply_by_activation: bool = True) -> torch.Tensor:
    """``d f_k / d a(x) * a(x)`` (or the gradient alone) for ``units`` (all when ``None``): ``[N, k, *source]``.

    With ``create_graph=True`` the result stays differentiable w.r.t. the model's parameters (the source value keeps
    its graph, and the Jacobian rows are built with ``create_graph``), for training constraints.
    """
    values: list[torch.Tensor] = []

    def track(value: torch.Tensor) -> torch.Tensor:
        keep = create_graph and value.requires_grad  # run_model passes a clone on: in-place ops leave it intact
        values.append(value if keep else value.detach().requires_grad_())
        return values[-1]

    with torch.enable_grad():
        record = pair.run(inputs, replacement=track, to_source_input=to_source_input)
        out = pair.reduce(record.target_output)
        rows = jacobian_rows(out if units is None else out[:, units], values[0], create_graph=create_graph)
    if not multiply_by_activation:
        return rows.transpose(0, 1)
    value = values[0] if create_graph else values[0].detach()
    return (rows * value).transpose(0, 1)
