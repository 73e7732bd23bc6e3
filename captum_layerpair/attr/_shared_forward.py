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
  method run, independent of the number of units. With ``keep_rows`` only the first evaluations' graphs, up to
  that many rows in all, are kept; the others are recomputed (one forward and one backward pass) when a later unit
  needs them, so memory follows ``internal_batch_size`` at the price of those forward passes.
* ``"eager"``: the full Jacobian rows ``[K, B, *S]``, computed once. For methods whose backward hooks hold
  per-forward state that one backward pass consumes (DeepLift, guided backpropagation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from collections.abc import Callable

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
    """One recorded evaluation: its inputs ``[B, *S]``, outputs ``[B, K]`` and what its gradients come from."""

    inputs: torch.Tensor
    out: torch.Tensor
    source: tuple[torch.Tensor, int] | None = None  # (the tensor evaluated, its version): a cheap replay check
    rest: tuple[Any, ...] = ()  # the model inputs, to recompute a graph that was not kept
    evaluate: Evaluate | None = None
    graph: tuple[torch.Tensor, torch.Tensor] | None = None  # (out with its graph, leaf): lazy mode
    keep: bool = True  # lazy: keep the graph for later units (else drop it after the first backward pass)
    jac: torch.Tensor | None = None  # [K, B, *S]: eager mode

    @property
    def differentiable(self) -> bool:
        return self.evaluate is not None or self.jac is not None

    def matches(self, a: torch.Tensor) -> bool:
        """Whether ``a`` holds the recorded inputs (the same unchanged tensor, or equal values)."""
        if self.source is not None and self.source[0] is a and self.source[1] == a._version:
            return True
        return self.inputs.shape == a.shape and torch.equal(self.inputs, a.detach())

    def vjp(self, grad_out: torch.Tensor) -> torch.Tensor:
        """``grad_out [B, K]`` times the Jacobian of the evaluation: ``[B, *S]``."""
        if self.jac is not None:
            used = grad_out.ne(0).any(0).nonzero().flatten()  # Captum selects one unit: contract over it only
            return torch.einsum("bk,kb...->b...", grad_out[:, used], self.jac[used])
        if self.graph is not None:
            out, leaf = self.graph
            if not self.keep:
                self.graph = None
            return _vjp(out, leaf, grad_out, retain=self.keep)
        assert self.evaluate is not None
        with torch.enable_grad():  # recompute: the graph was not kept (keep_rows)
            leaf = self.inputs.detach().requires_grad_()
            return _vjp(self.evaluate(leaf, self.rest), leaf, grad_out, retain=False)


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
    keep_rows:
        Lazy mode: keep the graphs of at most this many evaluated rows in all; later evaluations are recomputed
        for each unit. ``None``: keep every graph.
    """

    def __init__(self, mode: Literal["lazy", "eager"] = "lazy", batched_vjp: bool | None = None,
                 keep_rows: int | None = None) -> None:
        self.mode = mode
        self.batched_vjp = batched_vjp
        self.keep_rows = keep_rows
        self.entries: list[_Entry] = []
        self.position = 0
        self.recording = True
        self.kept_rows = 0

    def record(self) -> None:
        self.entries, self.position, self.recording, self.kept_rows = [], 0, True, 0

    def replay(self) -> None:
        self.position, self.recording = 0, False

    def release(self) -> None:
        """Drop every recorded evaluation (and the graphs they keep)."""
        self.record()

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
            self.entries.append(_Entry(a.detach().clone(), out.detach(), (a, a._version)))
            return out
        leaf = a.detach().clone().requires_grad_()  # our own copy: the graph and the replay check read it
        out = evaluate(leaf, rest)
        if self.mode == "eager":
            entry = _Entry(leaf.detach(), out.detach(), (a, a._version),
                           jac=jacobian_rows(out, leaf, batched=self.batched_vjp).detach())
        else:
            keep = self.keep_rows is None or self.kept_rows + len(a) <= self.keep_rows
            self.kept_rows += len(a) if keep else 0
            entry = _Entry(leaf.detach(), out.detach(), (a, a._version), rest, evaluate, (out, leaf), keep)
        self.entries.append(entry)
        return _Recorded.apply(a, entry.out, entry)
