"""Type aliases shared across the package (one place, as ``captum/_utils/typing.py``)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Union

import torch
from torch import nn

__all__ = ["LayerSpec", "TargetReduction", "Transform", "Noise", "ArrayLike", "MethodSpec"]

LayerSpec = Union[str, nn.Module]
"""A layer: a module of the model or its dotted name (``"layer1.0.conv1"``)."""

TargetReduction = Union[str, Callable[[torch.Tensor], torch.Tensor]]
"""``"sum"``, ``"mean"``, ``"none"`` or a callable ``T -> [N, K]``."""

Transform = Union[str, Callable[[torch.Tensor], torch.Tensor]]
"""An element-wise transform of attributions: a name of ``aggregation.TRANSFORMS`` or a callable."""

Noise = Union[str, Callable[[torch.Tensor], torch.Tensor]]
"""A noise input: a name of the noise registry or a callable ``inputs -> noise batch``."""

ArrayLike = Union[torch.Tensor, "numpy.ndarray"]  # noqa: F821
"""A tensor or a NumPy array."""

MethodSpec = Union[str, type, Callable[..., "captum.attr.Attribution"]]  # noqa: F821
"""An attribution method: a ``captum.attr`` class, its name, a built-in name, or a factory callable."""
