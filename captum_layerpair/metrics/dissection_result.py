"""The outcome of a Network Dissection: thresholds, IoU, the raw counts behind them, and the detectors."""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DETECTOR_IOU", "DissectionResult"]

DETECTOR_IOU = 0.04
"""The paper's IoU above which a unit counts as a detector of its best concept."""


@dataclass
class DissectionResult:
    """Outcome of a dissection of ``U`` units against ``C`` concepts.

    Attributes
    ----------
    thresholds: ``[U]`` per-unit activation thresholds ``T_k`` (top-quantile values over the dataset).
    iou: ``[U, C]`` dataset-level IoU of each unit's segmentations with each concept's masks.
    concept_names: optional names of the ``C`` concepts, used by :meth:`summary`.
    iou_threshold: best IoU from which a unit counts as a detector (the paper's 0.04).
    intersection, unit_area, concept_area: the raw float64 counts ``[U, C]``, ``[U, C]``, ``[C]`` behind ``iou``
        (``iou = intersection / (unit_area + concept_area - intersection)``); sums of these over disjoint parts of
        a dataset give the IoU of the whole.
    n_samples: number of samples counted in the IoU pass.
    """

    thresholds: torch.Tensor
    iou: torch.Tensor
    concept_names: list[str] | None = None
    iou_threshold: float = DETECTOR_IOU
    intersection: torch.Tensor | None = None
    unit_area: torch.Tensor | None = None
    concept_area: torch.Tensor | None = None
    n_samples: int | None = None

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
