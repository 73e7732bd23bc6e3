"""The embedded default: scikit-learn's digits at 16 x 16 and a small conv autoencoder trained on them.

The autoencoder's weights ship with the package (``weights/digits_autoencoder.pt``, about 50 kB), so the demo
and the tutorials need no download and no training, and give the same numbers on every run. They are the state
dict of ``train_digits_autoencoder()`` (30 epochs, seed 0, a few seconds on a CPU); ``default_autoencoder
(pretrained=False)`` retrains instead of loading them.

``run_demo`` writes the report of ``captum-layerpair demo``: layer-pair attributions from every conv layer of the
encoder to its embedding, with latent scores and parameter-randomisation curves.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from captum_layerpair.datasets import load_digits_images
from captum_layerpair.models import ConvAutoencoder, ConvEncoder
from captum_layerpair.report import Report, build_report

__all__ = ["IMAGE_SIZE", "EMBED_DIM", "WEIGHTS", "digits", "train_digits_autoencoder", "default_autoencoder",
           "default_encoder", "conv_layer_names", "run_demo"]

IMAGE_SIZE = 16
EMBED_DIM = 8
WEIGHTS = Path(__file__).parent / "weights" / "digits_autoencoder.pt"
N_TRAIN = 1500  # the first 1500 digits train the autoencoder; the remaining 297 are held out for explanations


def digits(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Digits resized to ``16 x 16``: ``images [n, 1, 16, 16]`` in ``[0, 1]`` and ``labels [n]``.

    ``split="train"`` gives the 1500 digits the shipped autoencoder was trained on, ``"test"`` the other 297.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = load_digits_images(IMAGE_SIZE)
    part = slice(None, N_TRAIN) if split == "train" else slice(N_TRAIN, None)
    return images[part], labels[part]


def train_digits_autoencoder(epochs: int = 30, seed: int = 0, batch_size: int = 64,
                             lr: float = 3e-3) -> ConvAutoencoder:
    """Train ``ConvAutoencoder(embed_dim=8, image_size=16)`` on the training digits with MSE and Adam (seeded).

    Returns the model in eval mode. The defaults reproduce the shipped weights (up to floating-point
    differences between machines).
    """
    images, _ = digits("train")
    model = ConvAutoencoder(embed_dim=EMBED_DIM, image_size=IMAGE_SIZE, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in images[torch.randperm(len(images), generator=generator)].split(batch_size):
            loss = F.mse_loss(model(batch), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def default_autoencoder(pretrained: bool = True) -> ConvAutoencoder:
    """The demo's autoencoder in eval mode: the shipped weights, or freshly trained with ``pretrained=False``."""
    if not pretrained:
        return train_digits_autoencoder()
    model = ConvAutoencoder(embed_dim=EMBED_DIM, image_size=IMAGE_SIZE, seed=None)
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


def default_encoder() -> ConvEncoder:
    """The demo autoencoder's encoder (``[N, 1, 16, 16] -> [N, 8]``; layers ``conv1`` ... ``embed``), in eval mode.

    Also a ``--model`` factory for the CLI: ``captum-layerpair layers --model captum_layerpair.demo:default_encoder
    --input-shape 1,16,16``.
    """
    return default_autoencoder().encoder.eval()


def conv_layer_names(model: nn.Module) -> list[str]:
    """Dotted names of the model's ``Conv1d/2d/3d`` layers, in definition order."""
    return [name for name, module in model.named_modules() if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def run_demo(out_dir: str | Path, n_inputs: int = 64, show_progress: bool = False) -> Report:
    """Write the demo report into ``out_dir``: every conv layer of the default encoder to its 8-d embedding.

    Integrated Gradients (16 steps, black-image baseline) on the first ``n_inputs`` held-out digits; see
    ``captum_layerpair.report.build_report`` for what the report holds.
    """
    encoder = default_encoder()
    images, _ = digits("test")
    return build_report(
        encoder, images[:n_inputs], sources=conv_layer_names(encoder), target="embed",
        method="IntegratedGradients", attribute_kwargs={"n_steps": 16, "input_baselines": 0.0}, out_dir=out_dir,
        title="captum-layerpair demo: conv autoencoder on digits",
        model_description=f"encoder of a conv autoencoder (ConvAutoencoder, {EMBED_DIM}-d embedding) trained on "
                          f"{N_TRAIN} scikit-learn digits at {IMAGE_SIZE}x{IMAGE_SIZE}; the shipped weights",
        inputs_description=f"the first {min(n_inputs, len(images))} held-out digits",
        show_progress=show_progress,
    )
