"""The attribution keyword arguments a report takes (``--method-kwargs``), checked before any work.

* Keys the report sets itself (``target``, ``target_batch_size``, ...) are refused with the option to use instead.
* Counts (``n_steps``, ``n_samples``, ``internal_batch_size``, ...) must be positive ints.
* ``input_baselines`` is a number, a tensor, or a list: one value per input channel (``[0.485, 0.456, 0.406]`` for
  RGB), broadcast over the other dimensions of one input, or nested lists of one input's full shape. Baselines must
  be finite.
"""
from __future__ import annotations

from typing import Any

import torch

from captum_layerpair._checks import check_finite, check_positive_int
from captum_layerpair._user_model import UserInputError

__all__ = ["RESERVED", "COUNTS", "check_attribute_kwargs", "input_baselines_tensor"]

RESERVED = {
    "inputs": "the report passes its inputs itself",
    "target": "the report explains every target unit",
    "additional_forward_args": "the report runs the model on its inputs alone",
    "return_convergence_delta": "the report does not show convergence deltas",
    "show_progress": "use --no-progress (show_progress= in Python)",
    "target_batch_size": "use --target-batch-size (target_batch_size= in Python)",
}
"""Keys of ``LayerPairAttribution.attribute`` that the report sets itself, with what to do instead."""

COUNTS = ("n_steps", "n_samples", "internal_batch_size", "perturbations_per_eval", "nt_samples",
          "nt_samples_batch_size")
"""Keyword arguments of Captum methods (and the built-in ones) that count something: positive ints."""


def check_attribute_kwargs(kwargs: Any, inputs: torch.Tensor) -> dict[str, Any]:
    """A checked copy of ``kwargs`` with ``input_baselines`` as a number or a ``[1, *input_shape]`` tensor.

    Raises ``UserInputError`` (one line) for a reserved key, a count that is not a positive int, or baselines that
    are not finite numbers of a usable shape.
    """
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise UserInputError(f"attribute_kwargs must be a dict of keyword arguments, got {type(kwargs).__name__}")
    checked = dict(kwargs)
    for key, why in RESERVED.items():
        if key in checked:
            raise UserInputError(f"method keyword argument {key!r} is not allowed in a report: {why}")
    for key in COUNTS:
        if key in checked:
            try:
                check_positive_int(key, checked[key])
            except (TypeError, ValueError) as e:
                raise UserInputError(f"method keyword argument {e}") from e
    if checked.get("input_baselines") is not None:
        checked["input_baselines"] = input_baselines_tensor(checked["input_baselines"], inputs)
    for key in ("baselines", "input_baselines"):
        if isinstance(checked.get(key), (int, float, torch.Tensor)) and not isinstance(checked[key], bool):
            try:
                check_finite(key, checked[key] if isinstance(checked[key], torch.Tensor) else float(checked[key]))
            except ValueError as e:
                raise UserInputError(str(e)) from e
    return checked


def input_baselines_tensor(value: Any, inputs: torch.Tensor) -> float | int | torch.Tensor:
    """``input_baselines`` for inputs ``[N, *S]``: a number stays a number; a list or tuple becomes a tensor
    ``[1, *S]`` (one value per channel ``S[0]``, broadcast over the rest, or nested lists of shape ``S``); a tensor
    is used as given."""
    if isinstance(value, torch.Tensor) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    sample = tuple(inputs.shape[1:])
    allowed = (f"a number, one number per input channel ({sample[0]} values), or nested lists of one input's "
               f"shape {list(sample)}")
    if not isinstance(value, (list, tuple)):
        raise UserInputError(f"input_baselines must be {allowed}; got {type(value).__name__} {value!r}")
    try:
        values = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserInputError(f"input_baselines must be {allowed}; got {value!r}") from e
    if tuple(values.shape) == sample:
        shaped = values.unsqueeze(0)
    elif values.dim() == 1 and values.shape[0] == sample[0]:
        shaped = values.view(1, sample[0], *[1] * (len(sample) - 1)).expand(1, *sample)
    else:
        raise UserInputError(f"input_baselines must be {allowed}; got a list of shape {list(values.shape)}")
    if not torch.isfinite(shaped).all():
        raise UserInputError("input_baselines contain NaN or inf values; give finite numbers")
    return shaped.to(inputs.dtype).contiguous()
