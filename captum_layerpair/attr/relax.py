"""RELAX: label-free explanation of a representation by random masking (Wickstrom et al., IJCV 2023).

For an input ``x`` with representation ``h = f(x)`` and random smooth masks ``M_i``, RELAX scores each mask by
``s_i = sim(h, f(x * M_i))`` and reports, per pixel,

- importance ``R = sum_i s_i M_i / sum_i M_i`` (the mask-weighted mean similarity) and
- uncertainty ``sum_i M_i (s_i - R)^2``, divided by ``sum_i M_i`` (``uncertainty_scale="variance"``, the default:
  the weighted variance, which does not grow with the number of masks) or not (``"sum_of_squares"``: the scale
  the official code reports, from its running estimator);
- U-RELAX (:func:`u_relax`): the importance where the uncertainty is at most its median over the image, 0 elsewhere.

Masks are built as in the official code (``relax_xai.masking_functions.mask_generator``): a Bernoulli grid of
``n_cells x n_cells`` cells, upsampled bilinearly straight to ``H x W``, reflect-padded by ``n_cells // 2`` pixels
on each side and cropped back to ``H x W`` at a random offset of ``0 .. n_cells - 1`` pixels per axis.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.common import _expand_additional_forward_args, _format_additional_forward_args
from captum.attr._utils.attribution import PerturbationAttribution
from tqdm import tqdm

from captum_layerpair._checks import check_choice, check_positive_int
from captum_layerpair._random import derive_seed

__all__ = ["RELAX", "RELAX_SIMILARITIES", "UNCERTAINTY_SCALES", "relax_masks", "u_relax"]

Similarity = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

RELAX_SIMILARITIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": lambda h, h_masked: F.cosine_similarity(h, h_masked, dim=1),
    "dot": lambda h, h_masked: (h * h_masked).sum(dim=1),
}
"""Similarities of two ``[M, D]`` batches of representations, one score per row (``"cosine"``: the paper's)."""

UNCERTAINTY_SCALES = {
    "variance": "sum_i M_i (s_i - R)^2 / sum_i M_i: the mask-weighted variance of the similarities",
    "sum_of_squares": "sum_i M_i (s_i - R)^2: the official code's scale (grows with the number of masks)",
}
"""How the uncertainty map is scaled; see the module docstring."""


def relax_masks(
    n_masks: int, size: tuple[int, int], n_cells: int = 7, p_keep: float = 0.5,
    generator: torch.Generator | None = None, seed: int | None = None,
) -> torch.Tensor:
    """Draw RELAX masks as the official code does (see the module docstring).

    Parameters
    ----------
    n_masks: number of masks.
    size: ``(H, W)`` of the masks; both larger than ``n_cells // 2`` (the reflect padding).
    n_cells: cells per side of the Bernoulli grid.
    p_keep: probability that a cell is kept (1) rather than dropped (0).
    generator: CPU random generator (the masks are drawn on the CPU, in float32 whatever
        ``torch.get_default_dtype()`` is).
    seed: alternatively, the seed: ``relax_masks(..., seed=s)`` gives the masks of ``RELAX.attribute(..., seed=s)``.

    Returns
    -------
    ``[n_masks, H, W]`` float32 masks with values in ``[0, 1]``, on the CPU.
    """
    _check_mask_arguments(n_masks, size, n_cells, p_keep)
    if seed is not None:
        generator = _mask_generator(seed)
    return _upsample_masks(*_draw_grids(n_masks, n_cells, p_keep, generator), size)


def u_relax(importance: torch.Tensor, uncertainty: torch.Tensor) -> torch.Tensor:
    """U-RELAX: the importance where the uncertainty is at most its median over the image, 0 elsewhere.

    Parameters
    ----------
    importance, uncertainty: ``[N, H, W]`` maps from ``RELAX.attribute(..., return_uncertainty=True)``. The official
        code applies the rule to its ``"sum_of_squares"`` uncertainty; the median is per image (the lower of the
        two middle values for an even pixel count, as ``torch.median``).

    Returns
    -------
    ``[N, H, W]``.
    """
    if importance.shape != uncertainty.shape or importance.dim() != 3:
        raise ValueError(f"u_relax needs importance and uncertainty maps of one shape [N, H, W]; got "
                         f"{tuple(importance.shape)} and {tuple(uncertainty.shape)}")
    median = uncertainty.flatten(1).median(dim=1).values[:, None, None]
    return importance * (uncertainty <= median)


def _mask_generator(seed: int) -> torch.Generator:
    """The private generator of the masks of ``RELAX.attribute(seed=seed)``; the global RNG is not touched."""
    return torch.Generator().manual_seed(derive_seed(seed, "RELAX masks"))


def _draw_grids(n_masks: int, n_cells: int, p_keep: float, generator: torch.Generator | None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of the masks, in the official code's order: Bernoulli grids ``[n_masks, n_cells, n_cells]``,
    then the row shifts, then the column shifts (``[n_masks, 2]``, each in ``0 .. n_cells - 1``)."""
    grids = (torch.rand(n_masks, n_cells, n_cells, generator=generator, dtype=torch.float32) < p_keep).float()
    rows = torch.randint(0, n_cells, (n_masks,), generator=generator)
    cols = torch.randint(0, n_cells, (n_masks,), generator=generator)
    return grids, torch.stack([rows, cols], dim=1)


def _upsample_masks(grids: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks ``[M, H, W]`` from grids ``[M, n_cells, n_cells]`` and shifts ``[M, 2]``: bilinear upsampling to
    ``H x W``, reflect padding by ``n_cells // 2`` pixels, crop at the shift."""
    n_masks, n_cells = grids.shape[:2]
    pad = n_cells // 2
    upsampled = F.interpolate(grids[:, None], size=size, mode="bilinear", align_corners=False)
    padded = F.pad(upsampled, (pad, pad, pad, pad), mode="reflect")[:, 0]
    rows = (shifts[:, 0, None] + torch.arange(size[0]))[:, :, None]  # [M, H, 1]
    cols = (shifts[:, 1, None] + torch.arange(size[1]))[:, None, :]  # [M, 1, W]
    return padded[torch.arange(n_masks)[:, None, None], rows, cols]


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
        uncertainty_scale: str = "variance",
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Compute RELAX importance (and uncertainty) maps.

        Parameters
        ----------
        inputs:
            Images ``[N, C, H, W]``, with ``H, W > n_cells // 2``.
        n_masks:
            Number of random masks (the paper uses 3000). All inputs share the same masks.
        n_cells:
            Cells per side of each mask's Bernoulli grid (the official default 7; see :func:`relax_masks`).
        p_keep:
            Probability that a grid cell is kept, in ``(0, 1]`` (the official default 0.5).
        similarity:
            ``"cosine"`` (the paper's choice), ``"dot"``, or a callable ``sim(h, h_masked) -> [M]`` taking two
            ``[M, D]`` batches of representations.
        mask_batch_size:
            Masks evaluated per forward pass; each forward pass sees ``N * mask_batch_size`` masked images
            (on a CPU, a few hundred images per pass is usually fastest). It does not change the result.
        return_uncertainty:
            Also return the uncertainty map.
        seed:
            Seed of the mask draws (a private ``torch.Generator``; the global RNG is not touched). The masks are
            those of ``relax_masks(n_masks, (H, W), n_cells, p_keep, seed=seed)``.
        show_progress:
            Show a progress bar over mask batches.
        additional_forward_args:
            Extra arguments passed to the encoder after the images (tensors with a batch dimension are
            expanded with the masked batch, as in Captum).
        uncertainty_scale:
            ``"variance"`` (default): ``sum_i M_i (s_i - R)^2 / sum_i M_i``, comparable across ``n_masks``;
            ``"sum_of_squares"``: ``sum_i M_i (s_i - R)^2``, the scale the official code reports.

        Returns
        -------
        importance:
            ``[N, H, W]``, the mask-weighted mean similarity; it lies between the smallest and largest ``s_i``.
            Pixels that no mask kept get 0.
        uncertainty:
            ``[N, H, W]``, non-negative, scaled as ``uncertainty_scale`` says; only with
            ``return_uncertainty=True``, as ``(importance, uncertainty)``. ``u_relax(importance, uncertainty)``
            gives U-RELAX.
        """
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
            got = f"shape {tuple(inputs.shape)}" if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(f"RELAX needs images as one tensor [N, C, H, W]; got {got}")
        n, _, height, width = inputs.shape
        _check_mask_arguments(n_masks, (height, width), n_cells, p_keep)
        check_positive_int("mask_batch_size", mask_batch_size)
        sim = check_choice("similarity", similarity, RELAX_SIMILARITIES, allow_callable=True,
                           callable_hint="a callable sim(h, h_masked) -> [M] on two [M, D] batches")
        check_choice("uncertainty_scale", uncertainty_scale, UNCERTAINTY_SCALES)
        args = _format_additional_forward_args(additional_forward_args)
        # Moment sums over masks, per pixel: sum M, and per sample sum M s and sum M s^2 (float64, on the CPU).
        weight = torch.zeros(height * width, dtype=torch.float64)
        first = torch.zeros(n, height * width, dtype=torch.float64)
        second = torch.zeros(n, height * width, dtype=torch.float64)
        grids, shifts = _draw_grids(n_masks, n_cells, p_keep, _mask_generator(seed))
        with torch.no_grad():
            reference = self._encode(inputs, args)
            starts = range(0, n_masks, mask_batch_size)
            for start in tqdm(starts, desc="RELAX", unit="mask batch", disable=not show_progress):
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
        # sum_i M_i (s_i - R)^2 = sum M s^2 - R sum M s, since R sum M = sum M s.
        squares = torch.where(covered, second - importance * first, torch.zeros_like(first)).clamp_min(0)
        uncertainty = squares / safe if uncertainty_scale == "variance" else squares
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


def _check_mask_arguments(n_masks: int, size: tuple[int, int], n_cells: int, p_keep: float) -> None:
    check_positive_int("n_masks", n_masks)
    check_positive_int("n_cells", n_cells)
    if isinstance(p_keep, bool) or not isinstance(p_keep, (int, float)) or not 0 < p_keep <= 1:
        raise ValueError(f"p_keep must be in (0, 1], got {p_keep!r}")
    if min(size) <= n_cells // 2:
        raise ValueError(f"images of size {size[0]}x{size[1]} are too small for n_cells={n_cells}: the masks are "
                         f"reflect-padded by n_cells // 2 = {n_cells // 2} pixels, which needs more pixels per side; "
                         "use fewer cells")


def _similarities(sim: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], reference: torch.Tensor,
                  encoded: torch.Tensor) -> torch.Tensor:
    scores = sim(reference, encoded)
    if not isinstance(scores, torch.Tensor) or scores.shape != (len(encoded),):
        got = f"shape {tuple(scores.shape)}" if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"the similarity must return one score per pair, shape [{len(encoded)}]; got {got}")
    return scores
