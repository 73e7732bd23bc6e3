"""Evaluating a FLINT interpreter: accuracy of f and g, fidelity of g to f, conciseness, active attributes.

Paper definitions (section 4): fidelity is the share of samples where ``argmax g(x) = argmax f(x)`` (the code's
``analyze`` also prints top-5 fidelity: f's class among g's top 5); conciseness
``CNS_g(tau) = mean_x |{j : r_{j,x} > 1/tau}|`` with the local relevance ``r`` for g's predicted class
(:func:`~captum_layerpair.flint.relevance.local_relevance`), for ``tau`` in {1.5, 2, 2.5, 3, 4, 5}; lower is more
concise. The code's ``sparse_sense`` counts ``alpha_j > max(alpha)/tau`` (signed) instead. An attribute is
*active* when ``max_x phi_j(x) > 0`` on the data (with ReLU attributes, an inactive one is 0 everywhere; with the
authors' LeakyReLU, inactive ones are slightly negative everywhere), and *relevant* when ``r_{j,x} > 1/2`` for at
least one sample (it enters some local interpretation at tau = 2).

:class:`FLINTMetrics` accumulates all of it batch by batch as a ``torchmetrics.Metric`` (states summed, or maxed,
across ``torch.distributed`` ranks); :func:`evaluate` runs it over a data set.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torchmetrics import Metric

from captum_layerpair._checks import check_positive_int
from captum_layerpair.flint._data import Data, outputs
from captum_layerpair.flint.interpreter import Interpreter, InterpreterOutput
from captum_layerpair.flint.relevance import check_tau, local_relevance

__all__ = ["TAUS", "fidelity", "conciseness", "FLINTMetrics", "FLINTReport", "evaluate"]

TAUS: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
"""The paper's conciseness thresholds ``tau``."""


def conciseness(relevance: torch.Tensor, taus: Sequence[float] = TAUS) -> torch.Tensor:
    """``CNS(tau) = mean_x |{j : r_{j,x} > 1/tau}|`` of a ``[N, J]`` local relevance: ``[len(taus)]`` (float64)."""
    if relevance.dim() != 2 or relevance.shape[0] == 0:
        raise ValueError(f"relevance must be [N, J] with N >= 1, got {tuple(relevance.shape)}")
    return _counts(relevance, taus).to(torch.float64) / relevance.shape[0]


def _counts(relevance: torch.Tensor, taus: Sequence[float]) -> torch.Tensor:
    thresholds = torch.tensor([1.0 / check_tau(t) for t in taus], dtype=relevance.dtype, device=relevance.device)
    return (relevance[:, :, None] > thresholds).sum((0, 1))


@dataclass
class FLINTReport:
    """FLINT's evaluation of an interpreter on a data set (shares in [0, 1]).

    n: number of samples; acc_f / acc_g: accuracy of f and g (NaN without labels); fidelity: top-1 agreement of g
    with f; fidelity_top5: f's class within g's top 5 (top C when C < 5); taus and conciseness: ``CNS_g(tau)``;
    active_attributes: attributes with ``max_x phi_j > 0``, of n_attributes; relevant_attributes: attributes with
    ``r_{j,x} > 1/2`` for some sample.
    """

    n: int
    acc_f: float
    acc_g: float
    fidelity: float
    fidelity_top5: float
    taus: tuple[float, ...]
    conciseness: tuple[float, ...]
    active_attributes: int
    relevant_attributes: int
    n_attributes: int

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        cns = "  ".join(f"{t:g}: {c:.2f}" for t, c in zip(self.taus, self.conciseness))
        return (f"FLINT on n = {self.n}: acc f {100 * self.acc_f:.2f} %, acc g {100 * self.acc_g:.2f} %, "
                f"fidelity {100 * self.fidelity:.2f} % (top-5 {100 * self.fidelity_top5:.2f} %)\n"
                f"  CNS_g(tau)  {cns}\n"
                f"  active attributes {self.active_attributes} / {self.n_attributes}, relevant (r > 1/2 for some "
                f"sample) {self.relevant_attributes}")


