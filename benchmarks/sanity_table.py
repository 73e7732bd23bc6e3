"""Which layer-pair attribution methods depend on the model's parameters? (Adebayo et al. 2018; paper, section 4)

A small ``ConvEncoder`` with a 10-class head is trained (seeded, about a second) on scikit-learn's digits resized to
16x16. For each method, the layer pair "conv source -> embedding" is explained before and after cascading
randomisation (the head first, then the embedding, then each conv layer downwards, keeping earlier
randomisations), and each step's attribution is compared with the trained model's one (Spearman rank correlation of
|A| and SSIM of the channel-aggregated maps, mean over samples).

The verdict is read after the last module *between* source and target: at that point every weight the sub-network
``g_x`` depends on is random, but the source activation ``a`` is still the trained one. A method whose similarity
stays at or above the threshold there is parameter-insensitive in this setting ("stays similar"); one that falls
below it "decays". The head (after the target) must give exactly 1, and randomising the source layer itself changes
``a`` as well.

Run (about a minute on 2 CPU cores):  python benchmarks/sanity_table.py
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from captum.attr import (DeepLift, FeatureAblation, GradientShap, GuidedBackprop, InputXGradient, IntegratedGradients,
                         Saliency)
from torch import nn

from captum_layerpair import LayerPairAttribution
from captum_layerpair.datasets import load_digits_images
from captum_layerpair.models import ConvEncoder
from captum_layerpair.sanity import ModelParameterRandomization

IMAGE_SIZE = 16
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
MEASURES = ("spearman_abs", "ssim")
SHORT = {"after_target": "after tgt", "between": "between", "up_to_source": "src/below"}


def train_model(seed: int, epochs: int) -> tuple[nn.Sequential, float, torch.Tensor]:
    """``encoder`` (ConvEncoder, 8-d embedding) + ``head`` trained on 1500 digits; returns it (eval), its held-out
    accuracy and the held-out images ``[297, 1, 16, 16]``."""
    images, labels = load_digits_images(IMAGE_SIZE)
    model = nn.Sequential()
    model.add_module("encoder", ConvEncoder(1, channels=(8, 16, 16), embed_dim=8, image_size=IMAGE_SIZE, seed=seed))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", nargs="+", default=["encoder.conv1", "encoder.act1"],
                        help="source layers (the target is encoder.embed)")
    parser.add_argument("--n", type=int, default=16, help="held-out images explained")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.5, help="spearman_abs at or above: 'stays similar'")
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    model, accuracy, held_out = train_model(args.seed, args.epochs)
    x = held_out[:args.n]
    print(f"model: ConvEncoder(8, 16, 16 channels; 8-d embedding) + 10-class head, trained {args.epochs} epochs on "
          f"1500 digits ({time.perf_counter() - start:.1f} s), held-out accuracy {accuracy:.3f}; "
          f"explaining {len(x)} held-out images; seed {args.seed}\n")
    for source in args.sources:
        print(f"=== source {source} -> target encoder.embed; cascading randomisation (similarity to the trained "
              "model's attribution, mean over images) ===")
        verdicts: dict[str, list[str]] = {"stays similar": [], "decays": []}
        header_done = False
        for name, (method, kwargs) in METHODS.items():
            tic = time.perf_counter()
            lp = LayerPairAttribution(model, source, "encoder.embed", method=method)
            result = ModelParameterRandomization(lp, order="cascading", similarity=MEASURES, seed=args.seed,
                                                 show_progress=False).evaluate(x, **kwargs)
            if not header_done:
                print(f"{'method':<20} {'measure':<13}" + "".join(f"{n.split('.')[-1]:>10}" for n in
                                                                   result.layer_names) + "   verdict")
                print(f"{'':<20} {'':<13}" + "".join(f"{SHORT[p]:>10}" for p in result.positions))
                header_done = True
            last_between = max(i for i, p in enumerate(result.positions) if p == "between")
            score = result.similarity["spearman_abs"][last_between].item()
            verdict = "stays similar" if score >= args.threshold else "decays"
            verdicts[verdict].append(name)
            seconds = time.perf_counter() - tic
            for measure in MEASURES:
                cells = "".join(f"{v:>10.3f}" for v in result.similarity[measure].tolist())
                tail = f"   {verdict} ({score:.2f}; {seconds:.1f} s)" if measure == MEASURES[0] else ""
                print(f"{name if measure == MEASURES[0] else '':<20} {measure:<13}{cells}{tail}")
        print(f"\nstays similar (spearman_abs >= {args.threshold} with every module between source and target "
              f"random; parameter-insensitive): {', '.join(verdicts['stays similar']) or '-'}")
        print(f"decays (parameter-sensitive): {', '.join(verdicts['decays']) or '-'}\n")
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
