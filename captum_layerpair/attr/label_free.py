"""Label-free feature importance (Crabbe & van der Schaar, ICML 2022, "LFXAI").

A representation ``f(x) in R^D`` has no label to explain. LFXAI explains the scalar ``<f(x~), f(x)>``, the
projection of the representation of a (perturbed, interpolated, ...) input ``x~`` on the representation of the
original input, which is held fixed. Any Captum attribution method can explain that scalar.

Pairing each ``x~`` with its own ``f(x)``: the authors' code does *not* pass ``f(x)`` through
``additional_forward_args``; its ``AuxiliaryFunction`` stores ``f(x)`` and, when a method hands it a batch of
``k * N`` inputs, tiles it with ``repeat`` (``[f(x_1) .. f(x_N), f(x_1) .. f(x_N), ...]``). That pairs correctly for
methods that expand the batch block by block (IntegratedGradients' steps, DeepLift), but not for those that repeat
each sample in turn (``repeat_interleave``: NoiseTunnel, GradientShap, DeepLiftShap), where ``x_1``'s noisy copies
meet ``f(x_2)``, ... . Here ``f(x)`` travels through ``additional_forward_args``, so Captum expands it exactly as it
expands the inputs, and every method pairs correctly.

Per-dimension attributions (:meth:`LabelFreeAttribution.attribute_dimensions`) return, as the authors'
``attribute_individual_dim`` does, ``|f_d(x) * A_d(x)|`` (``output="abs_scaled"``, default), where ``A_d`` is the
method's attribution of ``f_d``; ``output="raw"`` returns ``A_d`` itself.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum._utils.common import _format_additional_forward_args, _format_tensor_into_tuples
from captum.attr import Attribution
from torch import nn

from captum_layerpair._checks import check_choice

__all__ = ["LabelFreeAttribution", "DIMENSION_OUTPUTS"]

DIMENSION_OUTPUTS = {
    "abs_scaled": "|f_d(x) * A_d(x)|, as the authors' attribute_individual_dim returns",
    "raw": "A_d(x), the method's attribution of f_d",
}
"""What ``attribute_dimensions`` returns per dimension ``d``."""

_Method = type | Callable[[Callable[..., torch.Tensor]], Attribution]
Inputs = torch.Tensor | tuple[torch.Tensor, ...]


class _Projection(nn.Module):
    """``(*inputs, *additional_args, fixed) -> <f(*inputs, *additional_args), fixed>``, shape ``[N]``.

    A module (not a closure) so that hook-based methods such as DeepLift see the encoder's layers.
    """

    def __init__(self, encoder: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, *args: Any) -> torch.Tensor:
        *encoder_args, fixed = args
        out = self.encoder(*encoder_args)
        if out.shape != fixed.shape:
            raise ValueError(f"the encoder returned {tuple(out.shape)} but the fixed representation has shape "
                             f"{tuple(fixed.shape)}: the attribution method did not expand additional_forward_args "
                             "with its batch, so LabelFreeAttribution cannot pair each x~ with its f(x)")
        return (out * fixed).sum(dim=1)


class LabelFreeAttribution(Attribution):
    """Label-free attribution of a representation with any Captum method (LFXAI, Crabbe & van der Schaar 2022).

    Parameters
    ----------
    encoder:
        Callable mapping inputs (plus any additional forward arguments) to representations ``[N, D]``. Pass an
        ``nn.Module`` for hook-based methods (DeepLift, layer methods).
    method:
        A Captum attribution class taking the forward function as its only argument (``IntegratedGradients``,
        ``GradientShap``, ``Saliency``, ``DeepLift``, ``Occlusion``, ...), or a factory ``forward_func ->
        Attribution`` for the others, e.g. ``lambda f: NoiseTunnel(IntegratedGradients(f))`` or
        ``lambda f: LayerIntegratedGradients(f, encoder.conv1)``.
    """

    def __init__(self, encoder: Callable[..., torch.Tensor], method: _Method) -> None:
        super().__init__(encoder)
        if isinstance(method, Attribution) or not callable(method):
            raise TypeError(f"method must be a Captum attribution class or a factory forward_func -> Attribution, "
                            f"got {type(method).__name__} (for a configured instance such as NoiseTunnel(...), "
                            "pass `lambda f: NoiseTunnel(IntegratedGradients(f))`)")
        self.method = method
        self._projection = _Projection(encoder)

    def attribute(self, inputs: Inputs, additional_forward_args: Any = None, **method_kwargs: Any) -> Any:
        """Attribute ``<f(x~), f(x)>`` (``f(x)`` fixed) to the inputs.

        Parameters
        ----------
        inputs:
            ``[N, *input_shape]`` or a tuple of such tensors, as for the Captum method.
        additional_forward_args:
            Extra encoder arguments after the inputs.
        **method_kwargs:
            Passed to the method's ``attribute`` (``n_steps``, ``baselines``, ``nt_samples``, ...). ``target``
            is not allowed: the explained output is a scalar per sample.

        Returns
        -------
        What the method returns: attributions shaped like ``inputs`` (a tensor, or a tuple for tuple inputs; layer
        methods give the layer's shape), with its convergence delta ``[N]`` where ``return_convergence_delta=True``.
        """
        if "target" in method_kwargs:
            raise TypeError("LabelFreeAttribution explains the scalar <f(x~), f(x)>, so it takes no target; "
                            "use attribute_dimensions for single representation dimensions")
        args = _format_additional_forward_args(additional_forward_args) or ()
        with torch.no_grad():
            fixed = self._encode(inputs, args).detach()
        explainer = self._explainer(self._projection)
        return explainer.attribute(inputs, additional_forward_args=(*args, fixed), **method_kwargs)

    def attribute_dimensions(
        self, inputs: Inputs, dims: list[int] | torch.Tensor | None = None, additional_forward_args: Any = None,
        output: str = "abs_scaled", **method_kwargs: Any,
    ) -> Any:
        """Attribute each representation dimension ``f_d(x)`` separately (the method's ``target=d``).

        Parameters
        ----------
        inputs:
            ``[N, *input_shape]`` or a tuple of such tensors.
        dims:
            Dimensions to explain (default: all ``D``).
        additional_forward_args:
            As in :meth:`attribute`.
        output:
            ``"abs_scaled"`` (default, as the authors' ``attribute_individual_dim``): ``|f_d(x) * A_d(x)|``, the
            method's attribution ``A_d`` of ``f_d`` scaled by the sample's own ``f_d(x)``, in absolute value;
            ``"raw"``: ``A_d(x)``.
        **method_kwargs:
            As in :meth:`attribute`.

        Returns
        -------
        Attributions ``[N, len(dims), *input_shape]`` (a tuple of those for tuple inputs; ``*layer_shape`` for
        layer methods); with ``return_convergence_delta=True`` also the method's deltas of the raw ``A_d``
        stacked on a new dimension 1 (``[N, len(dims)]`` for IntegratedGradients).
        """
        if "target" in method_kwargs:
            raise TypeError("attribute_dimensions takes the dimensions as dims=..., not target=...")
        check_choice("output", output, DIMENSION_OUTPUTS)
        args = _format_additional_forward_args(additional_forward_args) or ()
        with torch.no_grad():
            representation = self._encode(inputs, args).detach()
        n_dims = representation.shape[1]
        dims = list(range(n_dims)) if dims is None else [int(d) for d in dims]
        bad = [d for d in dims if not 0 <= d < n_dims]
        if bad or not dims:
            raise ValueError(f"dims must be a non-empty list of dimensions in [0, {n_dims}); got {dims}")
        explainer = self._explainer(self.forward_func)
        results = [explainer.attribute(inputs, target=d, additional_forward_args=additional_forward_args,
                                       **method_kwargs) for d in dims]
        with_delta = method_kwargs.get("return_convergence_delta", False)
        attributions = [r[0] for r in results] if with_delta else results
        if isinstance(inputs, tuple):
            stacked: Any = tuple(torch.stack(parts, dim=1) for parts in zip(*attributions))
        else:
            stacked = torch.stack(attributions, dim=1)
        if output == "abs_scaled":
            scale = representation[:, dims]  # [N, len(dims)]
            stacked = (tuple(_abs_scaled(part, scale) for part in stacked) if isinstance(stacked, tuple)
                       else _abs_scaled(stacked, scale))
        return (stacked, torch.stack([r[1] for r in results], dim=1)) if with_delta else stacked

    def _encode(self, inputs: Inputs, args: tuple) -> torch.Tensor:
        out = self.forward_func(*_format_tensor_into_tuples(inputs), *args)
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"LabelFreeAttribution needs an encoder returning a 2-D representation [N, D]; it "
                             f"returned {got}. Flatten or pool the output (e.g. wrap the encoder).")
        return out

    def _explainer(self, forward_func: Callable[..., torch.Tensor]) -> Attribution:
        explainer = self.method(forward_func)
        if not isinstance(explainer, Attribution):
            raise TypeError(f"method(forward_func) must return a Captum Attribution, got {type(explainer).__name__}")
        return explainer


def _abs_scaled(attributions: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``|scale[n, d] * attributions[n, d, ...]|`` for attributions ``[N, len(dims), ...]``."""
    return (scale.to(attributions.dtype).view(*scale.shape, *[1] * (attributions.dim() - 2)) * attributions).abs()
