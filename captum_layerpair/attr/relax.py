"""RELAX: label-free explanation of a representation by random masking (Wickstrom et al., IJCV 2023).

For an input ``x`` with representation ``h = f(x)`` and random smooth masks ``M_i``, RELAX scores each mask by
``s_i = sim(h, f(x * M_i))`` and reports, per pixel,

- importance ``R = sum_i s_i M_i / sum_i M_i`` (the mask-weighted mean similarity) and
- uncertainty ``U = sum_i M_i (s_i - R)^2 / sum_i M_i`` (the matching weighted variance).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.common import _expand_additional_forward_args, _format_additional_forward_args
from captum._utils.progress import progress
from captum.attr._utils.attribution import PerturbationAttribution

__all__ = ["RELAX", "SIMILARITIES", "relax_masks"]

Similarity = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SIMILARITIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": lambda h, h_masked: F.cosine_similarity(h, h_masked, dim=1),
    "dot": lambda h, h_masked: (h * h_masked).sum(dim=1),
}


def relax_masks(
    n_masks: int, size: tuple[int, int], n_cells: int = 7, p_keep: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw RELAX/RISE masks: a Bernoulli grid, upsampled bilinearly to a slightly larger size, randomly cropped.

    Each mask starts as an ``n_cells x n_cells`` grid of independent Bernoulli(``p_keep``) cells, is upsampled
    bilinearly to ``(n_cells + 1)`` cells of ``ceil(H / n_cells) x ceil(W / n_cells)`` pixels and shifted by a
    uniform random offset of less than one cell before cropping ``H x W``, so cell borders fall anywhere.

    Parameters
    ----------
    n_masks: number of masks.
    size: ``(H, W)`` of the masks.
    n_cells: cells per side of the Bernoulli grid.
    p_keep: probability that a cell is kept (1) rather than dropped (0).
    generator: CPU random generator (the masks are drawn on the CPU).

    Returns
    -------
    ``[n_masks, H, W]`` float32 masks with values in ``[0, 1]``, on the CPU.
    """
    return _upsample_masks(*_draw_grids(n_masks, size, n_cells, p_keep, generator), size)


