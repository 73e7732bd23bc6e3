"""Do the latent scores measure what they claim? (Bertolini et al. 2022: "scores correlate with the desired
properties"; SPEC section 4.)

Images hold four Gaussian blobs, one per quadrant, whose radii are four independent factors
(``captum_layerpair.datasets.make_blob_images``). Per seed a ``ConvEncoder`` is trained to regress the factors, so
embedding dimension q should depend on blob q only. Three checks:

1. **Disentanglement vs. MIG.** A linear layer ``mix`` with weight ``(1 - alpha) I + alpha Q`` (Q random
   orthogonal, per seed) is appended to the encoder, so ``z_alpha = ((1 - alpha) I + alpha Q) z`` and the
   layer-pair attribution (the paper's expected gradients at the input of ``conv2``, to ``mix``) sees the mixing.
   For alpha in 0, 0.1, ..., 1 we report D and the Mutual Information Gap of ``z_alpha`` with the true factors,
   and the Spearman correlation of D with MIG over all (alpha, seed) pairs (expected: strongly positive).
2. **Informativeness of trained vs. randomised encoders**, with the noise-vs-noise null (expected: trained > random).
3. **Informativeness under input drift** ``x_lambda = (1 - lambda) x + lambda xi`` (xi uniform noise; expected: I
   falls as lambda grows).

Run (about 2-4 minutes on 2 CPU cores):  python benchmarks/validate_scores.py
"""
from __future__ import annotations

import argparse
import time
from collections import OrderedDict

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from captum_layerpair import LayerPairAttribution
from captum_layerpair.datasets import make_blob_images
from captum_layerpair.metrics import DisentanglementScore, InformativenessScore, mutual_information_gap
from captum_layerpair.models import ConvEncoder

IMAGE_SIZE = 16
SOURCE = "encoder.conv2"  # attributed at its input (the paper's setting): the 16x16 output of conv1's ReLU
ATTRIBUTE = {"attribute_to_source_input": True, "n_samples": 16}


def train_factor_encoder(seed: int, n_train: int = 2048, steps: int = 800) -> tuple[ConvEncoder, float]:
    """A ``ConvEncoder`` trained (seeded) to regress the four blob sizes; returns it in eval mode and its test R^2."""
    train = make_blob_images(n_train, IMAGE_SIZE, noise=0.02, seed=seed)
    encoder = ConvEncoder(embed_dim=4, image_size=IMAGE_SIZE, seed=seed)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, n_train, (64,), generator=gen)
        loss = nn.functional.mse_loss(encoder(train.images[idx]), train.factors[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.eval()
    test = make_blob_images(1000, IMAGE_SIZE, noise=0.02, seed=10_000 + seed)
    with torch.no_grad():
        residual = (encoder(test.images) - test.factors).square().sum()
    return encoder, 1 - float(residual / (test.factors - test.factors.mean(0)).square().sum())


def mixed(encoder: nn.Module, alpha: float, Q: torch.Tensor) -> nn.Sequential:
    """``encoder`` followed by the linear layer ``mix`` with weight ``(1 - alpha) I + alpha Q``."""
    mix = nn.Linear(Q.shape[0], Q.shape[0], bias=False)
    with torch.no_grad():
        mix.weight.copy_((1 - alpha) * torch.eye(Q.shape[0]) + alpha * Q)
    return nn.Sequential(OrderedDict(encoder=encoder, mix=mix)).eval()


def layer_pair(model: nn.Module) -> LayerPairAttribution:
    return LayerPairAttribution(model, SOURCE, "mix", method="paper_expected_gradients")


def mean_std(values: list[float] | np.ndarray) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


def entanglement_sweep(encoders: dict[int, ConvEncoder], alphas: list[float], n_eval: int, n_mig: int) -> None:
    seeds = list(encoders)
    rows: dict[float, dict[str, list[float]]] = {a: {"D": [], "MIG": []} for a in alphas}
    for seed, encoder in encoders.items():
        data = make_blob_images(n_mig, IMAGE_SIZE, noise=0.02, seed=20_000 + seed)
        Q = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(seed)))[0]
        for alpha in alphas:
            model = mixed(encoder, alpha, Q)
            torch.manual_seed(seed)
            D = DisentanglementScore(layer_pair(model)).score(data.images[:n_eval], **ATTRIBUTE)
            with torch.no_grad():
                codes = model(data.images)
            rows[alpha]["D"].append(float(D.mean()))
            rows[alpha]["MIG"].append(mutual_information_gap(codes, data.factors))
    print("\n1. Disentanglement vs. MIG under mixing z_alpha = ((1 - alpha) I + alpha Q) z"
          f"  (mean ± std over seeds {seeds}; D on {n_eval} images, MIG on {n_mig})")
    print(f"{'alpha':>6} | {'D':>17} | {'MIG':>17}")
    for alpha in alphas:
        print(f"{alpha:6.2f} | {mean_std(rows[alpha]['D']):>17} | {mean_std(rows[alpha]['MIG']):>17}")
    D_all = [d for a in alphas for d in rows[a]["D"]]
    mig_all = [m for a in alphas for m in rows[a]["MIG"]]
    rho, p = spearmanr(D_all, mig_all)
    per_seed = [spearmanr([rows[a]["D"][i] for a in alphas], [rows[a]["MIG"][i] for a in alphas])[0]
                for i in range(len(seeds))]
    print(f"Spearman(D, MIG) over all {len(D_all)} (alpha, seed) pairs: rho = {rho:.3f} (p = {p:.2g}); "
          f"per seed: {', '.join(f'{r:.3f}' for r in per_seed)}")
    verdict = "REPRODUCED" if rho > 0.5 and p < 0.05 else "NOT REPRODUCED"
    print(f"Claim 'D correlates strongly and positively with MIG': {verdict}")
    ratio = {key: np.mean(rows[alphas[-1]][key]) / np.mean(rows[alphas[0]][key]) for key in ("D", "MIG")}
    print(f"Caveat: at alpha = {alphas[-1]:g} (a full rotation) D keeps {100 * ratio['D']:.0f}% of its alpha = 0 value "
          f"while MIG keeps {100 * ratio['MIG']:.0f}%: D drops mainly where the mixing matrix is near-singular.")


