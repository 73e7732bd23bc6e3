"""The package's one RNG policy: capture, seed and restore torch (CPU and CUDA), NumPy and Python.

Library code never leaves a global RNG changed. Where a documented ``seed=`` controls a computation, the whole
computation runs inside ``seeded(seed)``: every draw (torch, NumPy, Python; Captum's GradientShap draws from NumPy)
comes from that seed, and the caller's states come back afterwards. Per-sample draws that must not depend on the
batching or on the process (distributed evaluation) come from ``sample_generator(seed, index)``.
"""
from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["RNGState", "rng_state", "set_rng_state", "rng_preserved", "seeded", "derive_seed", "sample_generator"]


@dataclass(frozen=True)
class RNGState:
    """The global random states Captum and this package draw from."""

    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor] | None
    numpy: Any
    python: Any


def rng_state() -> RNGState:
    """Capture the global torch (CPU, and CUDA where initialised), NumPy and Python random states."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return RNGState(torch.random.get_rng_state(), cuda, np.random.get_state(), random.getstate())


def set_rng_state(state: RNGState) -> None:
    """Restore the states captured by ``rng_state``."""
    torch.random.set_rng_state(state.torch_cpu)
    if state.torch_cuda is not None:
        torch.cuda.set_rng_state_all(state.torch_cuda)
    np.random.set_state(state.numpy)
    random.setstate(state.python)


@contextmanager
def rng_preserved() -> Iterator[RNGState]:
    """Run the block and restore every global RNG state afterwards (also after an exception)."""
    state = rng_state()
    try:
        yield state
    finally:
        set_rng_state(state)


def seed_all(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy and Python with ``seed``. Library code calls it only inside ``seeded``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed every global RNG with ``seed`` for the block, then restore the caller's states.

    ``seed=None`` runs the block on the caller's states unchanged (draws then follow the caller's seeding).
    """
    if seed is None:
        yield
        return
    with rng_preserved():
        seed_all(seed)
        yield


def derive_seed(seed: int, *keys: int | str) -> int:
    """A well-mixed 63-bit seed from ``seed`` and keys (ints, or strings such as a module's dotted name).

    Strings are hashed with CRC-32, which does not change between processes (unlike ``hash``).
    """
    ints = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    words = np.random.SeedSequence([int(seed) % 2**63, *ints]).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1]))


def sample_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private generator for the sample with dataset index ``index``: its draws depend on nothing else."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, "sample", index))
