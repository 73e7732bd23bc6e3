"""Representation explainers compared on ground truth: RELAX, label-free IG / GradientShap, layer-pair maps.

Images hold four Gaussian blobs, one per quadrant, whose radii are four independent factors
(``captum_layerpair.datasets.make_blob_images``). A ``ConvEncoder`` is trained to regress the factors, so embedding
dimension ``q`` should depend on blob ``q`` only: the relevant region of dimension ``q`` is blob ``q``'s mask, and
that of the whole representation is the union of the four masks. For every method and seed we report

- pointing game: the fraction of maps whose maximum lies inside the relevant region;
- mass in region: the fraction of a map's mass (after per-map min-max normalisation, which removes RELAX's
  constant offset) that lies inside the relevant region;
- runtime per sample (all embedding dimensions included),

as mean +- std over seeds. "chance" is the region's mean area fraction: what a uniformly random map scores.

Run (about 1-2 minutes on 2 CPU cores):  python benchmarks/compare_explainers.py
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from captum.attr import GradientShap, IntegratedGradients

from captum_layerpair import LayerPairAttribution
from captum_layerpair.aggregation import aggregate, normalize
from captum_layerpair.attr.label_free import LabelFreeAttribution
from captum_layerpair.attr.relax import RELAX
from captum_layerpair.datasets import make_blob_images
from captum_layerpair.models import ConvEncoder

IMAGE_SIZE = 24
NOISE = 0.05
BLOBS = {"min_radius": 0.05, "max_radius": 0.12}  # blob masks (radius 2r <= 0.24) stay inside their quadrant

Explainer = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


def train_encoder(seed: int, n_train: int = 4000, steps: int = 600) -> tuple[ConvEncoder, float]:
    """A ``ConvEncoder`` trained (seeded) to regress the four blob sizes; returns it in eval mode and its test R^2."""
    train = make_blob_images(n_train, IMAGE_SIZE, noise=NOISE, seed=seed, **BLOBS)
    encoder = ConvEncoder(embed_dim=4, image_size=IMAGE_SIZE, seed=seed)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, n_train, (128,), generator=gen)
        loss = torch.nn.functional.mse_loss(encoder(train.images[idx]), train.factors[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.eval()
    test = make_blob_images(1000, IMAGE_SIZE, noise=NOISE, seed=10_000 + seed, **BLOBS)
    with torch.no_grad():
        residual = (encoder(test.images) - test.factors).square().sum()
    return encoder, 1 - float(residual / (test.factors - test.factors.mean(0)).square().sum())


def relax_whole(n_masks: int, mask_batch_size: int) -> Explainer:
    return lambda encoder, x: RELAX(encoder).attribute(x, n_masks=n_masks, mask_batch_size=mask_batch_size)[:, None]


def relax_per_dimension(n_masks: int, mask_batch_size: int) -> Explainer:
    """RELAX with the similarity ``-|f_q(x) - f_q(x * M)|``: one run per embedding dimension ``q``."""
    def explain(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        maps = [RELAX(encoder).attribute(x, n_masks=n_masks, mask_batch_size=mask_batch_size, seed=q,
                                         similarity=lambda h, h_masked, q=q: -(h[:, q] - h_masked[:, q]).abs())
                for q in range(4)]
        return torch.stack(maps, dim=1)
    return explain


def label_free_ig_whole(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return LabelFreeAttribution(encoder, IntegratedGradients).attribute(x, n_steps=50).abs()  # [N, 1, H, W]


def label_free_ig(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The authors' per-dimension output ``|f_d(x) A_d(x)|``; after the per-map min-max normalisation of ``score``
    it ranks pixels as ``|A_d(x)|`` does (``f_d(x)`` is one number per map)."""
    return LabelFreeAttribution(encoder, IntegratedGradients).attribute_dimensions(
        x, output="abs_scaled", n_steps=50)[:, :, 0]


