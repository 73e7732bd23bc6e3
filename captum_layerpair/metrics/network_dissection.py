"""Network Dissection (Bau et al., CVPR 2017): how well each unit of a layer segments each labelled concept.

For unit ``k`` the threshold ``T_k`` is the top-``q`` quantile of its activations over every spatial position of
every image in the dataset (``q = 0.005`` in the paper). Each activation map is upsampled bilinearly to the concept
masks' resolution and thresholded, ``S_k(x) >= T_k``, and compared with concept ``c``'s masks ``L_c(x)`` by the
dataset-level intersection over union ``IoU_{k,c} = sum_x |S_k(x) & L_c(x)| / sum_x |S_k(x) | L_c(x)|``.
A unit whose best IoU reaches 0.04 is a *detector* of that concept.

Both passes stream over the data: the first keeps, per unit, only the ``ceil(q * n)`` largest activations
(``n`` activations per unit in the whole dataset), which gives the exact quantile; the second accumulates
intersection and union counts. The same procedure applies to any per-unit spatial maps, e.g. channel-aggregated
layer-pair attribution maps ``[N, K, h, w]``, giving each embedding dimension a concept alignment.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.progress import progress
from torch import nn

from captum_layerpair._typing import LayerSpec
from captum_layerpair.layers import resolve_layer

__all__ = ["DETECTOR_IOU", "DissectionResult", "NetworkDissection", "dissect_maps"]

DETECTOR_IOU = 0.04
"""The paper's IoU above which a unit counts as a detector of its best concept."""

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class DissectionResult:
    """Outcome of a dissection of ``U`` units against ``C`` concepts.

    Attributes
    ----------
    thresholds: ``[U]`` per-unit activation thresholds ``T_k`` (top-quantile values over the dataset).
    iou: ``[U, C]`` dataset-level IoU of each unit's thresholded maps with each concept's masks.
    concept_names: optional names of the ``C`` concepts, used by :meth:`summary`.
    iou_threshold: best IoU from which a unit counts as a detector (the paper's 0.04).
    """

    thresholds: torch.Tensor
    iou: torch.Tensor
    concept_names: list[str] | None = None
    iou_threshold: float = DETECTOR_IOU

    @property
    def best_concept(self) -> torch.Tensor:
        """``[U]`` index of each unit's best-matching concept."""
        return self.iou.argmax(dim=1)

    @property
    def best_iou(self) -> torch.Tensor:
        """``[U]`` IoU of each unit with its best-matching concept."""
        return self.iou.amax(dim=1)

    @property
    def detectors(self) -> torch.Tensor:
        """``[n_detectors]`` indices of the units whose best IoU is at least ``iou_threshold``."""
        return torch.nonzero(self.best_iou >= self.iou_threshold).flatten()

    def summary(self, top: int = 5) -> str:
        """A few lines: the number of detectors and the ``top`` units by best IoU."""
        names = self.concept_names or [f"concept {c}" for c in range(self.iou.shape[1])]
        header = (f"{len(self.detectors)} of {self.iou.shape[0]} units are detectors "
                  f"(best IoU >= {self.iou_threshold:g})")
        lines = [header]
        for unit in self.best_iou.argsort(descending=True)[:top].tolist():
            concept, iou = names[int(self.best_concept[unit])], float(self.best_iou[unit])
            lines.append(f"  unit {unit}: {concept} (IoU {iou:.3f})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class NetworkDissection:
    """Network Dissection of one layer of a model (Bau et al., CVPR 2017).

    Parameters
    ----------
    model:
        The network; it is run under ``torch.no_grad()`` in its current train/eval mode, which is not changed.
    layer:
        The dissected layer, an ``nn.Module`` of ``model`` or its dotted name (``model.get_submodule``). Its
        output must be one tensor ``[N, units, h, w]``, produced once per forward pass.
    top_quantile:
        ``q`` in ``(0, 1)``: each unit's threshold leaves the fraction ``q`` of its activations above it.

    Notes
    -----
    The threshold pass keeps ``units x ceil(q * N * h * w)`` values (float32), not all activations: about 55 MB
    for AlexNet's conv5 (256 units, 13x13) on the 63k Broden images at ``q = 0.005``.
    """

    def __init__(self, model: nn.Module, layer: LayerSpec, top_quantile: float = 0.005) -> None:
        _check_quantile(top_quantile)
        self.model = model
        resolved = resolve_layer(model, layer, "dissected")
        self.layer_name, self.layer = resolved.name, resolved.module
        self.top_quantile = top_quantile

    def evaluate(
        self, data: Any, concept_masks: torch.Tensor | None = None, batch_size: int = 64,
        concept_names: list[str] | None = None, show_progress: bool = False,
    ) -> DissectionResult:
        """Dissect the layer on a dataset.

        Parameters
        ----------
        data:
            Model inputs ``[N, *input_shape]``; or a re-iterable of batches (a ``DataLoader``, a list) that yield
            ``(inputs, masks)`` pairs when ``concept_masks`` is None, else inputs (or tuples whose first item
            is the input, as a ``TensorDataset`` gives) in the order of ``concept_masks`` (do not shuffle).
        concept_masks:
            ``[N, C, H, W]`` binary masks of ``C`` concepts, with ``H, W`` at least the layer's spatial size and
            the same aspect ratio (activation maps are upsampled to ``H x W``). Every concept needs a positive
            pixel somewhere in the dataset.
        batch_size:
            Batch size for tensor ``data``.
        concept_names:
            Optional names of the concepts, for :meth:`DissectionResult.summary`.
        show_progress:
            Show progress bars for the two passes.

        Returns
        -------
        DissectionResult with ``thresholds [units]`` and ``iou [units, C]``.
        """
        batches, n_samples = _batches(data, concept_masks, batch_size)
        device = next((p.device for p in self.model.parameters()), None)
        with _captured_output(self.layer) as outputs, torch.no_grad():
            def activation_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
                for inputs, masks in batches():
                    outputs.clear()
                    self.model(inputs if device is None else inputs.to(device))
                    yield _layer_output(outputs, self.layer_name), masks

            return _dissect(activation_batches, n_samples, self.top_quantile, concept_names, show_progress)

    def evaluate_maps(
        self, maps: torch.Tensor, concept_masks: torch.Tensor, batch_size: int = 64,
        concept_names: list[str] | None = None, show_progress: bool = False,
    ) -> DissectionResult:
        """Dissect precomputed per-unit maps with this dissection's ``top_quantile``; see :func:`dissect_maps`."""
        return dissect_maps(maps, concept_masks, self.top_quantile, batch_size, concept_names, show_progress)


def dissect_maps(
    maps: torch.Tensor, concept_masks: torch.Tensor, top_quantile: float = 0.005, batch_size: int = 64,
    concept_names: list[str] | None = None, show_progress: bool = False,
) -> DissectionResult:
    """Dissect precomputed per-unit spatial maps, e.g. layer-pair attribution maps per embedding dimension.

    Parameters
    ----------
    maps:
        ``[N, K, h, w]``, e.g. ``aggregate(A, over="channels")`` of a layer-pair attribution ``[N, K, C, h, w]``.
    concept_masks:
        ``[N, C, H, W]`` binary concept masks (``H, W`` at least ``h, w``, same aspect ratio).
    top_quantile, batch_size, concept_names, show_progress:
        As in :class:`NetworkDissection`.

    Returns
    -------
    DissectionResult with ``thresholds [K]`` and ``iou [K, C]``: the concept alignment of each of the K units.
    """
    _check_quantile(top_quantile)
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4:
        got = f"shape {tuple(maps.shape)}" if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a tensor [N, K, h, w]; got {got}")
    batches, n_samples = _batches(maps, concept_masks, batch_size)
    return _dissect(batches, n_samples, top_quantile, concept_names, show_progress)


def _dissect(batches: Batches, n_samples: int, top_quantile: float, concept_names: list[str] | None,
             show_progress: bool) -> DissectionResult:
    """The two passes over ``(maps [B, U, h, w], masks [B, C, H, W])`` batches."""
    quantile = _TopQuantile(top_quantile, n_samples)
    for maps, _ in progress(batches(), desc="Dissection thresholds", disable=not show_progress):
        quantile.update(maps)
    thresholds = quantile.compute()
    iou = _IoU(thresholds)
    for maps, masks in progress(batches(), desc="Dissection IoU", disable=not show_progress):
        iou.update(maps, masks)
    result = iou.compute()
    if concept_names is not None and len(concept_names) != result.shape[1]:
        raise ValueError(f"got {len(concept_names)} concept_names for {result.shape[1]} concepts")
    return DissectionResult(thresholds.cpu(), result, concept_names)


class _TopQuantile:
    """Exact per-unit ``1 - q`` quantile from streamed maps, keeping only the ``ceil(q * n)`` largest values.

    ``n = samples * h * w`` is the number of values per unit; the threshold is the ``ceil(q * n)``-th largest.
    The buffer is sized from ``n_samples``, which may overestimate the samples actually streamed.
    """

    def __init__(self, q: float, n_samples: int) -> None:
        self.q, self.n_samples = q, n_samples
        self.top: torch.Tensor | None = None  # [U, capacity], descending
        self.seen = 0
        self.positions = 0

    def update(self, maps: torch.Tensor) -> None:
        values = maps.detach().transpose(0, 1).flatten(1).float()  # [U, B * h * w]
        if self.top is None:
            self.positions = maps[0, 0].numel()
            self.capacity = self._rank(self.n_samples)
        else:
            values = torch.cat([self.top, values], dim=1)
        self.top = values.topk(min(self.capacity, values.shape[1]), dim=1).values
        self.seen += maps.shape[0]

    def compute(self) -> torch.Tensor:
        """``[U]`` thresholds."""
        if self.top is None:
            raise ValueError("the data yielded no batches")
        if self.seen > self.n_samples:
            raise ValueError(f"the data yielded {self.seen} samples but {self.n_samples} were expected (the "
                             "concept masks' or the dataset's length)")
        return self.top[:, self._rank(self.seen) - 1]

    def _rank(self, samples: int) -> int:
        return max(1, math.ceil(self.q * samples * self.positions))


class _IoU:
    """Dataset-level IoU counts of thresholded, upsampled maps against concept masks."""

    def __init__(self, thresholds: torch.Tensor) -> None:
        self.thresholds = thresholds
        self.intersection = torch.zeros(0, dtype=torch.float64)  # [U, C] once updated
        self.unit_area = torch.zeros(0, dtype=torch.float64)  # [U]
        self.concept_area = torch.zeros(0, dtype=torch.float64)  # [C]

    def update(self, maps: torch.Tensor, masks: torch.Tensor) -> None:
        masks = _check_masks(masks, maps).to(maps.device)
        upsampled = F.interpolate(maps.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
        segmented = (upsampled >= self.thresholds.to(maps.device)[None, :, None, None]).float()
        segmented, labels = segmented.transpose(0, 1).flatten(1), masks.float().transpose(0, 1).flatten(1)
        counts = ((segmented @ labels.T).double().cpu(), segmented.sum(1).double().cpu(),
                  labels.sum(1).double().cpu())
        if self.intersection.numel() == 0:
            self.intersection, self.unit_area, self.concept_area = counts
        else:
            self.intersection += counts[0]
            self.unit_area += counts[1]
            self.concept_area += counts[2]

    def compute(self) -> torch.Tensor:
        """``[U, C]`` IoU (0 where a unit's segmentation and a concept are both empty)."""
        _check_concepts_present(self.concept_area)
        union = self.unit_area[:, None] + self.concept_area[None, :] - self.intersection
        return torch.where(union > 0, self.intersection / union.clamp_min(1), torch.zeros_like(union)).float()


def _batches(data: Any, concept_masks: torch.Tensor | None, batch_size: int) -> tuple[Batches, int]:
    """Turn ``data`` (and ``concept_masks``) into a re-callable stream of ``(inputs, masks)`` and a sample count."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if concept_masks is not None:
        if not isinstance(concept_masks, torch.Tensor) or concept_masks.dim() != 4:
            got = f"shape {tuple(concept_masks.shape)}" if isinstance(concept_masks, torch.Tensor) else type(
                concept_masks).__name__
            raise ValueError(f"concept_masks must be a tensor [N, C, H, W]; got {got}")
        _check_concepts_present(concept_masks.flatten(2).any(2).any(0).double())
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
    dataset = getattr(data, "dataset", None)
    try:
        n_samples = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        n_samples = sum(len(inputs) for inputs, _ in pairs())
    return pairs, n_samples


def _check_masks(masks: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
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


def _check_concepts_present(concept_area: torch.Tensor) -> None:
    empty = torch.nonzero(concept_area == 0).flatten().tolist()
    if empty:
        raise ValueError(f"concepts {empty} have no positive pixel anywhere in the dataset; IoU is undefined for "
                         "them, so drop them from concept_masks")


def _check_quantile(top_quantile: float) -> None:
    if not 0 < top_quantile < 1:
        raise ValueError(f"top_quantile must be in (0, 1), got {top_quantile!r}")


@contextmanager
def _captured_output(layer: nn.Module) -> Iterator[list[Any]]:
    """Collect the layer's outputs in a list while the context is open; the hook is removed on exit."""
    outputs: list[Any] = []
    handle = layer.register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


def _layer_output(outputs: list[Any], name: str) -> torch.Tensor:
    if len(outputs) != 1:
        raise ValueError(f"layer {name!r} was " + ("not reached in the forward pass" if not outputs else
                                                   f"called {len(outputs)} times in one forward pass") +
                         "; dissection needs a layer that runs exactly once")
    out = outputs[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"layer {name!r} must output one tensor [N, units, h, w] to be dissected; got {got}")
    return out.detach()
