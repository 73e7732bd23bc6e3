"""Data, models and attribution helpers shared by the validation benchmarks (``validate_scores.py``, ``drift.py``).

Three known-factor testbeds at 16x16: scikit-learn's digits (upsampled; the factor is the class), four blobs in four
quadrants whose sizes are the factors (``make_blob_images``) and dSprites-like shapes with shape, scale and position
factors (``make_shape_images``). Encoders are tiny ``ConvEncoder`` s (K = 4 embedding units) trained for a few
hundred steps: a linear classification head on digits, factor regression on blobs and shapes. A *random* encoder is
a ``ConvEncoder`` freshly initialised with a seed no trained model uses, so trained and random models are independent.

Attributions are the layer-pair maps from the input of ``conv2`` (the 16x16 output of the first ReLU, the paper's
setting) to the embedding. Every random draw is seeded; global random states are restored afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from captum_layerpair import LayerPairAttribution
from captum_layerpair._random import derive_seed, seeded
from captum_layerpair.datasets import load_digits_images, make_blob_images, make_shape_images
from captum_layerpair.metrics import informativeness_score
from captum_layerpair.models import ConvEncoder
from captum_layerpair.validation_models import RegionEncoder

IMAGE_SIZE = 16
EMBED_DIM = 4
SOURCE, TARGET = "conv2", "embed"  # attributed at the input of conv2
RANDOM_SEED_OFFSET = 1000  # random encoders use seeds 1000 + s: never the initialisation of a trained one
DATASETS = ("digits", "blobs", "shapes")
METHODS = {  # label -> (registered method, attribute kwargs)
    "paper EG": ("paper_expected_gradients", {"n_samples": 8}),
    "gradient-only": ("paper_expected_gradients_gradient_only", {"n_samples": 8}),
}
PIXEL_NOISE = 0.02


@dataclass(frozen=True)
class Split:
    """Train and test data of one testbed: ``y`` are labels (digits) or factors scaled to [0, 1] (regression)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int = 0  # > 0: classification with that many classes


def _scaled_shape_factors(factors: torch.Tensor) -> torch.Tensor:
    """Shape index, scale and position of ``make_shape_images`` mapped to [0, 1] by their ranges."""
    low, high = factors.min(0).values, factors.max(0).values
    return (factors - low) / (high - low)


def testbed(name: str, seed: int, n_train: int = 2048, n_test: int = 512) -> Split:
    """Data of testbed ``name`` for model seed ``seed`` (digits: a seeded 75/25 split of the 1797 images)."""
    if name == "digits":
        images, labels = load_digits_images(IMAGE_SIZE)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        cut = int(0.75 * len(images))
        return Split(images[order[:cut]], labels[order[:cut]], images[order[cut:]], labels[order[cut:]], 10)
    if name == "blobs":
        train = make_blob_images(n_train, IMAGE_SIZE, noise=PIXEL_NOISE, seed=seed)
        test = make_blob_images(n_test, IMAGE_SIZE, noise=PIXEL_NOISE, seed=10_000 + seed)
        return Split(train.images, train.factors, test.images, test.factors)
    if name == "shapes":
        train = make_shape_images(n_train, IMAGE_SIZE, noise=PIXEL_NOISE, seed=seed)
        test = make_shape_images(n_test, IMAGE_SIZE, noise=PIXEL_NOISE, seed=10_000 + seed)
        return Split(train.images, _scaled_shape_factors(train.factors), test.images,
                     _scaled_shape_factors(test.factors))
    raise ValueError(f"unknown testbed {name!r}; allowed: {list(DATASETS)}")


