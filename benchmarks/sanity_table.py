"""Which layer-pair attribution methods depend on the model's parameters? (Adebayo et al. 2018; paper, section 4)

A small ``ConvEncoder`` with a 10-class head is trained (seeded, a second or two) on scikit-learn's digits resized
to 16x16. For each method, the layer pair "conv source -> embedding" is explained before and after cascading
randomisation (the head first, then the embedding, then each conv layer downwards, keeping earlier
randomisations), and each step's attribution is compared with the trained model's one (mean over held-out images):
``spearman_abs`` (Spearman rank correlation of |A|), ``ssim`` (SSIM of the channel-aggregated maps, per unit) and
``spatial_spearman`` (Spearman rank correlation of sum_k sum_c |A|: where the pair looks, whichever unit or
channel).

The check is read after the last module *between* source and target: at that point every weight the sub-network
``g_x`` depends on is random, but the source activation ``a`` is still the trained one. Two reference columns say
what a value there means:

* **activation-only map**: the trained map against the activation alone, ``|a(x)|``, and against ``|a(x) - a(black)|``
  (what IntegratedGradients-style methods multiply by), repeated for every unit: how much of "stays similar" is the
  activation's own pattern rather than the weights';
* **independently trained model**: the same architecture trained from another seed (``--seed + 1000``), the same
  method and layer pair, against the trained map. Units and channels of two models are not aligned, so only
  ``spatial_spearman`` compares them (``-`` elsewhere): a random-weights map that is as close as another trained
  model's map does not single out what this model learned.

Verdict per method: "passes" (decays) when spearman_abs at the last between step falls below ``--threshold``,
"fails" (stays similar) otherwise, and whether the activation alone is as similar to the trained map; then on how
many images the random-weights map is closer to the trained one than the independent model's map (see ``verdict``).

Run (about two minutes on 2 CPU cores):  python benchmarks/sanity_table.py      (``--quick``: a smoke run)
"""
from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import torch
from captum.attr import (DeepLift, FeatureAblation, GradientShap, GuidedBackprop, InputXGradient, IntegratedGradients,
                         Saliency)
from torch import nn

from captum_layerpair import LayerPairAttribution
from captum_layerpair._random import seeded
from captum_layerpair.datasets import load_digits_images
from captum_layerpair.models import ConvEncoder
from captum_layerpair.sanity import SIMILARITIES, ModelParameterRandomization, RandomizationResult
from captum_layerpair.sanity.references import activation_map

IMAGE_SIZE = 16
TARGET = "encoder.embed"
BLACK = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
METHODS: dict[str, tuple[type, dict[str, Any]]] = {
    "Saliency": (Saliency, {}),
    "InputXGradient": (InputXGradient, {}),
    "IntegratedGradients": (IntegratedGradients, {"n_steps": 16, "input_baselines": BLACK}),
    "GradientShap": (GradientShap, {"n_samples": 16, "input_baselines": BLACK}),
    "GuidedBackprop": (GuidedBackprop, {}),
    "DeepLift": (DeepLift, {"input_baselines": BLACK}),
    "FeatureAblation": (FeatureAblation, {}),
}
MEASURES = ("spearman_abs", "ssim", "spatial_spearman")
ALIGNED_ACROSS_MODELS = ("spatial_spearman",)  # measures that do not pair units or channels by their index
SHORT = {"after_target": "after tgt", "between": "between", "up_to_source": "src/below"}
REFERENCES = ("|a|", "|a-a(b)|", "indep.")
MARGIN = 0.05  # "no more than the activation alone": within this of the activation-only similarity


def train_model(seed: int, epochs: int) -> tuple[nn.Sequential, float, torch.Tensor]:
    """``encoder`` (ConvEncoder, 8-d embedding) + ``head`` trained on 1500 digits; returns it (eval), its held-out
    accuracy and the held-out images ``[297, 1, 16, 16]``."""
    images, labels = load_digits_images(IMAGE_SIZE)
    model = nn.Sequential()
    model.add_module("encoder", ConvEncoder(1, channels=(8, 16, 16), embed_dim=8, image_size=IMAGE_SIZE, seed=seed))
    with seeded(seed):
        model.add_module("head", nn.Linear(8, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(1500, generator=gen)
        for start in range(0, 1500, 64):
            batch = order[start:start + 64]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[1500:]).argmax(1) == labels[1500:]).float().mean().item()
    return model, accuracy, images[1500:]


def references(model: nn.Module, other: nn.Module, source: str, method: type, trained: torch.Tensor,
               x: torch.Tensor, kwargs: dict[str, Any], seed: int) -> tuple[dict[str, dict[str, float]], torch.Tensor]:
    """Per measure, the similarity of the trained map ``trained [N, K, *source_shape]`` to ``|a|``,
    ``|a - a(black)|`` and the independently trained model's map (mean over images); and the per-image
    ``spatial_spearman`` to the independent model's map ``[N]``."""
    lp = LayerPairAttribution(model, source, TARGET, method=method)
    with seeded(seed):
        independent = LayerPairAttribution(other, source, TARGET, method=method).attribute(x, **kwargs)
    maps = {"|a|": activation_map(lp, x, trained.shape[1]),
            "|a-a(b)|": activation_map(lp, x, trained.shape[1], input_baselines=BLACK),
            "indep.": independent}
    means = {measure: {name: (SIMILARITIES[measure](trained, ref).mean().item()
                              if name != "indep." or measure in ALIGNED_ACROSS_MODELS else float("nan"))
                       for name, ref in maps.items()} for measure in MEASURES}
    return means, SIMILARITIES["spatial_spearman"](trained, independent)


