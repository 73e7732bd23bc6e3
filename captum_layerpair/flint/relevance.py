"""Relevance of attributes for a decision, and FLINT's local and global interpretations (paper definitions).

* Contribution of attribute j to class c for x: ``alpha_{j,c,x} = phi_j(x) w_{c,j}``; with the bias,
  ``sum_j alpha_{j,c,x} + b_c`` is the interpreter's logit for c.
* Local relevance for the predicted class: ``r_{j,x} = alpha_{j,yhat,x} / max_i |alpha_{i,yhat,x}|`` in [-1, 1].
* Local interpretation: ``{j : r_{j,x} > 1/tau}``; global relevance ``r_{j,c} = mean_{x: yhat(x) = c} r_{j,x}``;
  global interpretation: the pairs ``(c, j)`` with ``r_{j,c} > 1/tau``.

We implement the paper's definitions. The authors' code has variants: ``collect_g_data`` normalises alpha by its
*signed* maximum (``alpha / max alpha``), ``sparse_sense`` counts ``alpha_j > max(alpha)/tau`` (signed), the demo
notebook counts ``|alpha_j| > max|alpha|/tau``; the code takes yhat as g's prediction (the paper writes
``g(x) = f(x) = yhat``), which is our default (``by="predictor"`` uses f's). The interpretation explains g, and f
only where the two agree: flag samples where they do not (``InterpreterOutput`` has both logits).
"""
from __future__ import annotations

import warnings
from typing import Literal, Union

import torch
from captum.attr._utils.attribution import Attribution
from torch import nn

from captum_layerpair._checks import check_choice
from captum_layerpair.flint._data import Data, outputs
from captum_layerpair.flint.interpreter import Interpreter

__all__ = ["attribute_contributions", "local_relevance", "AttributeRelevance", "class_relevance",
           "global_interpretation", "local_interpretation", "check_tau"]

Target = Union[int, torch.Tensor, list, None]


def _class_index(target: Target, attributes: torch.Tensor, head: nn.Linear) -> torch.Tensor:
    """``[N]`` class indices: ``target`` (an int or ``[N]``), or the head's argmax for ``None``."""
    n = attributes.shape[0]
    if target is None:
        return head(attributes).argmax(1)
    index = torch.as_tensor(target, device=attributes.device).long().reshape(-1)
    if index.numel() == 1:
        index = index.expand(n)
    if index.numel() != n or (index < 0).any() or (index >= head.out_features).any():
        raise ValueError(f"target must be an int or [N] = [{n}] class indices in 0 .. {head.out_features - 1}; "
                         f"got {target!r}")
    return index


def attribute_contributions(attributes: torch.Tensor, head: nn.Linear, target: Target = None) -> torch.Tensor:
    """``alpha_{j,c,x} = phi_j(x) w_{c,j}`` for the class ``c`` of each sample: ``[N, J]``.

    Parameters
    ----------
    attributes:
        ``[N, J]``.
    head:
        The interpreter's ``nn.Linear(J, C)``.
    target:
        An int or ``[N]`` classes; ``None``: the head's prediction. ``alpha.sum(1) + b_c`` equals the head's
        logit for that class (up to rounding).
    """
    if attributes.dim() != 2 or attributes.shape[1] != head.in_features:
        raise ValueError(f"attributes must be [N, J] with J = {head.in_features}; got {tuple(attributes.shape)}")
    index = _class_index(target, attributes, head)
    return attributes * head.weight[index]


def local_relevance(attributes: torch.Tensor, head: nn.Linear, target: Target = None) -> torch.Tensor:
    """``r_{j,x} = alpha_{j,c,x} / max_i |alpha_{i,c,x}|`` in [-1, 1]: ``[N, J]`` (0 for a sample whose alphas are
    all 0). ``target`` as in :func:`attribute_contributions`."""
    alpha = attribute_contributions(attributes, head, target)
    scale = alpha.abs().amax(1, keepdim=True)
    return torch.where(scale > 0, alpha / torch.where(scale > 0, scale, torch.ones_like(scale)),
                       torch.zeros_like(alpha))


