"""Captum's ablation family for all target units at once, with our own accounting.

Captum's multi-output path multiplies every perturbation's output difference by its mask into an
``[N * K, *S]`` temporary and adds it to an ``[N * K, *S]`` total, once per perturbation. Here each perturbation's
difference ``[N, K]`` is kept once (``[P, N, K]`` for ``P`` perturbations) and written into the positions it
perturbed at the end:

* FeatureAblation, FeaturePermutation, ShapleyValueSampling: every position belongs to one feature, so the
  attributions are one gather ``A[n, k, s] = D[feature(n, s), n, k]`` (feature masks shared by the batch
  ``[1, *S]`` or per example ``[N, *S]``);
* Occlusion: overlapping windows on a grid, so the differences are summed over the windows covering each position
  with one contraction per dimension and divided by the number of such windows (Captum's average).

Perturbations are evaluated in batches of ``perturbations_per_eval`` (default: as many as fit in
``ABLATION_BATCH_BYTES`` of perturbed source values; the results do not depend on it). The perturbed values, the
random draws (FeaturePermutation's permutations through the method's ``perm_func``, ShapleyValueSampling's orders
through its ``permutation_generator``, in Captum's order) and the arithmetic of the accounting are Captum's, so
results equal Captum's run for each unit up to the batching of the forward passes.
Calls this module does not cover (other keyword arguments, subclasses, multiple attributed tensors) return
``None`` and run in Captum.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from captum._utils.common import _expand_additional_forward_args, _format_feature_mask
from captum.attr import FeatureAblation, FeaturePermutation, Occlusion, ShapleyValues, ShapleyValueSampling
from captum.attr._utils.common import _format_and_verify_sliding_window_shapes, _format_and_verify_strides
from tqdm import tqdm

__all__ = ["ablation_attributions", "ABLATION_BATCH_BYTES"]

ABLATION_BATCH_BYTES = 4 * 2**20  # perturbed source values per forward pass by default: fastest on CPU (benchmarks)

_COMMON = {"baselines", "perturbations_per_eval", "show_progress"}
_KWARGS: dict[type, set[str]] = {
    FeatureAblation: _COMMON | {"feature_mask"},
    FeaturePermutation: {"feature_mask", "perturbations_per_eval", "show_progress"},
    Occlusion: _COMMON | {"sliding_window_shapes", "strides"},
    ShapleyValueSampling: _COMMON | {"feature_mask", "n_samples"},
    ShapleyValues: _COMMON | {"feature_mask"},
}


class _Evaluator:
    """``g`` on a batch of perturbed source values ``[P, N, *S] -> [P, N, K]`` (model inputs repeated P times)."""

    def __init__(self, function: Callable[..., torch.Tensor], a: torch.Tensor, forward_args: tuple[Any, ...],
                 batches: int, show_progress: bool) -> None:
        self.function, self.a, self.forward_args = function, a, forward_args
        self.expanded: dict[int, tuple[Any, ...]] = {}
        self.progress = tqdm(total=batches, desc="LayerPair ablation", unit="batch", disable=not show_progress)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        p, n = rows.shape[:2]
        if p not in self.expanded:
            self.expanded = {p: _expand_additional_forward_args(self.forward_args, p) if p > 1 else self.forward_args}
        out = self.function(rows.reshape(p * n, *rows.shape[2:]), *self.expanded[p])
        self.progress.update(1)
        return out.reshape(p, n, -1)


def ablation_attributions(instance: Any, function: Callable[..., torch.Tensor], a: torch.Tensor,
                          forward_args: tuple[Any, ...], kwargs: dict[str, Any],
                          show_progress: bool = False) -> torch.Tensor | None:
    """Attributions ``[N, K, *S]`` of ``instance`` (an ablation-family Captum method) for every output of
    ``function(a, *forward_args) -> [N, K]``, or ``None`` where this module does not cover the call."""
    kind = type(instance)
    if kind not in _KWARGS or not set(kwargs) <= _KWARGS[kind] or not isinstance(a, torch.Tensor) or a.dim() < 2:
        return None
    if kind is FeaturePermutation and len(a) < 2:
        return None  # Captum skips every feature of a one-example batch (with a warning)
    ppe = kwargs.get("perturbations_per_eval")
    if ppe is None:
        ppe = max(1, ABLATION_BATCH_BYTES // max(1, a[0].numel() * a.element_size() * len(a)))
    elif not isinstance(ppe, int) or ppe < 1:
        return None  # Captum's own error
    show_progress = show_progress or bool(kwargs.get("show_progress", False))
    with torch.no_grad():
        if kind is Occlusion:
            return _occlusion(a, function, forward_args, kwargs, ppe, show_progress)
        ids, values = _feature_ids(kwargs.get("feature_mask"), a, raw=kind in (ShapleyValueSampling, ShapleyValues))
        if ids is None:
            return None
        if kind in (ShapleyValueSampling, ShapleyValues):
            return _shapley(instance, a, function, forward_args, kwargs, ids, values, ppe, show_progress)
        return _ablation(instance, a, function, forward_args, kwargs, ids, values, ppe, show_progress)


def _feature_ids(feature_mask: Any, a: torch.Tensor, raw: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(ids [M, |S|], values [F])`` with ``M`` 1 (mask shared by the batch) or ``N`` (per example).

    ``raw=False``: ``values`` are the mask's distinct values (Captum's features, in its order) and ``ids`` index
    them; ``raw=True`` (ShapleyValueSampling): ``ids`` are the mask values, features ``0 .. max``.
    ``ids`` is ``None`` for a mask that does not broadcast to ``a`` (Captum reports it).
    """
    masks = _format_feature_mask(feature_mask, (a,))
    mask = masks[0] if len(masks) == 1 else None
    if not isinstance(mask, torch.Tensor) or mask.dim() > a.dim() or mask.is_floating_point():
        return None, a.new_empty(0)
    mask = mask.reshape((1,) * (a.dim() - mask.dim()) + tuple(mask.shape)).to(a.device)
    try:
        torch.broadcast_shapes(mask.shape, a.shape)
    except RuntimeError:
        return None, a.new_empty(0)
    mask = mask.expand(mask.shape[0], *a.shape[1:]).reshape(mask.shape[0], -1)
    if raw:
        if mask.numel() == 0 or mask.min() < 0:
            return None, a.new_empty(0)
        return mask.long(), torch.arange(int(mask.max()) + 1, device=a.device)
    values, ids = torch.unique(mask, sorted=True, return_inverse=True)
    return ids, values


