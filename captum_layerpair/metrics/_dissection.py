"""The arithmetic of Network Dissection, kept apart from the metric protocol that streams and synchronises it.

- ``keep_top`` / ``merge_top``: the per-unit buffer of the largest activations (the threshold pass), mergeable across
  processes by concatenation (the threshold is then read off with one ``topk``).
- ``tally``: the counts of the IoU pass for one batch: intersections ``[U, C]``, unit areas ``[U, C]`` (a unit's area
  counts toward a concept only in images annotated for that concept's category, as NetDissect does, or in every
  image) and concept areas ``[C]``, all exact integers held in float64.
- ``batches``: the data plumbing of ``evaluate`` (tensors, loaders of ``(inputs, masks)`` pairs, loaders of inputs
  paired with a mask tensor) and the checks on masks.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from captum_layerpair._checks import check_positive_int

__all__ = ["UNIT_AREA_RULES", "Batches", "keep_top", "merge_top", "category_matrix", "tally", "batches",
           "check_masks", "check_maps", "check_concepts_present"]

UNIT_AREA_RULES = {
    "annotated": "a unit's area counts toward a concept only in images annotated for the concept's category "
                 "(an image holding a positive pixel of any concept of that category), as NetDissect does",
    "all": "a unit's area counts toward every concept in every image",
}
"""How the union of the IoU counts a unit's segmented area; ``"annotated"`` is NetDissect's rule."""

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor | None]]]


def keep_top(buffer: torch.Tensor, maps: torch.Tensor, capacity: int | None) -> torch.Tensor:
    """The buffer ``[U, w]`` extended with the values of ``maps [B, U, h, w]`` and cut to the ``capacity`` largest.

    ``capacity=None`` keeps every value. The columns are not sorted.
    """
    values = maps.detach().transpose(0, 1).flatten(1).float()  # [U, B * h * w]
    if buffer.numel():
        if buffer.shape[0] != values.shape[0]:
            raise ValueError(f"the maps have {values.shape[0]} units but earlier batches had {buffer.shape[0]}")
        values = torch.cat([buffer.to(values.device), values], dim=1)
    if capacity is None or values.shape[1] <= capacity:
        return values
    return values.topk(capacity, dim=1, sorted=False).values


def merge_top(stacked: torch.Tensor) -> torch.Tensor:
    """Buffers of several processes ``[R, U, w]`` (padded with ``-inf``) as one buffer ``[U, R * w]``."""
    return stacked.transpose(0, 1).flatten(1)


def category_matrix(categories: Sequence[Hashable] | None, n_concepts: int) -> torch.Tensor:
    """``[C, K]`` one-hot map of each concept to its category (one category holding every concept for ``None``)."""
    if categories is None:
        return torch.ones(n_concepts, 1)
    if len(categories) != n_concepts:
        raise ValueError(f"concept_categories has {len(categories)} entries but the masks have {n_concepts} concepts")
    names = list(dict.fromkeys(categories))
    ids = torch.tensor([names.index(c) for c in categories])
    return F.one_hot(ids, len(names)).float()


def tally(maps: torch.Tensor, masks: torch.Tensor, thresholds: torch.Tensor, categories: torch.Tensor | None,
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IoU counts of one batch.

    Parameters
    ----------
    maps: ``[B, U, h, w]`` per-unit maps, upsampled bilinearly to the masks' ``H x W`` and segmented by
        ``map > threshold`` (a unit that never exceeds its threshold segments nothing).
    masks: ``[B, C, H, W]`` bool concept masks.
    thresholds: ``[U]``.
    categories: ``[C, K]`` concept-to-category one-hot matrix for NetDissect's rule, or ``None`` to count every
        unit's area in every image.

    Returns
    -------
    ``(intersection [U, C], unit_area [U, C], concept_area [C])`` in float64 (exact integer counts).
    """
    upsampled = F.interpolate(maps.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
    segmented = (upsampled > thresholds.to(maps.device)[None, :, None, None]).flatten(2).float()  # [B, U, P]
    labels = masks.to(maps.device).flatten(2).float()  # [B, C, P]
    # Per-image counts are at most P < 2^24 pixels, exact in float32; the sums over images are taken in float64.
    intersection = torch.bmm(segmented, labels.transpose(1, 2)).double().sum(0)
    areas = segmented.sum(2).double()  # [B, U]
    if categories is None:
        annotated = torch.ones(len(masks), masks.shape[1], dtype=torch.float64, device=maps.device)
    else:
        present = labels.amax(2) @ categories.to(maps.device)  # [B, K]: positive pixels of the category's concepts
        annotated = (present > 0).double() @ categories.to(maps.device, torch.float64).T  # [B, C]
    return intersection, areas.T @ annotated, labels.sum(2).double().sum(0)


def check_maps(maps: Any, requirement: str) -> torch.Tensor:
    """``maps`` if it is one tensor ``[N, units, h, w]``; else ``ValueError("<requirement> one tensor ...")``."""
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4:
        got = f"shape {tuple(maps.shape)}" if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"{requirement} one tensor [N, units, h, w] to be dissected; got {got}")
    return maps.detach()