class AttributeRelevance(Attribution):
    """FLINT's local interpretation as a Captum attribution: the relevance of each attribute for a class.

    Parameters
    ----------
    interpreter:
        A FLINT :class:`Interpreter` (its train/eval mode is used as it is; call ``.eval()`` first).

    Examples
    --------
    >>> r = AttributeRelevance(interp.eval()).attribute(x)          # [N, J], for g's predicted class
    """

    def __init__(self, interpreter: Interpreter) -> None:
        if not isinstance(interpreter, Interpreter):
            raise TypeError(f"AttributeRelevance needs a flint.Interpreter, got {type(interpreter).__name__}")
        super().__init__(interpreter)
        self.interpreter = interpreter

    def attribute(self, inputs: torch.Tensor, target: Target = None, normalize: bool = True) -> torch.Tensor:
        """Relevance ``r [N, J]`` (``normalize=True``) or contributions ``alpha [N, J]`` of ``inputs [N, ...]``.

        ``target``: an int or ``[N]`` classes; ``None`` is the interpreter's prediction.
        """
        with torch.no_grad():
            phi = self.interpreter.attributes(inputs)
            fn = local_relevance if normalize else attribute_contributions
            return fn(phi, self.interpreter.head, target)

    def has_convergence_delta(self) -> bool:
        return False


def class_relevance(interpreter: Interpreter, data: Data, *, by: Literal["interpreter", "predictor"] = "interpreter",
                    batch_size: int = 256) -> torch.Tensor:
    """Global relevance ``r_{j,c}``: the mean local relevance over the samples predicted as c, ``[C, J]``.

    The interpreter runs in eval mode without gradient (its modes come back afterwards). ``by`` says whose
    prediction defines both ``yhat`` in ``r_{j,x}`` and the class sets ``S_c``. The authors average over about
    1000 random training samples; pass the subset you want. Classes with no sample get NaN (with a warning).
    """
    check_choice("by", by, ("interpreter", "predictor"))
    C, J = interpreter.n_classes, interpreter.n_attributes
    sums, counts = None, None
    for out, _, _ in outputs(interpreter, data, batch_size):
        yhat = (out.logits if by == "interpreter" else out.predictor_logits).argmax(1)
        r = local_relevance(out.attributes, interpreter.head, yhat)
        if sums is None:
            sums, counts = r.new_zeros(C, J), r.new_zeros(C)
        sums.index_add_(0, yhat, r)
        counts += torch.bincount(yhat, minlength=C).to(counts.dtype)
    if sums is None:
        raise ValueError("class_relevance got no data")
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        warnings.warn(f"no sample is predicted as class(es) {empty}; their relevance is NaN", stacklevel=2)
    return sums / counts[:, None]


def check_tau(tau: float) -> float:
    """``tau`` as a float > 1 (the threshold ``1/tau`` must lie in (0, 1))."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 1:
        raise ValueError(f"tau must be a number > 1 (relevance threshold 1/tau), got {tau!r}")
    return float(tau)


def global_interpretation(relevance: torch.Tensor, tau: float = 2.0) -> list[tuple[int, int]]:
    """The pairs ``(class c, attribute j)`` with ``r_{j,c} > 1/tau``, from a ``[C, J]`` class relevance, sorted by
    class then by decreasing relevance. The authors' thresholds ``1/tau``: 0.1 (MNIST), 0.2 (QuickDraw, CIFAR10),
    0.4 (CUB) for listing; 0.5 for their figures."""
    threshold = 1.0 / check_tau(tau)
    if relevance.dim() != 2:
        raise ValueError(f"relevance must be [C, J], got {tuple(relevance.shape)}")
    pairs = []
    for c in range(relevance.shape[0]):
        row = relevance[c]
        js = [j for j in row.argsort(descending=True).tolist() if row[j] > threshold]
        pairs.extend((c, j) for j in js)
    return pairs


def local_interpretation(relevance: torch.Tensor, tau: float = 2.0) -> list[list[int]]:
    """For each sample of a ``[N, J]`` local relevance, the attributes with ``r_{j,x} > 1/tau``, most relevant
    first."""
    threshold = 1.0 / check_tau(tau)
    if relevance.dim() != 2:
        raise ValueError(f"relevance must be [N, J], got {tuple(relevance.shape)}")
    return [[j for j in row.argsort(descending=True).tolist() if row[j] > threshold] for row in relevance]