def _baseline(baselines: Any, a: torch.Tensor) -> torch.Tensor | float:
    if baselines is None:
        return 0.0
    if isinstance(baselines, tuple):
        (baselines,) = baselines
    if isinstance(baselines, torch.Tensor):
        return baselines.to(device=a.device, dtype=a.dtype)
    return float(baselines)


def _gather(D: torch.Tensor, ids: torch.Tensor, source_shape: torch.Size) -> torch.Tensor:
    """``A[n, k, s] = D[ids[n or 0, s], n, k]`` for ``D [F, N, K]``: ``[N, K, *S]``."""
    F, N, K = D.shape
    index = ids[:, None, :].expand(N, K, ids.shape[1])
    return torch.gather(D.permute(1, 2, 0).contiguous(), 2, index).reshape(N, K, *source_shape)


def _ablation(instance: Any, a: torch.Tensor, function: Callable[..., torch.Tensor], forward_args: tuple[Any, ...],
              kwargs: dict[str, Any], ids: torch.Tensor, values: torch.Tensor, ppe: int,
              show_progress: bool) -> torch.Tensor:
    """FeatureAblation (features set to the baseline) and FeaturePermutation (features permuted in the batch)."""
    S = a.shape[1:]
    F = len(values)
    evaluate = _Evaluator(function, a, forward_args, 1 + math.ceil(F / ppe), show_progress)
    base = evaluate(a[None])[0]  # [N, K]
    D = base.new_empty(F, *base.shape)
    if isinstance(instance, FeaturePermutation):
        (mask,) = _format_feature_mask(kwargs.get("feature_mask"), (a,))
        mask = mask.to(a.device)
    else:
        baseline = _baseline(kwargs.get("baselines"), a)
    for f0 in range(0, F, ppe):
        f1 = min(F, f0 + ppe)
        if isinstance(instance, FeaturePermutation):
            # Captum's perm_func, feature by feature in Captum's order: the same permutations from the same draws
            rows = torch.stack([_permuted(instance, a, mask == values[f]) for f in range(f0, f1)])
        else:
            chosen = ids[None] == torch.arange(f0, f1, device=a.device)[:, None, None]  # [p, M, |S|]
            rows = torch.where(chosen.reshape(f1 - f0, -1, *S), baseline, a)
        D[f0:f1] = base - evaluate(rows)
    evaluate.progress.close()
    return _gather(D, ids, S)


