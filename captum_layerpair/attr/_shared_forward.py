"""All target units from one set of forward passes: record once, replay for every other unit.

A plain Captum method is run once per target unit, with the global RNG reset to the same state before each run,
so every unit sees the same interpolation points, noise and perturbations. The first run *records*: every
evaluation of the sub-network computes the outputs of all units of the chunk and, where Captum asks for
gradients, their full Jacobian rows with one batched vector-Jacobian product. Later runs *replay*: the
sub-network returns the recorded outputs through ``_Replay``, whose backward hands Captum the recorded Jacobian
row of the unit it asked for. Captum's own bookkeeping (interpolation, Riemann sums, multiplication by
``inputs - baselines``, noise tunnels, convergence deltas) runs unchanged for each unit, so results equal the
per-unit path; an evaluation whose inputs differ from the recorded ones is computed afresh.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import torch

__all__ = ["SharedForward", "jacobian_rows"]


def jacobian_rows(out: torch.Tensor, inputs: torch.Tensor, create_graph: bool = False,
                  batched: bool | None = None) -> torch.Tensor:
    """Rows of the Jacobian of ``out [B, K]`` (samples independent) w.r.t. ``inputs [B, *S]``: ``[K, B, *S]``.

    Row ``k`` is ``d out[:, k].sum() / d inputs``, computed from one forward graph either with one batched
    vector-Jacobian product (``is_grads_batched``, vmap) or with ``K`` backward passes over the same graph.
    ``batched=None`` picks vmap on accelerators and the loop on CPU, where vmap over convolution backward is
    several times slower (benchmarks/bench_layer_pair.py); a backward hook that vmap cannot batch falls back
    to the loop.
    """
    if batched is None:
        batched = inputs.device.type != "cpu"
    K = out.shape[1]
    eye = torch.eye(K, dtype=out.dtype, device=out.device)
    grad_outputs = eye[:, None, :].expand(K, out.shape[0], K)
    if batched:
        try:
            (rows,) = torch.autograd.grad(out, inputs, grad_outputs=grad_outputs, is_grads_batched=True,
                                          create_graph=create_graph, allow_unused=True, retain_graph=True)
            return torch.zeros(K, *inputs.shape, dtype=inputs.dtype, device=inputs.device) if rows is None else rows
        except RuntimeError:
            pass  # e.g. a backward hook that vmap cannot batch: fall back to one backward pass per unit
    if create_graph:
        return torch.stack([_row(out, inputs, grad_outputs[k], True) for k in range(K)])
    rows = inputs.new_empty(K, *inputs.shape)  # filled in place: no list of rows plus a stacked copy
    for k in range(K):
        rows[k] = _row(out, inputs, grad_outputs[k], False)
    return rows


def _row(out: torch.Tensor, inputs: torch.Tensor, grad_output: torch.Tensor, create_graph: bool) -> torch.Tensor:
    (row,) = torch.autograd.grad(out, inputs, grad_outputs=grad_output, create_graph=create_graph,
                                 allow_unused=True, retain_graph=True)
    return torch.zeros_like(inputs) if row is None else row


class _Replay(torch.autograd.Function):
    """``out`` as a function of ``a`` whose Jacobian is the recorded ``jac [K, B, *S]``."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, out: torch.Tensor, jac: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(jac)
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (jac,) = ctx.saved_tensors
        used = grad_out.ne(0).any(0).nonzero().flatten()  # Captum selects one unit: contract over it only
        grad_a = torch.einsum("bk,kb...->b...", grad_out[:, used], jac[used])
        return grad_a, None, None


@dataclass
class _Entry:
    inputs: torch.Tensor
    out: torch.Tensor
    jac: torch.Tensor | None


class SharedForward:
    """Evaluation cache for one chunk of units; ``record()`` before the first unit's run, ``replay()`` after."""

    def __init__(self, batched_vjp: bool | None = None) -> None:
        self.entries: list[_Entry] = []
        self.position = 0
        self.recording = True
        self.batched_vjp = batched_vjp

    def record(self) -> None:
        self.entries, self.position, self.recording = [], 0, True

    def replay(self) -> None:
        self.position, self.recording = 0, False

    def __call__(self, a: torch.Tensor, rest: tuple[Any, ...],
                 evaluate: Callable[[torch.Tensor, tuple[Any, ...]], torch.Tensor]) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and a.requires_grad
        if not self.recording:
            entry = self.entries[self.position] if self.position < len(self.entries) else None
            self.position += 1
            if entry is not None and entry.inputs.shape == a.shape and (entry.jac is not None or not needs_grad) \
                    and torch.equal(entry.inputs, a.detach()):
                return _Replay.apply(a, entry.out, entry.jac) if needs_grad else entry.out
            return evaluate(a, rest)
        if not needs_grad:
            out = evaluate(a, rest)
            self.entries.append(_Entry(a.detach().clone(), out.detach(), None))
            return out
        leaf = a.detach().requires_grad_()
        out = evaluate(leaf, rest)
        jac = jacobian_rows(out, leaf, batched=self.batched_vjp).detach()
        self.entries.append(_Entry(a.detach().clone(), out.detach(), jac))
        return _Replay.apply(a, out.detach(), jac)
