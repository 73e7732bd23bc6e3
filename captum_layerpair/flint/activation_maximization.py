"""Visualising an attribute: maximally activating samples (MAS) and activation maximisation with partial
initialisation (AM+PI), after the authors' code (``flint.py`` ``optimize_inp``, ``extract_attr_class_max``).

AM+PI maximises, by Adam on the input,
``scale * phi_j(x) - l1_weight * mean|x| - bound_weight * mean(|x| 1[x outside bounds]) - tv_weight * TV(x)``
with ``TV(x) = mean|x[i+1, :] - x[i, :]| + mean|x[:, j+1] - x[:, j]|``, in ``rounds`` rounds of
``steps_per_round`` steps, Adam re-created each round with the learning rate multiplied by ``lr_decay``. It starts
from ``init_scale * x0`` (partial initialisation) or from U[0, 1] (plain AM). Defaults are the authors' MNIST /
QuickDraw values (scale 2, TV 6, bound 10, l1 0, bounds [0, 1], 12 rounds of 50 steps from lr 0.05 halved).
For CIFAR10 they use init 0.4 x0, TV 20, bound 20, bounds [-2.5, 2.5]; for CUB lr 0.01 decayed by 1/1.5, jitter
of up to 10 px, init 0.5 x0, scale 4, bound 20, TV 80. Penalties are per image, so a batch of images gives the
same result as optimising each alone (the code's batch means differ for N > 1; it optimises one image at a time).
"""
from __future__ import annotations

from typing import Literal

import torch

from captum_layerpair._checks import check_choice, check_positive_int
from captum_layerpair._model_state import model_state_preserved
from captum_layerpair.flint._data import Data, outputs
from captum_layerpair.flint.interpreter import Interpreter

__all__ = ["total_variation", "activation_maximization", "maximally_activating_samples"]


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """``mean|x[..., i+1, :] - x[..., i, :]| + mean|x[..., :, j+1] - x[..., :, j]|`` per image ``[N, ..., H, W]``
    -> ``[N]`` (the authors' TV penalty, which averages over channels and positions)."""
    if images.dim() < 3:
        raise ValueError(f"images must be [N, ..., H, W], got {tuple(images.shape)}")
    rows = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    cols = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    return rows + cols


def _objective(phi_j: torch.Tensor, x: torch.Tensor, scale: float, tv_weight: float, bound_weight: float,
               l1_weight: float, bounds: tuple[float, float]) -> torch.Tensor:
    outside = ((x > bounds[1]) | (x < bounds[0])).to(x.dtype)
    per_image = (scale * phi_j - l1_weight * x.abs().flatten(1).mean(1)
                 - bound_weight * (outside * x.abs()).flatten(1).mean(1) - tv_weight * total_variation(x))
    return per_image.sum()


def activation_maximization(interpreter: Interpreter, attribute: int, init: torch.Tensor | None = None, *,
                            init_scale: float = 0.3, input_shape: tuple[int, ...] | None = None, n: int = 1,
                            scale: float = 2.0, tv_weight: float = 6.0, bound_weight: float = 10.0,
                            l1_weight: float = 0.0, bounds: tuple[float, float] = (0.0, 1.0), rounds: int = 12,
                            steps_per_round: int = 50, lr: float = 0.05, lr_decay: float = 0.5, jitter: int = 0,
                            seed: int = 0) -> torch.Tensor:
    """Inputs that maximise attribute ``phi_j`` (AM+PI; plain AM from U[0, 1] when ``init`` is None).

    Parameters
    ----------
    interpreter:
        The interpreter; it runs in eval mode (parameters, flags, modes and buffers are restored, no parameter
        gradient is accumulated).
    attribute:
        j.
    init:
        ``[N, *input_shape]`` images ``x0``: start from ``init_scale * x0`` (authors: 0.3 global view, 0.2 local).
        ``None``: ``n`` images drawn from U[0, 1] of shape ``input_shape`` (default: the interpreter's).
    scale, tv_weight, bound_weight, l1_weight, bounds:
        The objective's weights (the authors' ``C``, ``lmbd_tv``, ``lmbd_bound``, ``lmbd_l1``) and the range
        outside which values are penalised.
    rounds, steps_per_round, lr, lr_decay:
        Adam schedule: ``rounds`` fresh optimisers, the ``r``-th with lr ``lr * lr_decay**r``.
    jitter:
        Roll each image by a random shift of up to ``jitter`` pixels before each step (CUB: 10).
    seed:
        Seeds the U[0, 1] start and the jitter (a private generator; global RNGs untouched).

    Returns
    -------
    ``[N, *input_shape]`` optimised inputs (detached).
    """
    if not 0 <= attribute < interpreter.n_attributes:
        raise ValueError(f"attribute must be in 0 .. {interpreter.n_attributes - 1}, got {attribute}")
    for name, value in (("rounds", rounds), ("steps_per_round", steps_per_round), ("n", n)):
        check_positive_int(name, value)
    if bounds[0] >= bounds[1]:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
    param = next(interpreter.parameters())
    generator = torch.Generator().manual_seed(seed)
    if init is None:
        shape = (n, *(input_shape or interpreter.input_shape))
        x = torch.rand(shape, generator=generator, dtype=param.dtype).to(param.device)
    else:
        x = (init_scale * init.detach()).to(param.device, param.dtype)
    x = x.clone().requires_grad_(True)
    with model_state_preserved(interpreter):
        interpreter.eval()
        for p in interpreter.parameters():
            p.requires_grad_(False)
        for r in range(rounds):
            optimizer = torch.optim.Adam([x], lr=lr * lr_decay**r)
            for _ in range(steps_per_round):
                view = x
                if jitter:
                    dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
                    view = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
                phi = interpreter.attributes(view)[:, attribute]
                objective = _objective(phi, x, scale, tv_weight, bound_weight, l1_weight, bounds)
                (grad,) = torch.autograd.grad(-objective, x)
                optimizer.zero_grad(set_to_none=True)
                x.grad = grad
                optimizer.step()
    return x.detach()


def maximally_activating_samples(interpreter: Interpreter, data: Data, attribute: int, cls: int | None = None,
                                 k: int = 3, by: Literal["label", "predictor", "interpreter"] = "label",
                                 batch_size: int = 256) -> torch.Tensor:
    """Indices (in data order) of the ``k`` samples of class ``cls`` with the largest ``phi_j``: ``[k]`` (fewer if
    the class has fewer samples).

    ``by`` says whose class: ``"label"`` (the true label, as the authors' MAS), ``"predictor"`` or
    ``"interpreter"``. ``cls=None`` ranks all samples. ``data`` must not be shuffled.
    """
    check_choice("by", by, ("label", "predictor", "interpreter"))
    check_positive_int("k", k)
    if not 0 <= attribute < interpreter.n_attributes:
        raise ValueError(f"attribute must be in 0 .. {interpreter.n_attributes - 1}, got {attribute}")
    values, classes = [], []
    for out, _, y in outputs(interpreter, data, batch_size):
        values.append(out.attributes[:, attribute])
        if cls is not None:
            if by == "label" and y is None:
                raise ValueError("by='label' needs labelled data (x, y)")
            classes.append(y if by == "label" else (out.predictor_logits if by == "predictor" else out.logits)
                           .argmax(1))
    phi = torch.cat(values)
    if cls is not None:
        phi = torch.where(torch.cat(classes).to(phi.device) == cls, phi, torch.full_like(phi, -torch.inf))
    order = phi.argsort(descending=True)
    return order[: min(k, int(torch.isfinite(phi).sum()))].cpu()
