"""Leave the user's model as it was: train/eval flags, ``requires_grad`` flags and buffers come back on exit."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["model_state_preserved"]


@contextmanager
def model_state_preserved(model: Any) -> Iterator[None]:
    """Restore train/eval flags, ``requires_grad`` flags and buffers (e.g. BatchNorm statistics) on exit.

    Buffers are written through ``.data``, which leaves their autograd version counters alone, so a graph built
    inside the context (train-mode BatchNorm saves its statistics for backward) can be back-propagated after it.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
        for param, flag in flags:
            param.requires_grad_(flag)
        for buf, saved in buffers:
            if not torch.equal(buf, saved):
                buf.data.copy_(saved)
