"""Training a FLINT interpreter: the authors' warm-up schedule, one training step, and ``fit``.

Follows the authors' code (``flint.py`` ``train`` and its main loop): all of f, Psi, h and d in one Adam optimiser
(joint mode; post-hoc mode leaves f out and drops the CE term), the loss weights switched on in stages
(reconstruction + CE first, then output fidelity and l1, then entropy), one ``optimizer.step()`` per mini-batch.
Defaults differ for small CPU data sets: ``lr=1e-3`` (authors: 1e-4 over about 45k steps) and the schedule's
epochs scaled to the number of epochs asked for. The authors' re-creation of Adam at lr 4e-5 at epoch 19 (it
matters only for their 25-epoch CIFAR10 run) is not reproduced; pass your own ``optimizer`` for that.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Union

import torch
from tqdm import tqdm

from captum_layerpair._checks import check_choice, check_positive_int
from captum_layerpair._model_state import model_state_preserved
from captum_layerpair._random import seeded
from captum_layerpair.flint._data import Data, batches, parameter_device
from captum_layerpair.flint.interpreter import Interpreter
from captum_layerpair.flint.losses import TERMS, FLINTLoss, LossTerms

__all__ = ["paper_schedule", "constant_schedule", "train_step", "fit", "FitHistory", "Schedule", "PAPER_SCHEDULES"]

Schedule = Callable[[int], Mapping[str, float]]
"""``epoch (0-based) -> {term: factor}``; factors multiply the loss weights (missing terms: 1)."""

PAPER_SCHEDULES: dict[str, tuple[int, dict[str, list[tuple[int, float]]]]] = {
    # dataset: (the code's number of epochs, {term: [(k, factor)]}); a step (k, v) applies from the code's epoch
    # k + 1 on (the code's ``int(epoch > k)``), so k = 0 is "from the start". Factors are relative to the final
    # weight (QuickDraw's l1 is 0.02 at epoch 2 and 0.30 from epoch 3, CIFAR10's 0.001 then 0.15).
    "mnist": (12, {"prediction": [(0, 1.0)], "input_fidelity": [(0, 1.0)], "output_fidelity": [(2, 1.0)],
                   "l1": [(2, 1.0)], "entropy": [(4, 1.0)]}),
    "qdraw": (12, {"prediction": [(0, 1.0)], "input_fidelity": [(0, 1.0)], "output_fidelity": [(2, 1.0)],
                   "l1": [(1, 0.02 / 0.30), (2, 1.0)], "entropy": [(3, 1.0)]}),
    "cifar10": (25, {"prediction": [(0, 1.0)], "input_fidelity": [(0, 1.0)], "output_fidelity": [(2, 1.0)],
                     "l1": [(1, 0.001 / 0.15), (2, 1.0)], "entropy": [(3, 1.0)]}),
}
PAPER_SCHEDULES["fmnist"] = PAPER_SCHEDULES["mnist"]


def paper_schedule(n_epochs: int, dataset: str = "mnist") -> Schedule:
    """The authors' warm-up for ``dataset``, with its epochs scaled from the code's to ``n_epochs``.

    A term the code switches on after its epoch ``k`` of ``N`` (``int(epoch > k)``) is on from our 0-based epoch
    ``round(k * n_epochs / N)``; with ``n_epochs = N`` this is the code's schedule exactly. MNIST: reconstruction
    and CE from the start, output fidelity and l1 from 2/12 of the run, entropy from 4/12.

    Returns
    -------
    ``epoch -> {term: factor}`` for ``epoch`` in ``0 .. n_epochs - 1``.
    """
    check_positive_int("n_epochs", n_epochs)
    code_epochs, steps = check_choice("dataset", dataset, PAPER_SCHEDULES)
    starts = {term: [(round(k * n_epochs / code_epochs), v) for k, v in term_steps]
              for term, term_steps in steps.items()}

    def schedule(epoch: int) -> dict[str, float]:
        return {term: next((v for start, v in reversed(term_steps) if epoch >= start), 0.0)
                for term, term_steps in starts.items()}
    return schedule


def constant_schedule(epoch: int) -> dict[str, float]:
    """Every term on from the start."""
    return {term: 1.0 for term in TERMS}


def train_step(interpreter: Interpreter, loss_fn: FLINTLoss, optimizer: torch.optim.Optimizer,
               inputs: torch.Tensor, target: torch.Tensor | None = None,
               factors: Mapping[str, float] | None = None) -> LossTerms:
    """One optimiser step on one batch; returns the batch's :class:`LossTerms`.

    Joint mode: the forward keeps the graph through f (CE on ``target`` when given). Post-hoc mode: f runs in
    eval mode under ``no_grad`` and the CE term is dropped, so no predictor parameter receives a gradient.
    The interpreter's train/eval mode is the caller's (``fit`` sets train mode).
    """
    out = interpreter(inputs, grad_to_predictor=not interpreter.posthoc)
    terms = loss_fn(out, inputs, None if interpreter.posthoc else target, factors)
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    optimizer.step()
    return terms


@dataclass
class FitHistory:
    """Per-epoch record of a fit.

    terms: ``{"total" | term: [mean over the epoch's samples]}`` (unweighted terms, weighted total).
    factors: the schedule's factors of each epoch.
    seconds: wall time of each epoch.
    """

    terms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ("total", *TERMS)})
    factors: list[dict[str, float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def __str__(self) -> str:
        last = ", ".join(f"{k} {v[-1]:.4f}" for k, v in self.terms.items() if v)
        return f"FitHistory({len(self.seconds)} epochs, {sum(self.seconds):.1f} s; last epoch: {last})"


def _optimizer(interpreter: Interpreter, optimizer: torch.optim.Optimizer | Callable | None,
               lr: float) -> torch.optim.Optimizer:
    params = list(interpreter.trainable_parameters())
    if optimizer is None:
        return torch.optim.Adam(params, lr=lr)
    if not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer(params)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError("optimizer must be a torch.optim.Optimizer or a factory params -> Optimizer")
    if interpreter.posthoc:
        frozen = {id(p) for p in interpreter.model.parameters()}
        if any(id(p) in frozen for group in optimizer.param_groups for p in group["params"]):
            raise ValueError("post-hoc mode never changes the predictor, but the optimizer holds predictor "
                             "parameters; build it from interpreter.trainable_parameters()")
    return optimizer


def fit(interpreter: Interpreter, data: Data, epochs: int, *, loss: FLINTLoss | None = None,
        optimizer: torch.optim.Optimizer | Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer] | None
        = None, lr: float = 1e-3, schedule: Union[str, Schedule, None] = "paper", batch_size: int = 32,
        seed: int | None = 0, show_progress: bool = False) -> FitHistory:
    """Train a FLINT interpreter (joint: f, Psi, h, d; post-hoc: Psi, h, d only).

    Parameters
    ----------
    interpreter:
        An :class:`Interpreter`; ``interpreter.posthoc`` picks the mode.
    data:
        A DataLoader of ``(x, y)`` batches, or tensors ``(x, y)`` (batched here with ``batch_size``, shuffled each
        epoch). Post-hoc training needs no labels (``(x,)`` or ``x``).
    epochs:
        Number of passes over ``data``.
    loss:
        A :class:`FLINTLoss` (default: the authors' MNIST weights).
    optimizer:
        An optimiser over ``interpreter.trainable_parameters()`` or a factory ``params -> optimiser``
        (default: Adam with ``lr``).
    schedule:
        ``"paper"`` (the authors' MNIST warm-up scaled to ``epochs``, :func:`paper_schedule`), ``"constant"`` or
        ``None`` (every term on from the start), or ``epoch -> {term: factor}``.
    seed:
        Every random draw of the fit (shuffling, dropout) comes from this seed; the caller's RNG states are
        restored afterwards. ``None`` draws from the caller's RNGs.
    show_progress:
        A ``tqdm`` bar over epochs.

    Returns
    -------
    FitHistory. The interpreter's train/eval mode comes back as it was; post-hoc, the predictor's parameters,
    buffers, flags and modes are bit-identical afterwards.
    """
    check_positive_int("epochs", epochs)
    if not isinstance(interpreter, Interpreter):
        raise TypeError(f"fit trains a captum_layerpair.flint.Interpreter, got {type(interpreter).__name__}")
    loss = FLINTLoss() if loss is None else loss
    if schedule == "paper":
        schedule = paper_schedule(epochs)
    elif schedule is None or schedule == "constant":
        schedule = constant_schedule
    elif isinstance(schedule, str) or not callable(schedule):
        raise ValueError(f"schedule must be 'paper', 'constant', None or a callable epoch -> factors; got "
                         f"{schedule!r}")
    opt = _optimizer(interpreter, optimizer, lr)
    device = parameter_device(interpreter)
    history = FitHistory()
    was_training = interpreter.training
    frozen = model_state_preserved(interpreter.model) if interpreter.posthoc else nullcontext()
    with seeded(seed), frozen:
        interpreter.train()
        try:
            for epoch in tqdm(range(epochs), desc="FLINT fit", disable=not show_progress):
                start = time.perf_counter()
                factors = dict(schedule(epoch))
                sums = dict.fromkeys(history.terms, 0.0)
                count = 0
                epoch_seed = None if seed is None else seed + epoch
                for x, y in batches(data, batch_size, shuffle=True, seed=epoch_seed, device=device):
                    if y is None and not interpreter.posthoc and loss.weights["prediction"] > 0:
                        raise ValueError("joint training needs labels: give data as (x, y) batches")
                    terms = train_step(interpreter, loss, opt, x, y, factors)
                    for name, value in terms._asdict().items():
                        sums[name] += value.item() * len(x)
                    count += len(x)
                for name in history.terms:
                    history.terms[name].append(sums[name] / max(count, 1))
                history.factors.append(factors)
                history.seconds.append(time.perf_counter() - start)
        finally:
            interpreter.train(was_training)
    return history
