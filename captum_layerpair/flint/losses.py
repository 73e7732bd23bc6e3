"""FLINT's training losses, as the authors' code computes them (``flint.py`` ``train``, ``loss_cce``).

The paper writes ``L_pred + beta L_of + gamma L_if + delta L_cd`` with sums over samples,
``L_of = -sum_x h(Phi(x))^T log f(x)`` and ``L_cd = -E(mean_x Phi) + sum_x E(Phi(x)) + eta sum_x ||Phi(x)||_1``.
We follow the authors' code, which differs in four places (each documented where it applies):

1. output fidelity uses f's distribution as the target, ``-softmax(f)^T log softmax(h)``, with f's output
   **detached**: it trains g to match f and reaches f only through the hidden layers that feed Psi;
2. every term is a mean over the batch (the l1 term over the J attributes too), and the diversity entropy is
   computed per mini-batch;
3. the entropies act on ``|Phi|``;
4. the diversity entropy has its own weight ``diversity`` (mu, 1.0 in the code's HEAD).

Weights: ``beta = output_fidelity``, ``gamma = input_fidelity``, ``delta = entropy``, ``delta * eta = l1``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from captum_layerpair._checks import check_choice, check_finite
from captum_layerpair.flint.interpreter import InterpreterOutput

__all__ = ["output_fidelity_loss", "input_fidelity_loss", "conciseness_diversity_loss", "attribute_l1",
           "softmax_entropy", "LossTerms", "FLINTLoss", "TERMS", "PAPER_WEIGHTS", "RECONSTRUCTIONS"]

TERMS = ("prediction", "output_fidelity", "input_fidelity", "l1", "entropy")
"""The loss terms, in the order of :class:`LossTerms` (after ``total``); also the keys of schedule factors."""

RECONSTRUCTIONS = {"mse": F.mse_loss, "l1": F.l1_loss}

PAPER_WEIGHTS: dict[str, dict[str, float | str]] = {
    # flint.py 794-807: lmbd_rec, lmbd_expl, lmbd_spa (final value), lmbd_ent; CE weight 1.0 throughout
    "mnist": dict(input_fidelity=0.8, output_fidelity=0.5, l1=0.1, entropy=0.2, reconstruction="mse"),
    "fmnist": dict(input_fidelity=0.8, output_fidelity=0.5, l1=0.1, entropy=0.2, reconstruction="mse"),
    "qdraw": dict(input_fidelity=5.0, output_fidelity=0.1, l1=0.3, entropy=0.1, reconstruction="mse"),
    "cifar10": dict(input_fidelity=2.0, output_fidelity=0.6, l1=0.15, entropy=0.2, reconstruction="l1"),
}
"""The authors' loss weights per dataset."""


def softmax_entropy(values: torch.Tensor) -> torch.Tensor:
    """``E(v) = -sum_i p_i log p_i`` with ``p = softmax(v)`` over the last dimension: ``[..., J] -> [...]``."""
    return -(values.softmax(-1) * values.log_softmax(-1)).sum(-1)


def _check_2d(name: str, value: torch.Tensor) -> None:
    if not isinstance(value, torch.Tensor) or value.dim() != 2:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a tensor [N, C]; got {got}")


def output_fidelity_loss(interpreter_logits: torch.Tensor, predictor_logits: torch.Tensor) -> torch.Tensor:
    """``mean_x sum_c -softmax(f(x))_c log softmax(g(x))_c`` with f's logits detached (the authors' code).

    The paper writes the reverse direction, ``-h(Phi)^T log f``, which would push f towards g; the code's form
    trains g to match f and never reaches f's output head (its gradient with respect to ``predictor_logits`` is
    exactly zero). ``log_softmax`` replaces the code's ``softmax().log()`` (equal, numerically safer).

    Parameters
    ----------
    interpreter_logits, predictor_logits:
        ``[N, C]`` logits of g and of f.

    Returns
    -------
    A scalar; equals ``H(softmax(f))`` (and has zero gradient) where g's logits equal f's.
    """
    _check_2d("interpreter_logits", interpreter_logits)
    _check_2d("predictor_logits", predictor_logits)
    if interpreter_logits.shape != predictor_logits.shape:
        raise ValueError(f"interpreter_logits {tuple(interpreter_logits.shape)} and predictor_logits "
                         f"{tuple(predictor_logits.shape)} must have the same shape [N, C]")
    target = predictor_logits.detach().softmax(1)
    return -(target * interpreter_logits.log_softmax(1)).sum(1).mean()


def input_fidelity_loss(reconstruction: torch.Tensor, inputs: torch.Tensor,
                        kind: Literal["mse", "l1"] = "mse") -> torch.Tensor:
    """``mean |d(Phi(x)) - x|^2`` over all elements (``"mse"``; the code's ``"l1"`` for CIFAR10): a scalar."""
    fn = check_choice("reconstruction", kind, RECONSTRUCTIONS)
    if reconstruction.shape != inputs.shape:
        raise ValueError(f"the reconstruction has shape {tuple(reconstruction.shape)}, the inputs "
                         f"{tuple(inputs.shape)}; the decoder must output the input's shape")
    return fn(reconstruction, inputs)