def _permuted(instance: Any, a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.dim() == 0:
        mask = mask.reshape((1,) * a.dim())
    return instance.perm_func(a, mask.bool())


def _shapley(instance: Any, a: torch.Tensor, function: Callable[..., torch.Tensor], forward_args: tuple[Any, ...],
             kwargs: dict[str, Any], ids: torch.Tensor, features: torch.Tensor, ppe: int,
             show_progress: bool) -> torch.Tensor:
    """ShapleyValueSampling / ShapleyValues: features added to the baseline in random (or all) orders."""
    S = a.shape[1:]
    F = len(features)
    baseline = _baseline(kwargs.get("baselines"), a)
    baseline = torch.broadcast_to(torch.as_tensor(baseline, dtype=a.dtype, device=a.device), a.shape)
    orders = [torch.as_tensor(list(p), dtype=torch.long, device=a.device)
              for p in instance.permutation_generator(F, kwargs.get("n_samples", 25))]
    if (torch.bincount(ids.flatten(), minlength=F) == 0).any():
        warnings.warn("Feature mask is missing some integers between 0 and num_features, for optimal performance, "
                      "make sure each consecutive integer corresponds to a feature.", stacklevel=2)
    ranks = torch.empty(len(orders), F, dtype=torch.long, device=a.device)
    for s, order in enumerate(orders):
        ranks[s, order] = torch.arange(F, device=a.device)
    steps = torch.cartesian_prod(torch.arange(len(orders)), torch.arange(F)).to(a.device)  # (sample, step)
    evaluate = _Evaluator(function, a, forward_args, 1 + math.ceil(len(steps) / ppe), show_progress)
    initial = evaluate(baseline[None])[0]  # [N, K]
    evals = initial.new_empty(len(orders), F, *initial.shape)
    for t0 in range(0, len(steps), ppe):
        sample, step = steps[t0:t0 + ppe].unbind(1)
        present = ranks[sample][:, ids] <= step[:, None, None]  # [p, M, |S|]: features added so far
        rows = torch.where(present.reshape(len(sample), -1, *S), a, baseline)
        evals[sample, step] = evaluate(rows)
    evaluate.progress.close()
    totals = torch.zeros(F, *initial.shape, dtype=torch.float, device=a.device)  # Captum accumulates in float32
    for s, order in enumerate(orders):
        previous = torch.cat([initial[None], evals[s, :-1]])
        totals.index_add_(0, order, (evals[s] - previous).to(totals.dtype))
    return _gather(totals, ids, S) / len(orders)


def _occlusion(a: torch.Tensor, function: Callable[..., torch.Tensor], forward_args: tuple[Any, ...],
               kwargs: dict[str, Any], ppe: int, show_progress: bool) -> torch.Tensor | None:
    """Occlusion: windows on a grid set to the baseline; each position averages the windows that cover it."""
    N, S = len(a), a.shape[1:]
    if "sliding_window_shapes" not in kwargs:
        return None
    try:
        (strides,) = _format_and_verify_strides(kwargs.get("strides", 1), (a,))
        (window,) = _format_and_verify_sliding_window_shapes(kwargs["sliding_window_shapes"], (a,))
    except (AssertionError, TypeError):
        return None
    strides = strides if isinstance(strides, tuple) else (strides,) * len(S)
    covers = []  # per dimension: [n_d windows, dim_d], window j covers [j * stride, j * stride + size)
    for size, stride, dim in zip(window, strides, S):
        if size > dim or (stride > size and size != dim):
            return None  # Captum's assertion
        count = math.ceil((dim - size) / stride) + 1
        start = torch.arange(count, device=a.device)[:, None] * stride
        position = torch.arange(dim, device=a.device)[None, :]
        covers.append((position >= start) & (position < start + size))
    counts = [c.shape[0] for c in covers]
    F = math.prod(counts)
    baseline = _baseline(kwargs.get("baselines"), a)
    evaluate = _Evaluator(function, a, forward_args, 1 + math.ceil(F / ppe), show_progress)
    base = evaluate(a[None])[0]
    D = base.new_empty(F, *base.shape)
    for f0 in range(0, F, ppe):
        f = torch.arange(f0, min(F, f0 + ppe), device=a.device)
        chosen = torch.ones(len(f), *S, dtype=torch.bool, device=a.device)
        for d, cover in enumerate(covers):  # Captum's numbering: the first dimension's window index runs fastest
            j = (f // math.prod(counts[:d])) % counts[d]
            chosen &= cover[j].reshape(len(f), *[-1 if e == d else 1 for e in range(len(S))])
        D[f0:f0 + len(f)] = base - evaluate(torch.where(chosen[:, None], baseline, a))
    evaluate.progress.close()
    total = D.reshape(*reversed(counts), -1).permute(-1, *reversed(range(len(S))))  # [N * K, n_1, ..., n_D]
    weight = torch.ones((), device=a.device)
    for cover in covers:  # sum over the windows covering each position, one dimension at a time
        total = torch.tensordot(total, cover.to(total.dtype), dims=([1], [0]))
        weight = weight[..., None] * cover.sum(0).float()
    return (total.float() / weight).reshape(N, -1, *S)
