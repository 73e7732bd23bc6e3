"""A model with a known answer for the disentanglement score: units that see disjoint image regions by construction.

``RegionEncoder`` splits the image into a ``grid x grid`` array of regions (row-major: top-left, top-right, ...,
the order of ``datasets.BLOB_FACTORS`` for ``grid=2``) and gives embedding unit ``k`` access to the features of
region ``k`` only. Its trunk (a 3x3 convolution, then a 1x1 convolution and region-aligned average pooling) never
mixes positions after ``conv1``, so the gradient of unit ``k`` with respect to the input of ``conv2`` is exactly zero
outside region ``k``: every layer-pair attribution of the form gradient x value (or gradient only) at that layer
puts all of unit ``k``'s map inside its own region. With ``masked=False`` the same architecture is unconstrained
(every unit sees every region), for comparison with what training alone produces.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captum_layerpair._checks import check_positive_int
from captum_layerpair._random import seeded

__all__ = ["MaskedLinear", "RegionEncoder", "region_masks"]


def region_masks(grid: int, size: int) -> torch.Tensor:
    """``[grid**2, size, size]`` bool: the ``grid x grid`` regions of a ``size x size`` map, row-major.

    ``size`` must be divisible by ``grid``.
    """
    check_positive_int("grid", grid)
    check_positive_int("size", size)
    if size % grid:
        raise ValueError(f"size {size} is not divisible by grid {grid}: regions would not tile the map")
    cell = size // grid
    masks = torch.zeros(grid * grid, size, size, dtype=torch.bool)
    for k in range(grid * grid):
        row, col = divmod(k, grid)
        masks[k, row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = True
    return masks


class MaskedLinear(nn.Linear):
    """``y = x (W * mask)^T + b`` with a fixed boolean ``mask [out_features, in_features]`` (a buffer).

    Masked weights receive zero gradient, so training keeps the connectivity.
    """

    def __init__(self, mask: torch.Tensor, bias: bool = True) -> None:
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class RegionEncoder(nn.Module):
    """``[N, C, S, S] -> [N, grid**2]``: unit ``k`` reads region ``k`` only (``masked=True``).

    Layers: ``conv1`` (3x3, padding 1), ``act1``, ``conv2`` (1x1), ``act2``, ``pool`` (average, ``pool x pool``),
    ``flatten``, ``embed`` (a ``MaskedLinear``; all-ones mask when ``masked=False``). ``image_size`` must be
    divisible by ``pool * grid`` so that pooling cells never straddle two regions.

    Parameters
    ----------
    in_channels, channels: input channels and the widths of ``conv1`` and ``conv2``.
    image_size: side ``S`` of the input.
    grid: regions per side; the embedding has ``K = grid**2`` units.
    pool: side of the average-pooling cells.
    masked: restrict unit ``k`` to region ``k`` (the disentangled-by-construction oracle).
    seed: seed of the initialisation (global random states are restored afterwards).
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, int] = (8, 16), image_size: int = 16,
                 grid: int = 2, pool: int = 2, masked: bool = True, seed: int | None = 0) -> None:
        super().__init__()
        check_positive_int("pool", pool)
        if image_size % (pool * grid):
            raise ValueError(f"image_size {image_size} must be divisible by pool * grid = {pool * grid}")
        side = image_size // pool
        regions = region_masks(grid, side)  # [K, side, side]
        mask = regions[:, None].expand(-1, channels[1], -1, -1).flatten(1)  # [K, channels[1] * side * side]
        if not masked:
            mask = torch.ones_like(mask)
        with seeded(seed):
            self.conv1 = nn.Conv2d(in_channels, channels[0], 3, padding=1)
            self.act1 = nn.ReLU()
            self.conv2 = nn.Conv2d(channels[0], channels[1], 1)
            self.act2 = nn.ReLU()
            self.pool = nn.AvgPool2d(pool)
            self.flatten = nn.Flatten()
            self.embed = MaskedLinear(mask)
        self.grid = grid
        self.masked = masked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.embed(self.flatten(self.pool(x)))