def verdict(result: RandomizationResult, step: int, refs: dict[str, dict[str, float]], closer: int,
            threshold: float) -> str:
    """One line: what the similarity at randomisation step ``step`` says, read against the two references.

    "passes" when spearman_abs has fallen below ``threshold``; "fails" otherwise, saying whether the activation
    alone is as similar to the trained map (within ``MARGIN``) as the random-weights map is. Then on how many
    images the random-weights map is closer to the trained one than an independently trained model's map is.
    """
    stays = result.similarity["spearman_abs"][step].item()
    if stays < threshold:
        head = f"passes: decays ({stays:.2f} < {threshold})"
    else:
        activation = max(refs["spearman_abs"]["|a|"], refs["spearman_abs"]["|a-a(b)|"])
        explained = "no more than" if activation >= stays - MARGIN else "beyond"
        head = f"fails: stays similar ({stays:.2f}), {explained} the activation alone ({activation:.2f})"
    n = result.per_sample["spatial_spearman"].shape[1]
    return (f"{head}; random-weights map closer to the trained one than another trained model's on {closer}/{n} "
            f"images (spatial_spearman {result.similarity['spatial_spearman'][step].item():.2f} vs "
            f"{refs['spatial_spearman']['indep.']:.2f})")


def run_source(source: str, model: nn.Module, other: nn.Module, x: torch.Tensor, args: argparse.Namespace) -> None:
    print(f"=== source {source} -> target {TARGET}; cascading randomisation, similarity to the trained model's map "
          "(mean over images) | references ===")
    verdicts = []
    for name, (method, kwargs) in METHODS.items():
        if args.methods and name not in args.methods:
            continue
        tic = time.perf_counter()
        lp = LayerPairAttribution(model, source, TARGET, method=method)
        result = ModelParameterRandomization(lp, order="cascading", similarity=MEASURES, seed=args.seed).evaluate(
            x, keep_attributions=True, **kwargs)
        refs, independent = references(model, other, source, method, result.original, x, kwargs, args.seed)
        if not verdicts:
            print(f"{'method':<20} {'measure':<17}" + "".join(f"{n.split('.')[-1]:>10}" for n in result.layer_names)
                  + " |" + "".join(f"{r:>10}" for r in REFERENCES))
            print(f"{'':<20} {'':<17}" + "".join(f"{SHORT[p]:>10}" for p in result.positions) + " |")
        last_between = max(i for i, p in enumerate(result.positions) if p == "between")
        for measure in MEASURES:
            cells = "".join(f"{v:>10.3f}" for v in result.similarity[measure].tolist())
            ref_cells = "".join(f"{'-':>10}" if v != v else f"{v:>10.3f}" for v in refs[measure].values())
            print(f"{name if measure == MEASURES[0] else '':<20} {measure:<17}{cells} |{ref_cells}")
        closer = int((result.per_sample["spatial_spearman"][last_between] > independent).sum())
        verdicts.append(f"{name:<20} {verdict(result, last_between, refs, closer, args.threshold)} "
                        f"[{time.perf_counter() - tic:.1f} s]")
    print(f"\nverdicts (read at '{result.layer_names[last_between]}', the last module between source and target; "
          f"spearman_abs threshold {args.threshold}):")
    print("\n".join(verdicts) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", nargs="+", default=["encoder.conv1", "encoder.act1"],
                        help="source layers (the target is encoder.embed)")
    parser.add_argument("--methods", nargs="+", default=None, choices=list(METHODS), help="default: all")
    parser.add_argument("--n", type=int, default=16, help="held-out images explained")
    parser.add_argument("--seed", type=int, default=0, help="the trained model (the independent one: seed + 1000)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.5, help="spearman_abs at or above: 'stays similar'")
    parser.add_argument("--quick", action="store_true", help="4 images, 2 epochs, one source (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.epochs, args.sources = 4, 2, args.sources[-1:]
    torch.set_num_threads(1)
    for note in ("Setting forward, backward hooks", "Setting backward hooks", "Input Tensor .* did not already"):
        warnings.filterwarnings("ignore", message=note)  # Captum's notes on its own hooks and inputs

    start = time.perf_counter()
    model, accuracy, held_out = train_model(args.seed, args.epochs)
    other, other_accuracy, _ = train_model(args.seed + 1000, args.epochs)
    x = held_out[:args.n]
    print(f"model: ConvEncoder(8, 16, 16 channels; 8-d embedding) + 10-class head, trained {args.epochs} epochs on "
          f"1500 digits, held-out accuracy {accuracy:.3f} (seed {args.seed}); independent model {other_accuracy:.3f} "
          f"(seed {args.seed + 1000}); both trained in {time.perf_counter() - start:.1f} s; explaining {len(x)} "
          "held-out images\n")
    for source in args.sources:
        run_source(source, model, other, x, args)
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
