"""All target units from one set of forward passes: record once, replay for every other unit.

A plain Captum method is run once per target unit, with the global RNG reset to the same state before each run,
so every unit sees the same interpolation points, noise and perturbations. The first run *records*: every
evaluation of the sub-network computes the outputs of all units of the chunk and keeps what the later runs need
for their gradients. Later runs *replay*: the sub-network returns the recorded outputs through ``_Recorded``,
whose backward hands Captum the vector-Jacobian product of the unit it asked for. Captum's own bookkeeping
(interpolation, Riemann sums, multiplication by ``inputs - baselines``, noise tunnels, convergence deltas) runs
unchanged for each unit, so results equal the per-unit path; an evaluation whose inputs differ from the recorded
ones is computed afresh.

What an evaluation keeps for the gradients (``SharedForward(mode=...)``):

* ``"lazy"`` (default): the recorded forward graph; each unit back-propagates through it on demand (one backward
  pass per unit and evaluation, as the per-unit path does, without its forward passes). Memory: the graphs of one
  method run, independent of the number of units.
* ``"eager"``: the Jacobian rows ``[K, B, *S]`` of the chunk's units, computed once, the graph freed. For methods
  whose backward hooks hold per-forward state that one backward pass consumes (DeepLift, guided backpropagation),
  and for memory bounded by ``internal_batch_size`` (small groups of units; ``units_within_graph``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["SharedForward", "jacobian_rows"]

Evaluate = Callable[[torch.Tensor, tuple[Any, ...]], torch.Tensor]


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


def _vjp(out: torch.Tensor, leaf: torch.Tensor, grad_out: torch.Tensor, retain: bool) -> torch.Tensor:
    (grad,) = torch.autograd.grad(out, leaf, grad_outputs=grad_out, retain_graph=retain, allow_unused=True)
    return torch.zeros_like(leaf) if grad is None else grad


@dataclass
class _Entry:
    """One recorded evaluation: its inputs ``[B, *S]`` (the evaluated tensor itself, not a copy: an in-place change
    shows in its version counter), outputs ``[B, K]`` and what its gradients come from."""

    inputs: torch.Tensor
    out: torch.Tensor
    source: tuple[torch.Tensor, int] | None = None  # (the tensor evaluated, its version): a cheap replay check
    graph: tuple[torch.Tensor, torch.Tensor] | None = None  # (out with its graph, leaf): lazy mode
    jac: torch.Tensor | None = None  # [K, B, *S]: eager mode

    @property
    def differentiable(self) -> bool:
        return self.graph is not None or self.jac is not None

    def matches(self, a: torch.Tensor) -> bool:
        """Whether ``a`` holds the recorded inputs (the same unchanged tensor, or equal values)."""
        if self.source is None or self.inputs._version != self.source[1]:
            return False  # the recorded inputs were changed in place since
        return self.source[0] is a or (self.inputs.shape == a.shape and torch.equal(self.inputs, a.detach()))

    def vjp(self, grad_out: torch.Tensor) -> torch.Tensor:
        """``grad_out [B, K]`` times the Jacobian of the evaluation: ``[B, *S]``."""
        if self.jac is not None:
            used = grad_out.ne(0).any(0).nonzero().flatten()  # Captum selects one unit: contract over it only
            return torch.einsum("bk,kb...->b...", grad_out[:, used], self.jac[used])
        assert self.graph is not None
        out, leaf = self.graph
        return _vjp(out, leaf, grad_out, retain=True)


@contextmanager
def _saved_bytes() -> Iterator[list[int]]:
    """Count the bytes of the distinct tensors autograd saves for backward inside the block."""
    total, seen = [0], set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total[0] += storage.nbytes()
        return t.detach()  # not ``t``: a saved output would hold its own grad_fn (a cycle autograd cannot free)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


class _Recorded(torch.autograd.Function):
    """``out`` as a function of ``a`` whose vector-Jacobian products come from a recorded ``_Entry``."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, out: torch.Tensor, entry: _Entry) -> torch.Tensor:
        ctx.entry = entry
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.entry.vjp(grad_out), None, None


class SharedForward:
    """Evaluation cache for one chunk of units; ``record()`` before the first unit's run, ``replay()`` after.

    Parameters
    ----------
    mode:
        ``"lazy"`` (keep the forward graphs, back-propagate per unit) or ``"eager"`` (Jacobian rows).
    batched_vjp:
        Eager mode: compute the rows with one batched vector-Jacobian product (see ``jacobian_rows``).
    measure:
        Eager mode: measure, while recording, the bytes a forward graph keeps per row and the rows evaluated
        (for ``units_within_graph``).
    """

    def __init__(self, mode: Literal["lazy", "eager"] = "lazy", batched_vjp: bool | None = None,
                 measure: bool = False) -> None:
        self.mode = mode
        self.batched_vjp = batched_vjp
        self.measure = measure
        self.graph_bytes_per_row = 0.0  # the largest over the recorded evaluations
        self.rows_bytes = 0  # the bytes of one unit's Jacobian rows over all evaluations
        self.entries: list[_Entry] = []
        self.position = 0
        self.recording = True

    def record(self) -> None:
        self.entries, self.position, self.recording = [], 0, True

    def replay(self) -> None:
        self.position, self.recording = 0, False

    def release(self) -> None:
        """Drop every recorded evaluation (and the graphs they keep)."""
        self.record()

    def units_within_graph(self, rows: int) -> int:
        """How many units' Jacobian rows fit in the memory of a forward graph of ``rows`` rows (at least 1),
        from what ``measure=True`` saw."""
        if self.rows_bytes == 0:
            return 1
        return max(1, int(self.graph_bytes_per_row * rows // self.rows_bytes))

    def __call__(self, a: torch.Tensor, rest: tuple[Any, ...], evaluate: Evaluate) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and a.requires_grad
        if not self.recording:
            entry = self.entries[self.position] if self.position < len(self.entries) else None
            self.position += 1
            if entry is not None and (entry.differentiable or not needs_grad) and entry.matches(a):
                return _Recorded.apply(a, entry.out, entry) if needs_grad else entry.out
            return evaluate(a, rest)
        if not needs_grad:
            out = evaluate(a, rest)
            self.entries.append(_Entry(a.detach(), out.detach(), (a, a._version)))
            return out
        leaf = a.detach().requires_grad_()  # shares memory and version counter with ``a``: no copy
        if self.measure:
            with _saved_bytes() as saved:
                out = evaluate(leaf, rest)
            self.graph_bytes_per_row = max(self.graph_bytes_per_row, saved[0] / max(1, len(a)))
            self.rows_bytes += a.numel() * a.element_size()
        else:
            out = evaluate(leaf, rest)
        if self.mode == "eager":
            entry = _Entry(leaf.detach(), out.detach(), (a, a._version),
                           jac=jacobian_rows(out, leaf, batched=self.batched_vjp).detach())
        else:
            entry = _Entry(leaf.detach(), out.detach(), (a, a._version), (out, leaf))
        self.entries.append(entry)
        return _Recorded.apply(a, entry.out, entry)
