"""The embedded sequence demo: a small transformer on generated DNA-like sequences with motifs at known positions.

Data: random sequences over ``ACGT`` (one-hot, ``[n, 32, 4]``) in which each of three motifs is planted with
probability 1/2 at a random position (``make_motif_sequences``, seeded, no download); the ground truth says which
positions each motif covers. Model: ``SequenceTransformer`` (conv stem, CLS token, two attention blocks,
8-d embedding of the CLS token) with a linear head trained to say which motifs a sequence holds. Its weights ship
with the package (``weights/motif_transformer.pt``, about 30 kB): the state dict of ``train_motif_transformer()``
(seeded, well under a minute on a CPU); ``default_sequence_encoder(pretrained=False)`` retrains instead.

``run_demo`` writes the report of ``captum-layerpair demo --model sequence``: layer-pair attributions from the
conv stem (channels first, ``[N, 16, 32]``) and from the first block's attention output and the first block
(tokens, channels last, ``[N, 33, 16]``: CLS + 32 positions) to the embedding, so every unit gets a map over the
sequence positions.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from captum_layerpair.layers import Layer, resolve_layer
from captum_layerpair.models import _seeded_init
from captum_layerpair.report import Report, build_report
from captum_layerpair.sequence_models import SequenceTransformer

__all__ = ["ALPHABET", "MOTIFS", "LENGTH", "EMBED_DIM", "WEIGHTS", "MotifSequences", "make_motif_sequences",
           "MotifClassifier", "train_motif_transformer", "default_sequence_encoder", "demo_sources", "run_demo"]

ALPHABET = "ACGT"
MOTIFS = ("TATAA", "GCGCG", "CAGTC")
LENGTH = 32
EMBED_DIM = 8
WEIGHTS = Path(__file__).parent / "weights" / "motif_transformer.pt"
N_TRAIN = 3000
TEST_SEED = 1  # held-out sequences: a different seed from the training set's (0)


class MotifSequences(NamedTuple):
    """Generated sequences with their ground truth.

    sequences: ``[n, L, 4]`` float one-hot over ``ALPHABET``. labels: ``[n, n_motifs]`` float, 1 where the motif
    is planted. positions: ``[n, L]`` int64, ``m + 1`` at the positions motif ``m`` covers, 0 elsewhere.
    """

    sequences: torch.Tensor
    labels: torch.Tensor
    positions: torch.Tensor


def make_motif_sequences(n: int, length: int = LENGTH, motifs: tuple[str, ...] = MOTIFS, p_motif: float = 0.5,
                         seed: int = 0) -> MotifSequences:
    """``n`` random sequences with each motif planted with probability ``p_motif`` at a random position (motifs do
    not overlap). Draws come from a private generator seeded by ``seed``; no global RNG is touched."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, len(ALPHABET), size=(n, length))
    labels = np.zeros((n, len(motifs)), dtype=np.float32)
    positions = np.zeros((n, length), dtype=np.int64)
    codes = [np.array([ALPHABET.index(c) for c in motif]) for motif in motifs]
    for i in range(n):
        for m in rng.permutation(len(motifs)):
            if rng.random() >= p_motif:
                continue
            width = len(codes[m])
            free = [s for s in range(length - width + 1) if not positions[i, s:s + width].any()]
            start = free[rng.integers(len(free))]
            tokens[i, start:start + width] = codes[m]
            positions[i, start:start + width] = m + 1
            labels[i, m] = 1.0
    one_hot = F.one_hot(torch.from_numpy(tokens), len(ALPHABET)).float()
    return MotifSequences(one_hot, torch.from_numpy(labels), torch.from_numpy(positions))


class MotifClassifier(nn.Module):
    """``encoder`` (a ``SequenceTransformer``, ``[N, L, 4] -> [N, 8]``) and ``head`` (linear, motif logits)."""

    @_seeded_init
    def __init__(self, seed: int | None = 0) -> None:
        super().__init__()
        self.encoder = SequenceTransformer(length=LENGTH, vocab=len(ALPHABET), dim=16, depth=2, heads=2,
                                           embed_dim=EMBED_DIM, kernel_size=5, seed=None)
        self.head = nn.Linear(EMBED_DIM, len(MOTIFS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def train_motif_transformer(epochs: int = 25, seed: int = 0, batch_size: int = 64, lr: float = 3e-3,
                            n_train: int = N_TRAIN) -> MotifClassifier:
    """Train ``MotifClassifier`` to detect the motifs (binary cross-entropy, Adam, seeded), in eval mode.

    The defaults reproduce the shipped weights (up to floating-point differences between machines).
    """
    data = make_motif_sequences(n_train, seed=seed)
    model = MotifClassifier(seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n_train, generator=generator)
        for batch in order.split(batch_size):
            loss = F.binary_cross_entropy_with_logits(model(data.sequences[batch]), data.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def default_sequence_encoder(pretrained: bool = True) -> SequenceTransformer:
    """The demo's encoder (``[N, 32, 4] -> [N, 8]``) in eval mode: the shipped weights, or freshly trained.

    Also a ``--model`` factory for the CLI: ``captum-layerpair layers --model
    captum_layerpair.demo_sequence:default_sequence_encoder --input-shape 32,4``.
    """
    if not pretrained:
        return train_motif_transformer().encoder.eval()
    model = MotifClassifier(seed=None)
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.encoder.eval()


def demo_sources(encoder: nn.Module) -> list[Layer]:
    """The demo's source layers: the conv stem (channels first), the first block's attention output (a tuple's
    element 0) and the first block (tokens, channels last)."""
    return [resolve_layer(encoder, "stem", "source", "channels_first"),
            resolve_layer(encoder, "blocks.0.attn[0]", "source", "channels_last"),
            resolve_layer(encoder, "blocks.0", "source", "channels_last")]


def run_demo(out_dir: str | Path, n_inputs: int = 64, show_progress: bool = False) -> Report:
    """Write the sequence demo's report into ``out_dir``: three layers of the motif transformer to its 8-d
    embedding, Integrated Gradients (16 steps, all-zero sequence baseline) on ``n_inputs`` held-out sequences;
    see ``captum_layerpair.report.build_report`` for what the report holds."""
    encoder = default_sequence_encoder()
    data = make_motif_sequences(max(n_inputs, 1), seed=TEST_SEED)
    return build_report(
        encoder, data.sequences[:n_inputs], sources=demo_sources(encoder), target="embed",
        method="IntegratedGradients", attribute_kwargs={"n_steps": 16, "input_baselines": 0.0}, out_dir=out_dir,
        title="captum-layerpair demo: a transformer on motif sequences",
        model_description=f"encoder of a small transformer (conv stem, CLS token, 2 attention blocks, "
                          f"{EMBED_DIM}-d embedding) trained to detect the motifs {', '.join(MOTIFS)} in {N_TRAIN} "
                          f"generated sequences of length {LENGTH}; the shipped weights",
        inputs_description=f"{n_inputs} held-out one-hot sequences (seed {TEST_SEED})",
        show_progress=show_progress,
    )