def label_free_gradient_shap(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    baselines = torch.zeros(1, *x.shape[1:])
    attributions = LabelFreeAttribution(encoder, GradientShap).attribute_dimensions(
        x, output="abs_scaled", baselines=baselines, n_samples=50, stdevs=0.05)
    return attributions[:, :, 0]


def layer_pair_ig(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    A = LayerPairAttribution(encoder, source_layer="conv1", target_layer="embed",
                             method=IntegratedGradients).attribute(x)  # [N, 4, C, H, W]
    return aggregate(A, over="channels")  # [N, 4, H, W]


def score(maps: torch.Tensor, regions: torch.Tensor) -> tuple[float, float]:
    """Pointing game and mass in region of maps ``[N, K, H, W]`` against boolean regions ``[N, K, H, W]``."""
    m = normalize(maps.detach(), "minmax").flatten(2)
    inside = regions.flatten(2)
    hits = inside.gather(2, m.argmax(dim=2, keepdim=True)).float().mean()
    total = m.sum(2)
    mass = torch.where(total > 0, (m * inside).sum(2) / total.clamp_min(1e-12), torch.zeros_like(total)).mean()
    return float(hits), float(mass)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-eval", type=int, default=32, help="explained images per seed")
    parser.add_argument("--n-masks", type=int, default=3000, help="RELAX masks (the paper's 3000)")
    parser.add_argument("--mask-batch-size", type=int, default=10,
                        help="RELAX masks per forward pass (each pass sees n_eval x this many images)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 avoids thread contention on these tiny models)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    methods: dict[str, tuple[Explainer, str]] = {
        "RELAX (whole representation)": (relax_whole(args.n_masks, args.mask_batch_size), "union"),
        "label-free IG (whole representation)": (label_free_ig_whole, "union"),
        "RELAX per dim (sim -|df_q|)": (relax_per_dimension(args.n_masks, args.mask_batch_size), "dim"),
        "label-free IG per dim": (label_free_ig, "dim"),
        "label-free GradientShap per dim": (label_free_gradient_shap, "dim"),
        "layer-pair IG conv1->embed, channel-aggregated": (layer_pair_ig, "dim"),
    }
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in methods}
    chance: dict[str, list[float]] = {"union": [], "dim": []}
    for seed in args.seeds:
        encoder, r2 = train_encoder(seed)
        data = make_blob_images(args.n_eval, IMAGE_SIZE, noise=NOISE, seed=20_000 + seed, **BLOBS)
        x = data.images
        regions = {"dim": data.masks, "union": data.masks.any(dim=1, keepdim=True)}
        for kind, region in regions.items():
            chance[kind].append(float(region.float().mean()))
        print(f"seed {seed}: encoder test R^2 = {r2:.3f}")
        torch.manual_seed(seed)  # GradientShap draws its baselines and noise from the global RNG
        for name, (explain, kind) in methods.items():
            start = time.perf_counter()
            maps = explain(encoder, x)
            seconds = (time.perf_counter() - start) / len(x)
            results[name].append((*score(maps, regions[kind]), seconds))

    def mean_std(values: list[float], fmt: str) -> str:
        t = torch.tensor(values)
        return f"{format(float(t.mean()), fmt)} ± {format(float(t.std()) if len(t) > 1 else 0.0, fmt)}"

    header = f"{'method':<48} {'region':<6} {'pointing game':>15} {'mass in region':>15} {'ms / sample':>15}"
    print(f"\n{len(args.seeds)} seeds x {args.n_eval} images, {IMAGE_SIZE}x{IMAGE_SIZE}, RELAX with "
          f"{args.n_masks} masks ({args.mask_batch_size} per forward pass), {args.threads} CPU thread(s); "
          "mean ± std over seeds\n")
    print(header)
    print("-" * len(header))
    for name, (_, kind) in methods.items():
        pointing, mass, seconds = zip(*results[name])
        print(f"{name:<48} {kind:<6} {mean_std(list(pointing), '.3f'):>15} {mean_std(list(mass), '.3f'):>15} "
              f"{mean_std([1000 * s for s in seconds], '.1f'):>15}")
    for kind, values in chance.items():
        print(f"{'chance (uniform random map)':<48} {kind:<6} {mean_std(values, '.3f'):>15} "
              f"{mean_std(values, '.3f'):>15} {'':>15}")


if __name__ == "__main__":
    main()