class FLINTMetrics(Metric):
    """Accuracy of f and g, fidelity (top-1, top-5), conciseness and active attributes, batch by batch.

    Parameters
    ----------
    interpreter:
        The interpreter whose head ``h`` defines the relevance (read at each ``update``; not a submodule of the
        metric).
    taus:
        Conciseness thresholds (each > 1).

    Examples
    --------
    >>> metric = FLINTMetrics(interp)
    >>> for x, y in loader:
    ...     metric.update(interp(x), y)
    >>> print(metric.compute())       # a FLINTReport
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, interpreter: Interpreter, taus: Sequence[float] = TAUS, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(interpreter, Interpreter):
            raise TypeError(f"FLINTMetrics needs a flint.Interpreter, got {type(interpreter).__name__}")
        self._head = (interpreter.head,)  # a tuple keeps the interpreter out of the metric's submodules
        self.taus = tuple(check_tau(t) for t in taus)
        self.n_attributes = interpreter.n_attributes
        for name in ("n", "n_labelled", "correct_f", "correct_g", "agree", "agree_top5"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("cns_counts", torch.zeros(len(self.taus), dtype=torch.long), dist_reduce_fx="sum")
        for name in ("attribute_max", "relevance_max"):
            self.add_state(name, torch.full((self.n_attributes,), -torch.inf, dtype=torch.float64),
                           dist_reduce_fx="max")

    def update(self, out: InterpreterOutput, target: torch.Tensor | None = None) -> None:
        """Add one batch: the interpreter's output and (optionally) the labels ``[N]``."""
        f_pred = out.predictor_logits.detach().argmax(1)
        g_logits = out.logits.detach()
        phi = out.attributes.detach()
        k = min(5, g_logits.shape[1])
        self.n += len(f_pred)
        self.agree += (g_logits.argmax(1) == f_pred).sum()
        self.agree_top5 += (g_logits.topk(k, 1).indices == f_pred[:, None]).any(1).sum()
        if target is not None:
            self.n_labelled += len(target)
            self.correct_f += (f_pred == target).sum()
            self.correct_g += (g_logits.argmax(1) == target).sum()
        relevance = local_relevance(phi, self._head[0], g_logits.argmax(1))
        self.cns_counts += _counts(relevance.detach(), self.taus)
        self.attribute_max = torch.maximum(self.attribute_max, phi.amax(0).to(torch.float64))
        self.relevance_max = torch.maximum(self.relevance_max, relevance.amax(0).to(torch.float64))

    def compute(self) -> FLINTReport:
        n, labelled = int(self.n), int(self.n_labelled)
        if n == 0:
            raise ValueError("FLINTMetrics.compute() before any update")
        nan = float("nan")
        return FLINTReport(
            n=n, acc_f=int(self.correct_f) / labelled if labelled else nan,
            acc_g=int(self.correct_g) / labelled if labelled else nan,
            fidelity=int(self.agree) / n, fidelity_top5=int(self.agree_top5) / n, taus=self.taus,
            conciseness=tuple(float(c) / n for c in self.cns_counts),
            active_attributes=int((self.attribute_max > 0).sum()),
            relevant_attributes=int((self.relevance_max > 0.5).sum()), n_attributes=self.n_attributes)


def evaluate(interpreter: Interpreter, data: Data, taus: Sequence[float] = TAUS,
             batch_size: int = 256) -> FLINTReport:
    """Evaluate ``interpreter`` on ``data`` (a DataLoader of ``(x, y)``, tensors ``(x, y)``, or ``x`` alone).

    Runs in eval mode without gradient; the interpreter's (and predictor's) modes come back afterwards.
    ``print(report)`` gives a paper-style summary.
    """
    metric = FLINTMetrics(interpreter, taus)
    for out, _, y in outputs(interpreter, data, batch_size):
        metric.update(out, y)
    return metric.compute()


def fidelity(interpreter: Interpreter, data: Data, top_k: int = 1, batch_size: int = 256) -> float:
    """Share of samples whose f-class is among g's ``top_k`` classes (``top_k=1``: the paper's fidelity)."""
    check_positive_int("top_k", top_k)
    agree, n = 0, 0
    for out, x, _ in outputs(interpreter, data, batch_size):
        top = out.logits.topk(min(top_k, out.logits.shape[1]), 1).indices
        agree += int((top == out.predictor_logits.argmax(1, keepdim=True)).any(1).sum())
        n += len(x)
    if n == 0:
        raise ValueError("fidelity got no data")
    return agree / n

