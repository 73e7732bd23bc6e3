"""Training with latent-score constraints (Bertolini et al. 2022, section 5): does raising informativeness or
disentanglement during training help downstream accuracy?

On scikit-learn's 8x8 digits (no download), a ``ConvAutoencoder`` with an embedding of size D in {2, 3, 5} and a
linear classifier on the embedding are trained jointly with

    loss = CE(classifier(z), y) + MSE(decoder(z), x)  [- lam_I * I]  [- lam_D * D]

where I and D come from ``LatentScoreRegularizer`` (gradient x activation at the input of ``conv2``, the 8x8 output
of the first ReLU, to the embedding; max normalisation). Four settings: none, -I, -D, both; 5 seeds each.
We report the classifier's test accuracy, and the test-set scores (evaluation definition: min-max normalisation,
uniform noise), as mean ± std over seeds, plus the training time per step.

The weights were fixed before these runs, in a pilot on a validation split of the training data (seed 100, D = 3,
15 epochs), as the largest values whose validation accuracy was not below the unconstrained model's:
lam_I = 0.1 from {0.01, 0.03, 0.1, 0.3} (0.3 fell below) and lam_D = 1 from {0.01, 0.03, 0.1, 0.3, 1, 3} (3 cost
11 points; D is about ten times smaller than I). Other weights: ``--lam-i``, ``--lam-d``.

Run (about 5-8 minutes on 2 CPU cores):  python benchmarks/train_with_constraints.py
Quick check (about 1 minute):             python benchmarks/train_with_constraints.py --quick
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import ttest_rel
from captum.attr import InputXGradient
from torch import nn

from captum_layerpair import LayerPairAttribution
from captum_layerpair.datasets import load_digits_images
from captum_layerpair.metrics import DisentanglementScore, InformativenessScore
from captum_layerpair.models import ConvAutoencoder
from captum_layerpair.training import LatentScoreRegularizer

SOURCE = "conv2"  # attributed at its input (attribute_to_source_input=True)
SETTINGS = {"none": (False, False), "-I": (True, False), "-D": (False, True), "-I -D": (True, True)}


def split(seed: int) -> tuple[torch.Tensor, ...]:
    images, labels = load_digits_images()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.75 * len(images))
    train, test = order[:n_train], order[n_train:]
    return images[train], labels[train], images[test], labels[test]


def train_one(embed_dim: int, w_I: float, w_D: float, seed: int, epochs: int,
              data: tuple[torch.Tensor, ...]) -> dict[str, float]:
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    autoencoder = ConvAutoencoder(embed_dim=embed_dim, image_size=8, seed=seed)
    classifier = nn.Linear(embed_dim, 10)
    params = [*autoencoder.parameters(), *classifier.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    reg = None
    if w_I or w_D:
        reg = LatentScoreRegularizer(autoencoder.encoder, SOURCE, "embed", w_I, w_D, attribute_to_source_input=True)
    gen = torch.Generator().manual_seed(seed)
    steps, start = 0, time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x_train), generator=gen).split(64):
            x, y = x_train[idx], y_train[idx]
            z = autoencoder.encoder(x)
            loss = nn.functional.cross_entropy(classifier(z), y) + nn.functional.mse_loss(autoencoder.decoder(z), x)
            if reg is not None:
                loss = loss + reg(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    step_ms = 1000 * (time.perf_counter() - start) / steps
    autoencoder.eval()
    with torch.no_grad():
        accuracy = (classifier(autoencoder.encoder(x_test)).argmax(1) == y_test).float().mean().item()
    lp = LayerPairAttribution(autoencoder.encoder, SOURCE, "embed", method=InputXGradient)
    torch.manual_seed(seed)
    info = InformativenessScore(lp).score(x_test, attribute_to_source_input=True).mean().item()
    dis = DisentanglementScore(lp).score(x_test, attribute_to_source_input=True).mean().item()
    return {"accuracy": accuracy, "I": info, "D": dis, "step_ms": step_ms}


def mean_std(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    v = np.asarray(values) * scale
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lam-i", type=float, default=0.1, help="weight of the informativeness constraint")
    parser.add_argument("--lam-d", type=float, default=1.0, help="weight of the disentanglement constraint")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 5 epochs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs = 2, 5
    torch.set_num_threads(args.threads)
    start = time.time()
    seeds = list(range(args.seeds))
    data = {seed: split(seed) for seed in seeds}
    results = {(d, name): [train_one(d, args.lam_i * use_I, args.lam_d * use_D, s, args.epochs, data[s]) for s in seeds]
               for d in args.dims for name, (use_I, use_D) in SETTINGS.items()}
    print(f"digits, ConvAutoencoder + linear classifier, {args.epochs} epochs, lam_I = {args.lam_i:g}, "
          f"lam_D = {args.lam_d:g}; "
          f"test split 25%; mean ± std over seeds {seeds}")
    header = f"{'D':>2} | {'constraint':>10} | {'accuracy (%)':>14} | {'test I':>15} | {'test D':>15} | {'ms/step':>7}"
    print(header + "\n" + "-" * len(header))
    for (d, name), runs in results.items():
        col = {key: [r[key] for r in runs] for key in runs[0]}
        print(f"{d:>2} | {name:>10} | {mean_std(col['accuracy'], 100, 1):>14} | {mean_std(col['I']):>15} | "
              f"{mean_std(col['D']):>15} | {np.mean(col['step_ms']):7.1f}")
    print("\nDoes a constraint change accuracy? (difference to 'none' in points, mean ± std over paired seeds; "
          "paired t-test, 'helps'/'hurts' at p < 0.05)")
    gains = []
    for d in args.dims:
        base = np.array([r["accuracy"] for r in results[(d, "none")]])
        parts = []
        for name in list(SETTINGS)[1:]:
            acc = np.array([r["accuracy"] for r in results[(d, name)]])
            diff = 100 * (acc - base)
            p = ttest_rel(acc, base).pvalue if len(diff) > 1 and diff.std() > 0 else 1.0
            verdict = "no significant effect" if not p < 0.05 else "helps" if diff.mean() > 0 else "hurts"
            parts.append(f"{name}: {mean_std(list(diff), digits=1)} (p = {p:.2f}, {verdict})")
            gains += [f"D = {d}, {name}"] if verdict == "helps" else []
        print(f"D = {d}: " + "; ".join(parts))
    n_settings = 2 * len(args.dims)
    raised = {key: sum(np.mean([r[key] for r in results[(d, name)]]) > np.mean([r[key] for r in results[(d, "none")]])
                       for d in args.dims for name in SETTINGS if key in name) for key in ("I", "D")}
    print(f"\nThe constraint raised its own test score in {raised['I']} of {n_settings} settings with -I and "
          f"{raised['D']} of {n_settings} with -D.")
    print(f"Claim 'score constraints improve downstream accuracy': {'REPRODUCED' if gains else 'NOT REPRODUCED'} at "
          f"these weights (significant gains: {', '.join(gains) or 'none'}).")
    print(f"\ntotal time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