def conciseness_diversity_loss(attributes: torch.Tensor, diversity: float = 1.0) -> torch.Tensor:
    """``mean_x E(|Phi(x)|) - mu * E(mean_x |Phi(x)|)`` on one batch (the code's conciseness minus diversity).

    The first entropy is low when each sample uses few attributes (conciseness); the second is high when the
    batch as a whole uses many (diversity). Equal rows give 0 (with ``mu = 1``); rows of one constant give a mean
    entropy of ``log J``; J distinct one-hot rows (scaled up) give ``-log J``. ``|Phi|`` follows the code (its MNIST
    Psi ends in LeakyReLU, so attributes may be negative).

    Parameters
    ----------
    attributes:
        ``[N, J]``.
    diversity:
        mu, the weight of the diversity entropy (1.0 in the code's HEAD).
    """
    _check_2d("attributes", attributes)
    magnitude = attributes.abs()
    return softmax_entropy(magnitude).mean() - diversity * softmax_entropy(magnitude.mean(0))


def attribute_l1(attributes: torch.Tensor) -> torch.Tensor:
    """``mean_{x, j} |Phi_j(x)|``: the code's ``L1Loss(Phi, 0)``, i.e. the paper's l1 term divided by N and J."""
    _check_2d("attributes", attributes)
    return attributes.abs().mean()


class LossTerms(NamedTuple):
    """One evaluation of :class:`FLINTLoss`: ``total`` (with its graph) and the unweighted terms (detached).

    A term that is not computed (no labels, no decoder) is 0.
    """

    total: torch.Tensor
    prediction: torch.Tensor
    output_fidelity: torch.Tensor
    input_fidelity: torch.Tensor
    l1: torch.Tensor
    entropy: torch.Tensor


class FLINTLoss(nn.Module):
    """The FLINT objective, as in the authors' code; defaults are their MNIST branch.

    ``total = prediction * CE(f(x), y) + input_fidelity * L_if + output_fidelity * L_of + l1 * mean|Phi|
    + entropy * (mean_x E(|Phi|) - diversity * E(mean_x |Phi|))``.

    Paper notation: ``beta = output_fidelity`` (0.5), ``gamma = input_fidelity`` (0.8), ``delta = entropy`` (0.2),
    ``delta * eta = l1`` (0.1, so eta = 0.5), ``mu = diversity`` (1.0). ``L_of`` detaches f's output (see
    :func:`output_fidelity_loss`). ``FLINTLoss.paper("qdraw")`` gives another dataset's weights.

    Parameters
    ----------
    output_fidelity, input_fidelity, entropy, l1, diversity, prediction:
        Non-negative weights.
    reconstruction:
        ``"mse"`` or ``"l1"`` (the code's choice for CIFAR10).
    """

    def __init__(self, output_fidelity: float = 0.5, input_fidelity: float = 0.8, entropy: float = 0.2,
                 l1: float = 0.1, diversity: float = 1.0, prediction: float = 1.0,
                 reconstruction: Literal["mse", "l1"] = "mse") -> None:
        super().__init__()
        weights = dict(prediction=prediction, output_fidelity=output_fidelity, input_fidelity=input_fidelity,
                       l1=l1, entropy=entropy, diversity=diversity)
        for name, value in weights.items():
            check_finite(name, float(value))
            if value < 0:
                raise ValueError(f"FLINTLoss weight {name} must be >= 0, got {value}")
        self.weights = {k: float(v) for k, v in weights.items() if k != "diversity"}
        self.diversity = float(diversity)
        check_choice("reconstruction", reconstruction, RECONSTRUCTIONS)
        self.reconstruction = reconstruction

    @classmethod
    def paper(cls, dataset: str = "mnist", **overrides: float) -> FLINTLoss:
        """The authors' weights for ``dataset`` (``"mnist"``, ``"fmnist"``, ``"qdraw"``, ``"cifar10"``)."""
        weights = dict(check_choice("dataset", dataset, PAPER_WEIGHTS))
        weights.update(overrides)
        return cls(**weights)  # type: ignore[arg-type]

    def forward(self, out: InterpreterOutput, inputs: torch.Tensor, target: torch.Tensor | None = None,
                factors: Mapping[str, float] | None = None) -> LossTerms:
        """Evaluate every term on one batch.

        Parameters
        ----------
        out:
            The interpreter's output on ``inputs``.
        inputs:
            ``[N, *input_shape]``, the reconstruction target.
        target:
            ``[N]`` labels for the prediction (CE) term; ``None`` (post-hoc training) leaves it out.
        factors:
            Per-term multipliers from a schedule (keys of :data:`TERMS`; missing keys mean 1; 0 switches a term
            off), e.g. ``paper_schedule(epochs)(epoch)``.

        Returns
        -------
        LossTerms
        """
        factors = dict(factors or {})
        unknown = set(factors) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown loss term(s) {sorted(unknown)} in factors; allowed: {list(TERMS)}")
        zero = out.attributes.new_zeros(())
        terms = {
            "prediction": F.cross_entropy(out.predictor_logits, target) if target is not None else zero,
            "output_fidelity": output_fidelity_loss(out.logits, out.predictor_logits),
            "input_fidelity": (input_fidelity_loss(out.reconstruction, inputs, self.reconstruction)
                               if out.reconstruction is not None else zero),
            "l1": attribute_l1(out.attributes),
            "entropy": conciseness_diversity_loss(out.attributes, self.diversity),
        }
        total = zero
        for name, value in terms.items():
            weight = self.weights[name] * float(factors.get(name, 1.0))
            if weight != 0.0:
                total = total + weight * value
        return LossTerms(total, *(terms[name].detach() for name in TERMS))

    def extra_repr(self) -> str:
        weights = ", ".join(f"{k}={v:g}" for k, v in self.weights.items())
        return f"{weights}, diversity={self.diversity:g}, reconstruction={self.reconstruction!r}"