def check_masks(masks: Any, maps: torch.Tensor) -> torch.Tensor:
    """Check one batch of masks ``[B, C, H, W]`` against maps ``[B, U, h, w]``; return them as bool."""
    if not isinstance(masks, torch.Tensor) or masks.dim() != 4:
        got = f"shape {tuple(masks.shape)}" if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"concept masks must be tensors [N, C, H, W]; got {got}")
    if len(masks) != len(maps):
        raise ValueError(f"a batch has {len(maps)} samples but {len(masks)} concept masks; the masks must match the "
                         "data sample for sample")
    (height, width), (h, w) = masks.shape[-2:], maps.shape[-2:]
    if height < h or width < w or abs(height / h - width / w) > 0.1 * max(height / h, width / w):
        raise ValueError(f"concept masks of spatial size {height}x{width} cannot be matched to maps of size {h}x{w}: "
                         "maps are upsampled to the masks' size, so the masks must be at least as large, with the "
                         "same aspect ratio (within 10%)")
    if masks.dtype != torch.bool:
        if not torch.isin(masks, torch.tensor([0, 1], dtype=masks.dtype, device=masks.device)).all():
            raise ValueError(f"concept masks must be binary (bool or 0/1), got values in "
                             f"[{float(masks.min()):g}, {float(masks.max()):g}]")
        masks = masks != 0
    return masks


def check_concepts_present(concept_area: torch.Tensor) -> None:
    empty = torch.nonzero(concept_area == 0).flatten().tolist()
    if empty:
        raise ValueError(f"concepts {empty} have no positive pixel anywhere in the dataset; IoU is undefined for "
                         "them, so drop them from concept_masks")


def batches(data: Any, concept_masks: torch.Tensor | None, batch_size: int) -> tuple[Batches, int]:
    """``data`` (and ``concept_masks``) as a re-callable stream of ``(inputs, masks)`` and this process's count.

    The count is the number of samples the stream yields (the dataset's length for a loader, which may
    overestimate it; the sampler's length for a ``DistributedSampler``, which must not pad).
    """
    check_positive_int("batch_size", batch_size)
    if concept_masks is not None:
        if not isinstance(concept_masks, torch.Tensor) or concept_masks.dim() != 4:
            got = f"shape {tuple(concept_masks.shape)}" if isinstance(concept_masks, torch.Tensor) else type(
                concept_masks).__name__
            raise ValueError(f"concept_masks must be a tensor [N, C, H, W]; got {got}")
        if not dist.is_available() or not dist.is_initialized():  # a rank's shard may lack a concept
            check_concepts_present(concept_masks.flatten(2).any(2).any(0).double())
    if isinstance(data, torch.Tensor):
        if concept_masks is None:
            raise ValueError("concept_masks [N, C, H, W] is required when data is a tensor")
        if len(data) != len(concept_masks):
            raise ValueError(f"data has {len(data)} samples but concept_masks has {len(concept_masks)}")
        starts = range(0, len(data), batch_size)
        return lambda: ((data[s:s + batch_size], concept_masks[s:s + batch_size]) for s in starts), len(data)
    if not isinstance(data, Iterable) or isinstance(data, Iterator):
        raise TypeError(f"data must be a tensor or a re-iterable of batches (a DataLoader, a list), got "
                        f"{type(data).__name__}; the dissection passes over the data twice")
    _check_no_padding(data)
    if concept_masks is not None:
        def paired() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            start = 0
            for batch in data:
                inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
                yield inputs, concept_masks[start:start + len(inputs)]
                start += len(inputs)
            if start != len(concept_masks):
                raise ValueError(f"the data yielded {start} samples but concept_masks has {len(concept_masks)}")
        return paired, len(concept_masks)

    def pairs() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in data:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError("without concept_masks, each batch must be an (inputs, masks) pair; got "
                                 f"{type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(
                                     batch, (tuple, list)) else ""))
            yield batch[0], batch[1]
    sampler = getattr(data, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        return pairs, len(sampler)
    try:
        return pairs, len(data.dataset)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return pairs, sum(len(inputs) for inputs, _ in pairs())


def _check_no_padding(data: Any) -> None:
    """Refuse a ``DistributedSampler`` that repeats samples to even out the ranks (they would count twice)."""
    sampler = getattr(data, "sampler", None)
    if isinstance(sampler, DistributedSampler) and sampler.total_size > len(sampler.dataset):  # type: ignore[arg-type]
        extra = sampler.total_size - len(sampler.dataset)  # type: ignore[arg-type]
        raise ValueError(f"the DistributedSampler pads {len(sampler.dataset)} samples to {sampler.total_size} "  # type: ignore[arg-type]
                         f"by repeating {extra}, which the dissection would count twice; use a dataset size "
                         "divisible by the world size or a sampler that does not pad (drop_last=True drops samples)")
