"""Noise inputs for the latent scores: one name -> function registry, drawn per sample from private generators.

Sample ``n`` of a batch is drawn from ``sample_generator(derive_seed(seed, "noise", stream), indices[n])``: its noise
depends only on the seed, the stream (which draw it is) and its dataset index, not on the batch it sits in, the
process that scores it, or the caller's global RNG (which is neither read nor advanced). Draws are made on the CPU and
moved to the input's device, so they are also the same on every device.

Each registered noise maps one sample ``[*shape]`` and its generator to a noise sample of the same shape and dtype.
Inputs are ``[N, C, *spatial]`` (channels first) or ``[N, F]``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from captum_layerpair._checks import check_choice
from captum_layerpair._random import derive_seed, sample_generator, seeded
from captum_layerpair._typing import Noise

__all__ = ["NOISES", "make_noise", "check_noise"]

NOISE_CALLABLE = "a callable inputs -> noise batch"


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _uniform(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Floating point: i.i.d. Uniform[0, 1). Integers (token ids): ids drawn uniformly between the sample's smallest
    and largest id. Booleans: fair coin flips."""
    if x.dtype == torch.bool:
        return torch.randint(0, 2, x.shape, generator=gen).bool()
    if not x.dtype.is_floating_point:
        lo, hi = int(x.min()), int(x.max())
        return torch.randint(lo, hi + 1, x.shape, generator=gen, dtype=torch.int64).to(x.dtype)
    return torch.rand(x.shape, generator=gen, dtype=_float_dtype(x)).to(x.dtype)


def _gaussian(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Normal with the sample's own mean and (population) standard deviation per channel (dim 0 of the sample; the
    whole sample for ``[F]`` samples)."""
    if not x.dtype.is_floating_point:
        raise TypeError(f"gaussian noise needs floating-point inputs, got {x.dtype}: for integer inputs (token ids) "
                        "use noise='uniform' (random ids in each sample's range), 'shuffle' or " + NOISE_CALLABLE)
    flat = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
    mean, std = flat.mean(1, keepdim=True), flat.std(1, keepdim=True, correction=0)
    draw = torch.randn(flat.shape, generator=gen, dtype=_float_dtype(x)).to(x.dtype)
    return (mean + std * draw).view_as(x)


def _shuffle(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The sample's own positions in random order: one permutation of the spatial positions shared by all channels
    (of the features for ``[F]`` samples), so every channel's histogram is kept. Any dtype (token ids included)."""
    if x.dim() == 0:
        return x.clone()
    flat = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
    return flat[:, torch.randperm(flat.shape[1], generator=gen)].reshape(x.shape)


NOISES: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "uniform": _uniform,
    "gaussian": _gaussian,
    "shuffle": _shuffle,
}


def check_noise(noise: Any) -> Noise:
    """``noise`` if it is a registered name or a callable, else ``ValueError`` naming the allowed names."""
    check_choice("noise", noise, NOISES, allow_callable=True, callable_hint=NOISE_CALLABLE)
    return noise


def make_noise(inputs: torch.Tensor, noise: Noise = "uniform", seed: int = 0, indices: Any = None,
               stream: int | str = 0) -> torch.Tensor:
    """A noise batch shaped like ``inputs [N, ...]``.

    Parameters
    ----------
    inputs:
        The input batch, floating point or integer (token ids).
    noise:
        ``"uniform"``: i.i.d. Uniform[0, 1) (integers: ids uniform between the sample's smallest and largest id).
        ``"gaussian"``: normal with each sample's own mean and standard deviation per channel.
        ``"shuffle"``: each sample's positions permuted (every channel's histogram kept).
        A callable receives the batch and returns the noise batch; it runs under a private seed derived from
        ``seed``, ``stream`` and the batch's first index (global RNGs restored afterwards), so its global draws are
        reproducible and leave the caller's RNG alone, but depend on the batching unless it draws per sample.
    seed, stream:
        Which noise: independent draws use different streams (e.g. the ``r``-th noise draw, or ``"null"``).
    indices:
        ``[N]`` dataset indices of the samples (default ``0 .. N-1``); sample ``n``'s noise depends only on
        ``(seed, stream, indices[n])``.
    """
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"noise inputs need an input tensor [N, ...], got {type(inputs).__name__}")
    function = check_choice("noise", noise, NOISES, allow_callable=True, callable_hint=NOISE_CALLABLE)
    index = torch.arange(len(inputs)) if indices is None else torch.as_tensor(indices).reshape(-1)
    if callable(noise) and not isinstance(noise, str):
        with seeded(derive_seed(seed, "noise", stream, int(index[0]) if len(index) else 0)):
            out = noise(inputs)
        if not isinstance(out, torch.Tensor) or out.shape != inputs.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the noise callable must return a tensor of the input's shape {tuple(inputs.shape)}; "
                             f"it returned {got}")
        return out
    stream_seed = derive_seed(seed, "noise", stream)
    cpu = inputs.detach().cpu()
    samples = [function(sample, sample_generator(stream_seed, int(i))) for sample, i in zip(cpu, index.tolist())]
    out = torch.stack(samples) if samples else torch.empty_like(cpu)
    return out.to(inputs.device)