def informativeness_checks(encoders: dict[int, ConvEncoder], n_eval: int, lambdas: list[float]) -> None:
    seeds = list(encoders)
    trained, random, null, drift = [], [], [], {lam: [] for lam in lambdas}
    for seed, encoder in encoders.items():
        model = mixed(encoder, 0.0, torch.eye(4))
        score = InformativenessScore(layer_pair(model))
        data = make_blob_images(n_eval, IMAGE_SIZE, noise=0.02, seed=20_000 + seed)
        loader = torch.utils.data.DataLoader(data.images, batch_size=64)
        torch.manual_seed(seed)
        summary = score.evaluate(loader, random_model=True, null=True, seed=seed, show_progress=False, **ATTRIBUTE)
        trained.append(summary.mean)
        random.append(summary.random_model.mean)
        null.append(summary.null.mean)
        gen = torch.Generator().manual_seed(seed)
        for lam in lambdas:
            x = (1 - lam) * data.images + lam * torch.rand(data.images.shape, generator=gen)
            drift[lam].append(float(score.score(x, **ATTRIBUTE).mean()))
    print(f"\n2. Informativeness, trained vs. randomised encoder (mean ± std over seeds {seeds}, {n_eval} images)")
    print(f"{'model':>30} | {'I':>17}")
    for name, values in (("trained", trained), ("randomly re-initialised", random), ("null (noise vs. noise)", null)):
        print(f"{name:>30} | {mean_std(values):>17}")
    wins = sum(t > r for t, r in zip(trained, random))
    print(f"Claim 'I is higher for the trained encoder than for a random one': "
          f"{'REPRODUCED' if wins == len(seeds) else 'NOT REPRODUCED'} ({wins} of {len(seeds)} seeds; "
          f"trained - random = {mean_std(np.subtract(trained, random))})")
    print(f"Caveat: noise vs. noise already scores {100 * np.mean(null) / np.mean(trained):.0f}% of the trained "
          f"encoder's I (trained - null = {mean_std(np.subtract(trained, null))}): most of I is the difference "
          "between the maps of any two inputs, not a data-vs-noise difference specific to what the encoder learned.")
    print("\n3. Informativeness under input drift x = (1 - lambda) x + lambda * uniform noise")
    print(f"{'lambda':>6} | {'I':>17} | {'(I_0 - I) / I_0':>17}")
    for lam in lambdas:
        change = [(i0 - i) / i0 for i0, i in zip(drift[lambdas[0]], drift[lam])]
        print(f"{lam:6.2f} | {mean_std(drift[lam]):>17} | {mean_std(change):>17}")
    rho = spearmanr(lambdas, [np.mean(drift[lam]) for lam in lambdas])[0]
    falls = sum(i1 < i0 for i0, i1 in zip(drift[lambdas[0]], drift[lambdas[-1]]))
    verdict = "REPRODUCED" if rho < -0.8 and falls == len(seeds) else "NOT REPRODUCED"
    print(f"Spearman(lambda, mean I) = {rho:.3f}, I(lambda = {lambdas[-1]:g}) < I(0) in {falls} of {len(seeds)} seeds; "
          f"claim 'I falls as the drift grows': {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-eval", type=int, default=256, help="images per attribution-based score")
    parser.add_argument("--n-mig", type=int, default=2000, help="images for MIG")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    encoders = {}
    for seed in args.seeds:
        encoders[seed], r2 = train_factor_encoder(seed)
        print(f"seed {seed}: encoder trained to regress the four blob sizes, test R^2 = {r2:.3f}")
    entanglement_sweep(encoders, [round(0.1 * i, 1) for i in range(11)], args.n_eval, args.n_mig)
    informativeness_checks(encoders, args.n_eval, [0.0, 0.25, 0.5, 0.75, 1.0])
    print(f"\ntotal time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
