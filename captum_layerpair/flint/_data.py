"""How FLINT's functions read data: a DataLoader of ``(x, y)`` / ``x`` batches, or a tuple of tensors."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Union

import torch
from torch.utils.data import DataLoader, TensorDataset

from captum_layerpair._checks import check_positive_int
from captum_layerpair._random import derive_seed

__all__ = ["Data", "batches", "parameter_device", "outputs"]

Data = Union[Iterable[Any], tuple[torch.Tensor, ...], torch.Tensor]
"""A DataLoader (or any iterable) of ``(x, y)`` pairs or ``x`` batches, a tuple ``(x, y)`` / ``(x,)`` of tensors
``[N, ...]`` / ``[N]``, or one tensor ``x``."""


def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    raise TypeError(f"each batch must be a tensor x or a pair (x, y) of tensors; got {type(batch).__name__}")


def batches(data: Data, batch_size: int = 256, shuffle: bool = False, seed: int | None = 0,
            device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(x, y)`` batches (``y`` is ``None`` without labels), moved to ``device``.

    Tensors are batched here (``batch_size``; ``shuffle`` draws the order from a private generator seeded by
    ``seed``, or from the global torch RNG for ``seed=None``); a DataLoader or other iterable is used as it is.
    """
    if isinstance(data, torch.Tensor):
        data = (data,)
    if isinstance(data, tuple) and data and all(isinstance(t, torch.Tensor) for t in data):
        check_positive_int("batch_size", batch_size)
        if len(data) > 2 or any(len(t) != len(data[0]) for t in data):
            raise ValueError(f"data as tensors must be (x,) or (x, y) with the same first dimension; got shapes "
                             f"{[tuple(t.shape) for t in data]}")
        generator = torch.Generator().manual_seed(derive_seed(seed, "flint-shuffle")) if (
            shuffle and seed is not None) else None
        data = DataLoader(TensorDataset(*data), batch_size=batch_size, shuffle=shuffle, generator=generator)
    elif not isinstance(data, Iterable) or isinstance(data, (str, bytes)):
        raise TypeError(f"data must be a DataLoader of (x, y) batches or a tuple of tensors (x, y); got "
                        f"{type(data).__name__}")
    for batch in data:
        x, y = _split(batch)
        if device is not None:
            x = x.to(device)
            y = None if y is None else y.to(device)
        yield x, y


def parameter_device(module: torch.nn.Module) -> torch.device | None:
    """The device of the module's first parameter (``None`` without parameters)."""
    first = next(module.parameters(), None)
    return None if first is None else first.device


def outputs(interpreter: torch.nn.Module, data: Data, batch_size: int = 256
            ) -> Iterator[tuple[Any, torch.Tensor, torch.Tensor | None]]:
    """Yield ``(interpreter(x), x, y)`` per batch, in eval mode without gradient; the modes come back at the end."""
    check_positive_int("batch_size", batch_size)
    was_training = interpreter.training
    interpreter.eval()
    try:
        with torch.no_grad():
            for x, y in batches(data, batch_size, device=parameter_device(interpreter)):
                yield interpreter(x), x, y
    finally:
        interpreter.train(was_training)
