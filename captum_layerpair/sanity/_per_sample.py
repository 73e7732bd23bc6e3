"""Attributions whose per-sample values do not depend on how a dataset is split into batches or processes."""
from __future__ import annotations

from typing import Any

import torch

from captum_layerpair._random import RNGState, derive_seed, rng_state, seeded
from captum_layerpair.attr.layer_pair import LayerPairAttribution

__all__ = ["BatchingFreeAttribution", "unique_sorted"]


class BatchingFreeAttribution:
    """Attribute a batch so that each sample's result depends on the sample, its dataset index and ``seed`` only.

    A method that draws random numbers (found at the first call: did any global RNG move?) attributes each sample
    alone with every RNG seeded from ``(seed, its dataset index)``; a method that draws nothing runs on the whole
    batch, unless ``alone=True`` asks for one sample at a time anyway (bit-identical whatever the batch sizes).
    The first call's RNGs are seeded with ``seed``; the caller's RNG states are restored after every call.
    """

    def __init__(self, seed: int, alone: bool | None = None) -> None:
        self.seed = seed
        self.alone = alone  # None: not known yet

    def __call__(self, pair: LayerPairAttribution, x: tuple[Any, ...], indices: torch.Tensor,
                 kwargs: dict[str, Any]) -> torch.Tensor:
        """The attribution ``[B, K, *source_shape]`` (detached) of inputs ``x`` with dataset indices ``[B]``."""
        if self.alone is None:  # the first attribution tells whether the method draws random numbers
            with seeded(self.seed):
                before = rng_state()
                attribution = pair.attribute(_inputs(x), **kwargs)
                self.alone = _rng_moved(before, rng_state())
            if not self.alone:
                return _as_units(attribution, kwargs)
        elif not self.alone:
            return _as_units(pair.attribute(_inputs(x), **kwargs), kwargs)
        rows, n = [], len(indices)
        for i, index in enumerate(indices.tolist()):
            with seeded(derive_seed(self.seed, "sample", index)):
                rows.append(pair.attribute(_inputs(_sample(x, i, n)), **_sample_kwargs(kwargs, i, n)))
        return _as_units(torch.cat(rows), kwargs)


def unique_sorted(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct indices, ascending, and the row of each one's first occurrence."""
    order = torch.argsort(indices, stable=True)
    ordered = indices[order]
    first = torch.ones(len(ordered), dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return ordered[first], order[first]



def _inputs(x: tuple[Any, ...]) -> Any:
    return x[0] if len(x) == 1 else x


def _sample(value: Any, i: int, n: int) -> Any:
    """Row ``i`` (kept as a batch of one) of every tensor with batch dimension ``n`` in ``value`` (a tensor or a
    tuple); anything else is shared."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value[i:i + 1]
    if isinstance(value, tuple):
        return tuple(_sample(v, i, n) for v in value)
    return value


def _sample_kwargs(kwargs: dict[str, Any], i: int, n: int) -> dict[str, Any]:
    """The attribute arguments for sample ``i``: ``additional_forward_args`` follows the samples (as in Captum),
    every other argument (``baselines`` included) is shared."""
    if kwargs.get("additional_forward_args") is None:
        return kwargs
    return {**kwargs, "additional_forward_args": _sample(kwargs["additional_forward_args"], i, n)}


def _as_units(attribution: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """``[B, K, *source_shape]``, detached: an int target's ``[B, *source_shape]`` gets its unit dimension back."""
    target = kwargs.get("target")
    if isinstance(target, int) or (isinstance(target, torch.Tensor) and target.dim() == 0):
        attribution = attribution.unsqueeze(1)
    return attribution.detach()


def _rng_moved(before: RNGState, after: RNGState) -> bool:
    """Whether any global RNG (torch CPU / CUDA, NumPy, Python) advanced between two captured states."""
    if not torch.equal(before.torch_cpu, after.torch_cpu) or before.python != after.python:
        return True
    if (before.torch_cuda is None) != (after.torch_cuda is None) or any(
            not torch.equal(a, b) for a, b in zip(before.torch_cuda or [], after.torch_cuda or [])):
        return True
    return any(not (a == b).all() if hasattr(a, "shape") else a != b for a, b in zip(before.numpy, after.numpy))
