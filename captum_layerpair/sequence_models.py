"""Small transformer and recurrent encoders: the real-encoder cases of the tests, tutorials and sequence demo.

Their layers have the shapes real encoders have: token layers ``[N, L, D]`` (``source_layout="channels_last"``),
``nn.MultiheadAttention`` and ``nn.GRU`` returning tuples (select one tensor: ``"blocks.0.attn[0]"``,
``"gru[0]"``), a CLS token (``target_reduction="first_token"``). None needs downloaded weights; every constructor
is seeded without touching the global RNGs.
"""
from __future__ import annotations

import torch
from torch import nn

from captum_layerpair.models import _seeded_init

__all__ = ["TransformerBlock", "TinyViT", "SequenceTransformer", "GRUEncoder"]


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on tokens ``[N, L, D]``: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``.

    Layer names: ``ln1``, ``attn`` (``nn.MultiheadAttention``, batch first; returns a tuple, so select
    ``attn[0]``), ``ln2``, ``mlp`` (``mlp.0`` Linear, ``mlp.1`` activation, ``mlp.2`` Linear).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), activation(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln1(x)
        attended, _ = self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)
        x = x + attended
        return x + self.mlp(self.ln2(x))


class _CLSTransformer(nn.Module):
    """Tokens from ``self.tokenize``, a CLS token prepended, learned positions, blocks, LayerNorm, linear embedding
    of the CLS token."""

    def _build(self, n_tokens: int, dim: int, depth: int, heads: int, embed_dim: int) -> None:
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, n_tokens + 1, dim))
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.embed = nn.Linear(dim, embed_dim)

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.tokenize(x)
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], 1) + self.pos
        if key_padding_mask is not None:  # the CLS token is never masked
            key_padding_mask = torch.cat([key_padding_mask.new_zeros(len(tokens), 1), key_padding_mask], 1)
        for block in self.blocks:
            tokens = block(tokens, key_padding_mask)
        return self.embed(self.norm(tokens)[:, 0])


class TinyViT(_CLSTransformer):
    """A vision transformer: ``[N, C, S, S] -> [N, embed_dim]``.

    A ``patch_size`` convolution (``patch``, output ``[N, dim, S/p, S/p]``, channels first) gives the patch
    tokens; then a CLS token, learned positions, ``depth`` ``TransformerBlock``s (``blocks.0`` ... ``[N, L, dim]``
    with L = 1 + (S/p)^2, channels last), ``norm`` and ``embed`` (linear, on the CLS token).
    """

    @_seeded_init
    def __init__(self, image_size: int = 8, patch_size: int = 4, in_channels: int = 3, dim: int = 16,
                 depth: int = 2, heads: int = 2, embed_dim: int = 8, seed: int | None = 0) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.patch = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self._build((image_size // patch_size) ** 2, dim, depth, heads, embed_dim)

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch(x).flatten(2).transpose(1, 2)


class SequenceTransformer(_CLSTransformer):
    """A transformer on one-hot sequences: ``[N, L, vocab] -> [N, embed_dim]``.

    ``stem`` is a 1-D convolution over the sequence (output ``[N, dim, L]``, channels first: each position sees
    its ``kernel_size`` neighbours, so short motifs are one token's features); ``tokens`` (``nn.Identity``) marks
    the ``[N, L, dim]`` token sequence (channels last); then a CLS token, learned positions, ``blocks.0`` ...,
    ``norm`` and ``embed`` on the CLS token. ``key_padding_mask`` (``[N, L]``, True = padding) is passed to every
    attention layer.
    """

    @_seeded_init
    def __init__(self, length: int = 32, vocab: int = 4, dim: int = 16, depth: int = 2, heads: int = 2,
                 embed_dim: int = 8, kernel_size: int = 5, seed: int | None = 0) -> None:
        super().__init__()
        self.stem = nn.Conv1d(vocab, dim, kernel_size, padding=kernel_size // 2)
        self.tokens = nn.Identity()
        self._build(length, dim, depth, heads, embed_dim)

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.stem(x.transpose(1, 2)).transpose(1, 2))


class GRUEncoder(nn.Module):
    """A recurrent encoder: ``[N, L, in_features] -> [N, embed_dim]``.

    Layer names: ``proj`` (linear per step, ``[N, L, hidden]``), ``gru`` (``nn.GRU``, batch first; returns
    ``(outputs [N, L, hidden], h_n [layers, N, hidden])``, so select ``gru[0]``; ``h_n`` is not batch first and
    cannot be a source), ``embed`` (linear on the last step's output).
    """

    @_seeded_init
    def __init__(self, in_features: int = 4, hidden: int = 16, embed_dim: int = 8, num_layers: int = 1,
                 seed: int | None = 0) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=num_layers, batch_first=True)
        self.embed = nn.Linear(hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.gru(self.proj(x))
        return self.embed(outputs[:, -1])
