"""Small reference models shared by the demo, the tests, the benchmarks and the tutorials.

None of them needs downloaded weights: they are built here and trained in seconds where training is needed.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from captum_layerpair._random import seeded

__all__ = ["BasicBlock", "SmallResNet", "SmallCNN", "LinearConvNet", "ConvEncoder", "ConvAutoencoder"]


def _seeded_init(init: Callable[..., None]) -> Callable[..., None]:
    """Run ``__init__`` with every global RNG seeded from its ``seed`` argument and restored afterwards."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        with seeded(bound.arguments["seed"]):
            init(self, *args, **kwargs)
    return wrapper


class BasicBlock(nn.Module):
    """A ResNet basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    Input ``[N, in_channels, H, W]``, output ``[N, channels, H / stride, W / stride]``. The shortcut is the
    identity, or a strided 1x1 convolution with BatchNorm where the shape changes.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem plus residual blocks, then global pooling and a linear embedding.

    This is SPEC section 7's workload W1 with the defaults: a 16-channel stem, four basic blocks
    (16, 16, 32, 32 channels; the third halves the resolution), input ``[N, 3, 32, 32]``.
    Layer names: ``stem``, ``layer1.0`` ... ``layer1.3`` (each with ``conv1``, ``bn1``, ``relu1``, ``conv2``,
    ``bn2``, ``relu2``, ``shortcut``), ``pool``, ``flatten``, ``embed`` (``[N, embed_dim]``).
    """

    @_seeded_init
    def __init__(
        self,
        in_channels: int = 3,
        widths: tuple[int, ...] = (16, 16, 32, 32),
        embed_dim: int = 8,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks, prev = [], widths[0]
        for width in widths:
            blocks.append(BasicBlock(prev, width, stride=2 if width != prev else 1))
            prev = width
        self.layer1 = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.embed = nn.Linear(prev, embed_dim)
        _randomize_batchnorm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.flatten(self.pool(self.layer1(self.stem(x)))))


class SmallCNN(nn.Module):
    """Two conv layers and a linear embedding: ``[N, C, H, W] -> [N, embed_dim]``.

    Layer names: ``conv1``, ``relu1``, ``pool1``, ``conv2``, ``relu2``, ``pool2``, ``flatten``, ``embed``.
    ``image_size`` must be divisible by 4.
    """

    @_seeded_init
    def __init__(
        self, in_channels: int = 1, channels: tuple[int, int] = (8, 16), embed_dim: int = 4, image_size: int = 8,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.embed = nn.Linear(channels[1] * (image_size // 4) ** 2, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.embed(self.flatten(x))


class LinearConvNet(nn.Module):
    """A network that is linear after its first layer: ``conv1 -> relu -> conv2 -> conv3 -> flatten -> embed``.

    Between ``relu`` (or ``conv1``) and ``embed`` every layer is linear, so the layer-pair Jacobian is the
    product of the weights: tests compare attributions with that analytic product. Input ``[N, C, H, W]``.
    """

    @_seeded_init
    def __init__(self, in_channels: int = 1, channels: int = 3, embed_dim: int = 4, image_size: int = 6,
                 seed: int | None = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv3 = nn.Conv2d(channels, channels, 1)
        self.flatten = nn.Flatten()
        self.embed = nn.Linear(channels * image_size * image_size, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.flatten(self.conv3(self.conv2(self.relu(self.conv1(x))))))


class ConvEncoder(nn.Module):
    """The paper's kind of encoder: conv blocks then a linear embedding, ``[N, C, S, S] -> [N, embed_dim]``.

    Layer names: ``conv1``, ``act1``, ``conv2``, ``act2``, ``conv3``, ``act3``, ``flatten``, ``embed``. The two
    strided convolutions halve the resolution twice, so ``image_size`` must be divisible by 4.
    """

    @_seeded_init
    def __init__(self, in_channels: int = 1, channels: tuple[int, int, int] = (8, 16, 16), embed_dim: int = 4,
                 image_size: int = 8, seed: int | None = 0) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.act3 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.embed = nn.Linear(c3 * (image_size // 4) ** 2, embed_dim)
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        x = self.act3(self.conv3(x))
        return self.embed(self.flatten(x))


class ConvAutoencoder(nn.Module):
    """``ConvEncoder`` plus a linear-then-transposed-conv decoder; ``forward`` returns the reconstruction.

    ``encoder`` maps ``[N, C, S, S] -> [N, embed_dim]``; ``decoder`` maps it back. Attribute with the encoder
    (``LayerPairAttribution(ae.encoder, "conv1", "embed", ...)``).
    """

    @_seeded_init
    def __init__(self, in_channels: int = 1, embed_dim: int = 4, image_size: int = 8, seed: int | None = 0) -> None:
        super().__init__()
        self.encoder = ConvEncoder(in_channels, embed_dim=embed_dim, image_size=image_size, seed=seed)
        side = image_size // 4
        self.decoder = nn.Sequential(
            nn.Linear(embed_dim, 16 * side * side),
            nn.ReLU(),
            nn.Unflatten(1, (16, side, side)),
            nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(8, in_channels, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _randomize_batchnorm(model: nn.Module) -> None:
    """Give BatchNorm layers non-trivial running statistics and affine parameters (seeded by the caller),
    so that an untrained model in eval mode is not just a chain of identities."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
