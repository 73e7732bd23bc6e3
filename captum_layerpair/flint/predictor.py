"""A small reference predictor for FLINT on small images, and its plain training (the BASE-f baseline).

``SmallLeNet`` is the authors' MNIST network ``Net2_MNIST_old`` (conv 1->16, ReLU, conv 16->32, MaxPool 2, Dropout,
ReLU, fc -> 128, ReLU, Dropout, fc -> C) scaled to small inputs (8x8 digits, 16x16 blobs): the fully connected
width is ``hidden`` (64 here) and BatchNorm can be added after each conv (to test post-hoc freezing). FLINT reads
its ``features`` block (the last conv block after pooling), as the authors do on MNIST.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captum_layerpair._checks import check_positive_int, check_probability
from captum_layerpair._random import seeded
from captum_layerpair.flint._data import Data, batches, parameter_device

__all__ = ["SmallLeNet", "fit_predictor"]


class SmallLeNet(nn.Module):
    """``features`` (conv-conv-pool block, ``[N, 32, S/2, S/2]``) then ``classifier`` (logits ``[N, C]``).

    Parameters
    ----------
    n_classes, in_channels, image_size:
        C, input channels, input side S (even).
    hidden:
        Width of the hidden fully connected layer (authors: 128 on 28x28).
    dropout:
        Dropout rate after pooling and in the classifier (the authors' ``nn.Dropout()``: 0.5; 0 removes it).
    batch_norm:
        Add BatchNorm after each conv.
    seed:
        Seeds the initialisation (the caller's RNG states are restored); ``None`` uses the caller's RNG.
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 1, image_size: int = 8, hidden: int = 64,
                 dropout: float = 0.5, batch_norm: bool = False, seed: int | None = 0) -> None:
        super().__init__()
        check_positive_int("n_classes", n_classes)
        check_positive_int("image_size", image_size)
        check_probability("dropout", dropout, open_interval=False)
        if image_size % 2:
            raise ValueError(f"image_size must be even (the block pools by 2), got {image_size}")
        side = image_size // 2

        def norm(channels: int) -> list[nn.Module]:
            return [nn.BatchNorm2d(channels)] if batch_norm else []

        with seeded(seed):
            self.features = nn.Sequential(
                nn.Conv2d(in_channels, 16, 3, padding=1), *norm(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), *norm(32), nn.MaxPool2d(2), nn.Dropout(dropout), nn.ReLU())
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(32 * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C]`` of ``x [N, in_channels, S, S]``."""
        return self.classifier(self.features(x))


def fit_predictor(model: nn.Module, data: Data, epochs: int, *, lr: float = 1e-3, batch_size: int = 32,
                  seed: int | None = 0) -> list[float]:
    """Train a classifier with cross-entropy and Adam (BASE-f: the same optimiser, data and epochs as FLINT).

    Returns the mean training loss of each epoch; the model's train/eval mode comes back as it was. ``seed``
    fixes every random draw (shuffling, dropout) and the caller's RNG states are restored.
    """
    check_positive_int("epochs", epochs)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    device = parameter_device(model)
    losses = []
    was_training = model.training
    with seeded(seed):
        model.train()
        try:
            for epoch in range(epochs):
                total, count = 0.0, 0
                epoch_seed = None if seed is None else seed + epoch
                for x, y in batches(data, batch_size, shuffle=True, seed=epoch_seed, device=device):
                    if y is None:
                        raise ValueError("fit_predictor needs labelled data (x, y)")
                    loss = F.cross_entropy(model(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(x)
                    count += len(x)
                losses.append(total / max(count, 1))
        finally:
            model.train(was_training)
    return losses