def _draw_grids(
    n_masks: int, size: tuple[int, int], n_cells: int, p_keep: float, generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of the masks: Bernoulli grids ``[n_masks, n_cells, n_cells]`` and shifts ``[n_masks, 2]``."""
    cell = _cell_size(size, n_cells)
    grids = (torch.rand(n_masks, n_cells, n_cells, generator=generator) < p_keep).float()
    shifts = torch.stack([torch.randint(0, c, (n_masks,), generator=generator) for c in cell], dim=1)
    return grids, shifts


def _upsample_masks(grids: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks ``[M, H, W]`` from grids ``[M, n_cells, n_cells]`` and shifts ``[M, 2]`` (see :func:`relax_masks`)."""
    n_masks, n_cells = grids.shape[:2]
    cell_h, cell_w = _cell_size(size, n_cells)
    upsampled = F.interpolate(grids[:, None], size=((n_cells + 1) * cell_h, (n_cells + 1) * cell_w),
                              mode="bilinear", align_corners=False)[:, 0]
    rows = (shifts[:, 0, None] + torch.arange(size[0]))[:, :, None]  # [M, H, 1]
    cols = (shifts[:, 1, None] + torch.arange(size[1]))[:, None, :]  # [M, 1, W]
    return upsampled[torch.arange(n_masks)[:, None, None], rows, cols]


def _cell_size(size: tuple[int, int], n_cells: int) -> tuple[int, int]:
    return math.ceil(size[0] / n_cells), math.ceil(size[1] / n_cells)


class RELAX(PerturbationAttribution):
    """Representation explanation by masking, with uncertainty (RELAX, Wickstrom et al., IJCV 2023).

    Explains what in an image the representation ``f(x)`` depends on, with no label: pixels whose masking
    changes the representation (low similarity ``sim(f(x), f(x * M))``) get low importance.

    Parameters
    ----------
    encoder:
        Callable (typically an ``nn.Module``) mapping ``[N, C, H, W]`` images (plus any additional forward
        arguments) to representations ``[N, D]``.
    """

    def __init__(self, encoder: Callable[..., torch.Tensor]) -> None:
        super().__init__(encoder)

    def attribute(
        self,
        inputs: torch.Tensor,
        n_masks: int = 3000,
        n_cells: int = 7,
        p_keep: float = 0.5,
        similarity: Similarity = "cosine",
        mask_batch_size: int = 100,
        return_uncertainty: bool = False,
        seed: int = 0,
        show_progress: bool = False,
        additional_forward_args: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Compute RELAX importance (and uncertainty) maps.

        Parameters
        ----------
        inputs:
            Images ``[N, C, H, W]``.
        n_masks:
            Number of random masks (the paper uses 3000). All inputs share the same masks.
        n_cells:
            Cells per side of each mask's Bernoulli grid (see :func:`relax_masks`).
        p_keep:
            Probability that a grid cell is kept, in ``(0, 1]``.
        similarity:
            ``"cosine"`` (the paper's choice), ``"dot"``, or a callable ``sim(h, h_masked) -> [M]`` taking two
            ``[M, D]`` batches of representations.
        mask_batch_size:
            Masks evaluated per forward pass; each forward pass sees ``N * mask_batch_size`` masked images
            (on a CPU, a few hundred images per pass is usually fastest).
        return_uncertainty:
            Also return the uncertainty map.
        seed:
            Seed of the mask draws (a private ``torch.Generator``; the global RNG is not touched).
        show_progress:
            Show a progress bar over mask batches.
        additional_forward_args:
            Extra arguments passed to the encoder after the images (tensors with a batch dimension are
            expanded with the masked batch, as in Captum).

        Returns
        -------
        importance:
            ``[N, H, W]``, the mask-weighted mean similarity; it lies between the smallest and largest ``s_i``.
            Pixels that no mask kept get 0.
        uncertainty:
            ``[N, H, W]``, non-negative; only with ``return_uncertainty=True``, as ``(importance, uncertainty)``.
        """
        _check_arguments(inputs, n_masks, n_cells, p_keep, mask_batch_size)
        sim = _resolve_similarity(similarity)
        args = _format_additional_forward_args(additional_forward_args)
        n, _, height, width = inputs.shape
        generator = torch.Generator().manual_seed(seed)
        # Moment sums over masks, per pixel: sum M, and per sample sum M s and sum M s^2 (float64, on the CPU).
        weight = torch.zeros(height * width, dtype=torch.float64)
        first = torch.zeros(n, height * width, dtype=torch.float64)
        second = torch.zeros(n, height * width, dtype=torch.float64)
        grids, shifts = _draw_grids(n_masks, (height, width), n_cells, p_keep, generator)
        with torch.no_grad():
            reference = self._encode(inputs, args)
            for start in progress(range(0, n_masks, mask_batch_size), desc="RELAX", disable=not show_progress):
                stop = min(start + mask_batch_size, n_masks)
                batch = stop - start
                masks = _upsample_masks(grids[start:stop], shifts[start:stop], (height, width))
                masked = masks.to(device=inputs.device, dtype=inputs.dtype)[:, None, None] * inputs[None]
                encoded = self._encode(masked.flatten(0, 1), _expand_additional_forward_args(args, batch))
                scores = _similarities(sim, reference.repeat(batch, 1), encoded).view(batch, n).double().cpu()
                flat = masks.flatten(1).double()  # [batch, H * W]
                weight += flat.sum(0)
                first += scores.T @ flat
                second += scores.square().T @ flat
        covered = weight > 0
        safe = torch.where(covered, weight, torch.ones_like(weight))
        importance = torch.where(covered, first / safe, torch.zeros_like(first))
        uncertainty = torch.where(covered, second / safe - importance.square(), torch.zeros_like(first)).clamp_min(0)
        importance, uncertainty = (t.view(n, height, width).to(device=inputs.device, dtype=inputs.dtype)
                                   for t in (importance, uncertainty))
        return (importance, uncertainty) if return_uncertainty else importance

    def _encode(self, images: torch.Tensor, args: tuple | None) -> torch.Tensor:
        """Run the encoder and check that it returns ``[len(images), D]``."""
        out = self.forward_func(images, *(args or ()))
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != images.shape[0]:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"RELAX needs an encoder returning a 2-D representation [N, D] = [{images.shape[0]}, D]; "
                             f"it returned {got}. Flatten or pool the output (e.g. wrap the encoder).")
        return out


def _check_arguments(inputs: Any, n_masks: int, n_cells: int, p_keep: float, mask_batch_size: int) -> None:
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        got = f"shape {tuple(inputs.shape)}" if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"RELAX needs images as one tensor [N, C, H, W]; got {got}")
    for name, value in (("n_masks", n_masks), ("n_cells", n_cells), ("mask_batch_size", mask_batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not 0 < p_keep <= 1:
        raise ValueError(f"p_keep must be in (0, 1], got {p_keep!r}")


def _resolve_similarity(similarity: Similarity) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if callable(similarity):
        return similarity
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; allowed: {sorted(SIMILARITIES)} or a callable "
                         "sim(h, h_masked) -> [M] on two [M, D] batches")
    return SIMILARITIES[similarity]


def _similarities(sim: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], reference: torch.Tensor,
                  encoded: torch.Tensor) -> torch.Tensor:
    scores = sim(reference, encoded)
    if not isinstance(scores, torch.Tensor) or scores.shape != (len(encoded),):
        got = f"shape {tuple(scores.shape)}" if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"the similarity must return one score per pair, shape [{len(encoded)}]; got {got}")
    return scores