def fit(model: nn.Module, data: Split, seed: int, steps: int, lr: float = 3e-3) -> tuple[nn.Module, float]:
    """Train ``model`` (seeded batches, Adam); returns it in eval mode with its test accuracy or R^2.

    Classification trains a linear head on the embedding (the head is discarded; the encoder is the model).
    """
    with seeded(derive_seed(seed, "head")):
        head = nn.Linear(EMBED_DIM, data.classes) if data.classes else nn.Identity()
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=lr)
    gen = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    for _ in range(steps):
        idx = torch.randint(0, len(data.x_train), (64,), generator=gen)
        out = head(model(data.x_train[idx]))
        y = data.y_train[idx]
        loss = nn.functional.cross_entropy(out, y) if data.classes else nn.functional.mse_loss(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = head(model(data.x_test))
    if data.classes:
        return model, float((out.argmax(1) == data.y_test).float().mean())
    residual = (out - data.y_test).square().sum()
    return model, float(1 - residual / (data.y_test - data.y_test.mean(0)).square().sum())


def trained_encoder(data: Split, seed: int, steps: int) -> tuple[ConvEncoder, float]:
    """A ``ConvEncoder`` initialised with ``seed`` and trained on ``data``; returns it with its test score."""
    return fit(ConvEncoder(embed_dim=EMBED_DIM, image_size=IMAGE_SIZE, seed=seed), data, seed, steps)


def random_encoder(seed: int) -> ConvEncoder:
    """An untrained ``ConvEncoder`` with seed ``RANDOM_SEED_OFFSET + seed`` (independent of every trained one)."""
    return ConvEncoder(embed_dim=EMBED_DIM, image_size=IMAGE_SIZE, seed=RANDOM_SEED_OFFSET + seed).eval()


def region_encoder(data: Split, seed: int, steps: int, masked: bool) -> tuple[RegionEncoder, float]:
    """A ``RegionEncoder`` (unit k restricted to quadrant k when ``masked``) trained to regress the blob sizes."""
    return fit(RegionEncoder(image_size=IMAGE_SIZE, masked=masked, seed=seed), data, seed, steps)


def attributions(model: nn.Module, x: torch.Tensor, method: str, seed: int) -> torch.Tensor:
    """Layer-pair attributions ``[N, K, C, 16, 16]`` from the input of ``conv2`` to ``embed`` (seeded draws)."""
    name, kwargs = METHODS[method]
    lp = LayerPairAttribution(model, SOURCE, TARGET, method=name)
    with seeded(seed):
        return lp.attribute(x, attribute_to_source_input=True, **kwargs).detach()


def uniform_noise(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """I.i.d. Uniform[0, 1) inputs of ``x``'s shape."""
    return torch.rand(x.shape, generator=gen)


def shuffle_noise(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each sample's own pixels (all channels of a position together) in a random order, one order per sample."""
    flat = x.flatten(2)  # [N, C, P]
    order = torch.rand(flat.shape[0], flat.shape[2], generator=gen).argsort(1)
    return flat.gather(2, order[:, None, :].expand_as(flat)).view_as(x)


NOISES = {"uniform": uniform_noise, "shuffle": shuffle_noise}


def noise_batches(x: torch.Tensor, kind: str, seed: int, count: int = 3) -> list[torch.Tensor]:
    """``count`` independent noise batches of kind ``"uniform"`` or ``"shuffle"`` (xi_1, xi_2, xi_3)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "noise", kind))
    return [NOISES[kind](x, gen) for _ in range(count)]


def calibrated_informativeness(A_x: torch.Tensor, A_xi1: torch.Tensor, A_xi2: torch.Tensor, A_xi3: torch.Tensor,
                               per_unit: bool = False) -> torch.Tensor:
    """Calibrated informativeness ``I(x) / I_null(x)`` per sample, ``[N]``, from precomputed attributions.

    ``I(x) = informativeness_score(A(x), A(xi1))`` and ``I_null(x) = informativeness_score(A(xi2), A(xi3))``: the
    same model's score between two independent noise inputs of x's shape. 1 means the maps on data differ from
    those on noise no more than two noise maps differ from each other. ``per_unit``: each score is the mean over
    units of the single-unit score (the ``combine="per_unit"`` aggregation). Stand-in for the metrics API's
    ``InformativenessScore(..., calibrate=True)``; switch to it once it is merged.
    """
    def score(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not per_unit:
            return informativeness_score(a, b)
        return torch.stack([informativeness_score(a[:, k:k + 1], b[:, k:k + 1]) for k in range(a.shape[1])]).mean(0)

    return score(A_x, A_xi1) / score(A_xi2, A_xi3)


def mixed(A: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Attributions of the mixed embedding ``z' = W z``: ``A'_j = sum_k W_jk A_k`` (``[N, K, ...]``).

    Exact for every attribution that is linear in the target (gradient x value, gradient only, with the same
    random draws), so one attribution of ``z`` serves every mixing matrix.
    """
    return torch.einsum("jk,nk...->nj...", W.to(A.dtype), A)


def region_share(A: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Share of each unit's map ``M_k = sum_c |A_k|`` inside its own region: ``[N, K]`` from ``A [N, K, C, H, W]``
    and ``regions [K, H, W]`` (bool). 1 when unit k attends only to region k."""
    maps = A.abs().sum(2)  # [N, K, H, W]
    inside = (maps * regions[None]).flatten(2).sum(2)
    return inside / maps.flatten(2).sum(2).clamp_min(torch.finfo(maps.dtype).tiny)


def region_distinctness(A: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """How spatially separate the units are, whatever region each one "should" have: ``[N]``.

    Each unit's map ``M_k = sum_c |A_k|`` becomes a distribution over the R regions (its share of mass in each);
    the score is the mean total-variation distance between the distributions of two different units: 1 when every
    unit lies in a region of its own, 0 when all units spread alike (e.g. duplicated units). ``A [N, K, C, H, W]``,
    ``regions [R, H, W]`` bool, ``K >= 2``.
    """
    maps = A.abs().sum(2)  # [N, K, H, W]
    mass = (maps[:, :, None] * regions[None, None]).flatten(3).sum(3)  # [N, K, R]
    p = mass / mass.sum(2, keepdim=True).clamp_min(torch.finfo(mass.dtype).tiny)
    tv = 0.5 * (p[:, :, None] - p[:, None]).abs().sum(3)  # [N, K, K], zero diagonal
    k = p.shape[1]
    return tv.sum((1, 2)) / (k * (k - 1))


def random_rotation(k: int, seed: int) -> torch.Tensor:
    """A random ``k x k`` orthogonal matrix (QR of a seeded Gaussian matrix)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "rotation"))
    return torch.linalg.qr(torch.randn(k, k, generator=gen))[0]
