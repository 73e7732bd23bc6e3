"""Do the latent scores measure what they claim? One command, one verdict table (Bertolini et al. 2022, sections
3 and 5; SPEC section 4; issue 13).

Testbeds (``_testbeds.py``): 16x16 digits, four blobs whose sizes are the factors, dSprites-like shapes (shape,
scale, x, y). Every statistic is over independent models (one per seed); no model contributes more than one value
to a test.

1. **Informativeness, trained vs. random.** Per testbed, ``--seeds`` trained encoders and as many freshly
   initialised ones (other seeds). Per model, on ``--n-eval`` test images: raw I (uniform noise) and calibrated
   I = I(x) / I_null(x) (``_testbeds.calibrated_informativeness``; uniform noise, pixel-shuffled noise, and
   shuffled noise with the per-unit aggregation), with the paper's expected gradients and its gradient-only
   variant. AUROC of trained vs. random with a bootstrap 95% CI (claim: calibrated I reaches 0.95, raw I does not).
   D is scored on the same attributions.
2. **D against the right ground truth.** (a) The SPEC's test: a learned code is mixed, ``z_alpha = ((1 - alpha) I
   + alpha Q) z`` for alpha = 0, 0.1, ..., 1 (Q a random rotation per model), and per model Kendall's tau between D
   and MIG over alpha, and between D and the share of each unit's map inside its own quadrant (blobs: unit k regresses
   the blob of quadrant k), is summarised over models. (b) An oracle: ``RegionEncoder`` with unit k wired to quadrant
   k only (share = 1 by construction), trained on the blobs, and its variants: rotations alpha = 0, 0.25, ..., 1 and
   duplications (units 1..m replaced by copies of unit 0, m = 1, 2, 3). Per oracle, Kendall's tau between D and the
   share (what D should track) and between D and MIG. (c) How much of D and of MIG survives a full rotation.
   Mixed attributions are computed exactly from the unmixed ones (``_testbeds.mixed``).
3. **Drift** (``drift.py``): two-sided I detector vs. mean-pixel and embedding-mean detectors, thresholds from 200
   clean batches, three drift types.
4. **Constraints** (``train_with_constraints.py``): paired accuracy differences with 95% CI and a +-3-point TOST,
   weights tuned on other seeds.

The constraint study runs in a second process beside sections 1-3 (``--serial``: one process).
Run (about 10 minutes on 2 idle CPU cores):  python benchmarks/validate_scores.py
Quick check (under 3 minutes):              python benchmarks/validate_scores.py --quick
"""
from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from _stats import (NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, Verdict, auroc, kendall, mean_ci, paired_difference,
                    verdict_table)
from _testbeds import (DATASETS, IMAGE_SIZE, METHODS, attributions, calibrated_informativeness, mixed, noise_batches,
                       random_encoder, random_rotation, region_distinctness, region_encoder, region_share, testbed,
                       trained_encoder)
from captum_layerpair._random import derive_seed
from captum_layerpair.metrics import disentanglement_score, informativeness_score, mutual_information_gap
from captum_layerpair.validation_models import region_masks
from drift import drift_report, drift_study, drift_verdicts
from train_with_constraints import constraint_report, constraint_study, constraint_verdicts

SCORES = ("raw I", "calibrated I (uniform)", "calibrated I (shuffle)", "calibrated I (shuffle, per unit)", "D")
AUROC_TARGET = 0.95
QUADRANTS = region_masks(2, IMAGE_SIZE)  # [4, 16, 16]: the region of unit k at the input of conv2


def model_scores(model: torch.nn.Module, x: torch.Tensor, method: str, seed: int) -> tuple[dict[str, float],
                                                                                            torch.Tensor]:
    """Mean scores of one model on ``x`` (``SCORES``), and its attributions ``A(x)``."""
    A = attributions(model, x, method, derive_seed(seed, "data"))
    noise = {kind: [attributions(model, xi, method, derive_seed(seed, kind, i))
                    for i, xi in enumerate(noise_batches(x, kind, seed))] for kind in ("uniform", "shuffle")}
    scores = {"raw I": informativeness_score(A, noise["uniform"][0]),
              "calibrated I (uniform)": calibrated_informativeness(A, *noise["uniform"]),
              "calibrated I (shuffle)": calibrated_informativeness(A, *noise["shuffle"]),
              "calibrated I (shuffle, per unit)": calibrated_informativeness(A, *noise["shuffle"], per_unit=True),
              "D": disentanglement_score(A)}
    return {k: float(v.mean()) for k, v in scores.items()}, A


def trained_vs_random(seeds: list[int], n_eval: int, steps: int) -> tuple[dict, dict]:
    """Section 1. Returns ``scores[testbed][method][kind][score] -> [per seed]`` and the trained encoders with their
    test data and paper-EG attributions (reused by section 2)."""
    scores: dict = {name: {m: {"trained": {s: [] for s in SCORES}, "random": {s: [] for s in SCORES}}
                           for m in METHODS} for name in DATASETS}
    kept: dict = {name: {} for name in DATASETS}
    for name in DATASETS:
        for seed in seeds:
            data = testbed(name, seed)
            encoder, fit_score = trained_encoder(data, seed, steps)
            models = {"trained": encoder, "random": random_encoder(seed)}
            x = data.x_test[:n_eval]
            for method in METHODS:
                for kind, model in models.items():
                    values, A = model_scores(model, x, method, derive_seed(seed, name, kind))
                    for key, value in values.items():
                        scores[name][method][kind][key].append(value)
                    if kind == "trained" and method == "paper EG":
                        kept[name][seed] = {"encoder": encoder, "data": data, "A": A, "fit": fit_score}
    return scores, kept


def trained_vs_random_report(scores: dict, kept: dict) -> str:
    lines = ["1. Trained vs. random encoders (mean ± sd over models; AUROC trained > random [95% bootstrap CI])"]
    for name in DATASETS:
        fits = [v["fit"] for v in kept[name].values()]
        lines.append(f"{name}: trained test {'accuracy' if name == 'digits' else 'R^2'} "
                     f"{np.mean(fits):.3f} ± {np.std(fits, ddof=1):.3f}")
        for method in METHODS:
            for score in SCORES:
                t, r = (np.array(scores[name][method][k][score]) for k in ("trained", "random"))
                a = auroc(t, r)
                lines.append(f"  {method:>13} | {score:>32} | trained {t.mean():.4f} ± {t.std(ddof=1):.4f} | "
                             f"random {r.mean():.4f} ± {r.std(ddof=1):.4f} | AUROC {a.value:.2f} {a.ci()}")
    return "\n".join(lines)


def trained_vs_random_verdicts(scores: dict) -> list[Verdict]:
    rows = []
    checks = [("raw I", "paper EG"), ("calibrated I (uniform)", "paper EG"),
              ("calibrated I (uniform)", "gradient-only"), ("calibrated I (shuffle, per unit)", "paper EG"),
              ("calibrated I (shuffle, per unit)", "gradient-only")]
    for name in DATASETS:
        for score, method in checks:
            t, r = scores[name][method]["trained"][score], scores[name][method]["random"][score]
            a = auroc(t, r)
            rows.append(Verdict(f"{score} separates trained from random ({name}, {method}; AUROC >= {AUROC_TARGET})",
                                f"AUROC {a.value:.2f} ({len(t)} + {len(r)} models, p = {a.p_value:.1g})", a.ci(),
                                REPRODUCED if a.value >= AUROC_TARGET else NOT_REPRODUCED))
    for name in DATASETS:
        t, r = scores[name]["paper EG"]["trained"]["D"], scores[name]["paper EG"]["random"]["D"]
        a = auroc(t, r)
        rows.append(Verdict(f"D is higher for trained than for random encoders ({name}, paper EG)",
                            f"AUROC {a.value:.2f}", a.ci(), REPRODUCED if a.low > 0.5 else NOT_REPRODUCED))
    return rows


def _variant_scores(A: torch.Tensor, W: torch.Tensor, z: torch.Tensor, factors: torch.Tensor,
                    share: bool) -> dict[str, float]:
    """D (and the own-region share and distinctness) of the mixed attributions, MIG of the mixed codes ``z W^T``."""
    A_w = mixed(A, W)
    out = {"D": float(disentanglement_score(A_w).mean()), "MIG": mutual_information_gap(z @ W.T, factors)}
    if share:
        out["share"] = float(region_share(A_w, QUADRANTS).mean())
        out["distinctness"] = float(region_distinctness(A_w, QUADRANTS).mean())
    return out


def _rotation(alpha: float, Q: torch.Tensor) -> torch.Tensor:
    return (1 - alpha) * torch.eye(len(Q)) + alpha * Q


def _duplication(m: int, k: int) -> torch.Tensor:
    W = torch.eye(k)
    W[1:m + 1] = torch.eye(k)[0]
    return W


def d_ground_truth(kept: dict, seeds: list[int], steps: int, n_eval: int, n_mig: int) -> dict:
    """Section 2: per model, D / MIG / share over the variants of learned codes (blobs, shapes) and of oracles."""
    out: dict = {"learned blobs": {}, "learned shapes": {}, "oracle": {}, "unmasked": {}}
    alphas = [round(0.1 * i, 1) for i in range(11)]
    for name in ("blobs", "shapes"):
        for seed, item in kept[name].items():
            mig_data = testbed(name, 20_000 + seed, n_train=n_mig, n_test=1)
            with torch.no_grad():
                z = item["encoder"](mig_data.x_train)
            Q = random_rotation(4, seed)
            out[f"learned {name}"][seed] = [_variant_scores(item["A"], _rotation(a, Q), z, mig_data.y_train,
                                                            name == "blobs") for a in alphas]
    for seed in seeds:
        data = testbed("blobs", seed)
        mig_data = testbed("blobs", 20_000 + seed, n_train=n_mig, n_test=1)
        Q = random_rotation(4, seed)
        variants = [_rotation(a, Q) for a in (0.0, 0.25, 0.5, 0.75, 1.0)] + [_duplication(m, 4) for m in (1, 2, 3)]
        for kind, masked in (("oracle", True), ("unmasked", False)):
            model, fit_score = region_encoder(data, seed, steps, masked)
            A = attributions(model, data.x_test[:n_eval], "paper EG", derive_seed(seed, kind))
            with torch.no_grad():
                z = model(mig_data.x_train)
            out[kind][seed] = [_variant_scores(A, W, z, mig_data.y_train, True) | {"fit": fit_score}
                               for W in (variants if masked else variants[:1])]
    return out


def _taus(rows: dict, a: str, b: str) -> list[float]:
    return [kendall([v[a] for v in variants], [v[b] for v in variants]) for variants in rows.values()]


def _kept(rows: dict, key: str, last: int) -> list[float]:
    """Per model: the score at variant ``last`` (full rotation) as a fraction of the unmixed score."""
    return [variants[last][key] / variants[0][key] for variants in rows.values()]


def d_report(d: dict) -> str:
    lines = ["2. D against ground truth (per-model statistics; mean [95% t CI] over models)"]
    for group, pairs in (("learned blobs", (("D", "MIG"), ("D", "share"), ("D", "distinctness"))),
                         ("learned shapes", (("D", "MIG"),)),
                         ("oracle", (("D", "share"), ("D", "distinctness"), ("D", "MIG")))):
        for a, b in pairs:
            tau = mean_ci(_taus(d[group], a, b), bounds=(-1, 1))
            lines.append(f"  {group:>14}: Kendall tau({a}, {b}) {tau.value:+.2f} {tau.ci()}")
    last = {"learned blobs": 10, "learned shapes": 10, "oracle": 4}
    for group, index in last.items():
        cells = []
        for key in ("D", "MIG", "share", "distinctness"):
            if key in d[group][next(iter(d[group]))][0]:
                kept = mean_ci(_kept(d[group], key, index))
                cells.append(f"{key} keeps {kept.value:.0%} {kept.ci(0, 100)}%")
        lines.append(f"  {group:>14}, full rotation: " + ", ".join(cells))
    for group in ("oracle", "unmasked"):
        first = [v[0] for v in d[group].values()]
        avg = {key: np.mean([f[key] for f in first]) for key in ("fit", "share", "distinctness", "D", "MIG")}
        lines.append(f"  RegionEncoder {group:>8} (unmixed): R^2 {avg['fit']:.3f}, share {avg['share']:.3f}, "
                     f"distinctness {avg['distinctness']:.3f}, D {avg['D']:.4f}, MIG {avg['MIG']:.3f}")
    labels = ["alpha 0", "0.25", "0.5", "0.75", "1", "dup 1", "dup 2", "dup 3"]
    mean = {k: np.mean([[v[k] for v in variants] for variants in d["oracle"].values()], 0)
            for k in ("D", "share", "distinctness", "MIG")}
    lines.append("  oracle variants (mean over models):")
    lines += [f"    {lab:>7}: D {mean['D'][i]:.4f}, share {mean['share'][i]:.2f}, distinctness "
              f"{mean['distinctness'][i]:.2f}, MIG {mean['MIG'][i]:.2f}" for i, lab in enumerate(labels)]
    return "\n".join(lines)


def d_verdicts(d: dict) -> list[Verdict]:
    rows = []
    def tau_row(claim: str, group: str, a: str, b: str) -> Verdict:
        tau = mean_ci(_taus(d[group], a, b), bounds=(-1, 1))
        good = tau.value >= 0.5 and tau.low > 0
        return Verdict(claim, f"mean Kendall tau {tau.value:+.2f} over {len(d[group])} models", tau.ci(),
                       REPRODUCED if good else NOT_REPRODUCED)
    rows.append(tau_row("D tracks MIG as a learned code is mixed (blobs; SPEC 4: strongly positive)",
                        "learned blobs", "D", "MIG"))
    rows.append(tau_row("D tracks MIG as a learned code is mixed (shapes: factors share one place)",
                        "learned shapes", "D", "MIG"))
    rows.append(tau_row("D tracks the own-quadrant share as a learned code is mixed (blobs)",
                        "learned blobs", "D", "share"))
    rows.append(tau_row("D tracks the units' spatial distinctness as a learned code is mixed (blobs)",
                        "learned blobs", "D", "distinctness"))
    rows.append(tau_row("D tracks the own-region share (oracle: rotated, duplicated variants)", "oracle", "D", "share"))
    rows.append(tau_row("D tracks the units' spatial distinctness (oracle variants)", "oracle", "D", "distinctness"))
    rows.append(tau_row("D tracks MIG (oracle variants)", "oracle", "D", "MIG"))
    unmixed = {key: {group: [v[0][key] for v in d[group].values()] for group in ("oracle", "unmasked")}
               for key in ("D", "MIG", "share")}
    a = auroc(unmixed["D"]["oracle"], unmixed["D"]["unmasked"])
    mig = auroc(unmixed["MIG"]["oracle"], unmixed["MIG"]["unmasked"])
    rows.append(Verdict("D ranks the region-wired oracle above the same net trained unwired",
                        f"AUROC {a.value:.2f} (share {np.mean(unmixed['share']['oracle']):.2f} vs "
                        f"{np.mean(unmixed['share']['unmasked']):.2f}; MIG AUROC {mig.value:.2f})", a.ci(),
                        REPRODUCED if a.low > 0.5 else NOT_REPRODUCED))
    for group, index in (("learned blobs", 10), ("oracle", 4)):
        diff = paired_difference(_kept(d[group], "D", index), _kept(d[group], "MIG", index))
        d_kept, mig_kept = np.mean(_kept(d[group], "D", index)), np.mean(_kept(d[group], "MIG", index))
        rows.append(Verdict(f"a full rotation lowers D as much as MIG ({group})",
                            f"D keeps {d_kept:.0%}, MIG {mig_kept:.0%}; difference {100 * diff.value:+.0f} pts",
                            diff.ci(0, 100) + " pts", REPRODUCED if diff.low <= 0 <= diff.high else NOT_REPRODUCED))
    return rows


def _timed(label: str, timings: list[str], start: tuple[float, float]) -> tuple[float, float]:
    now = (time.time(), time.process_time())
    timings.append(f"{label} {now[0] - start[0]:.0f} s wall, {now[1] - start[1]:.0f} s CPU")
    return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="independent models per group")
    parser.add_argument("--n-eval", type=int, default=128, help="images per model for the attribution scores")
    parser.add_argument("--n-mig", type=int, default=2000, help="images per model for MIG")
    parser.add_argument("--steps", type=int, default=600, help="training steps per encoder")
    parser.add_argument("--constraint-seeds", type=int, default=20, help="evaluation seeds of the constraint study")
    parser.add_argument("--serial", action="store_true", help="run the constraint study in this process, not a "
                        "second one (by default it runs beside sections 1-3, one process per core)")
    parser.add_argument("--quick", action="store_true", help="3 seeds, fewer images and batches (under 3 minutes)")
    args = parser.parse_args()
    drift_sizes = {"n_calibration": 200, "n_clean": 100, "n_drift": 50}
    constraint = {"tuning_seeds": [100, 101], "epochs": 15}
    if args.quick:
        args.seeds, args.n_eval, args.n_mig, args.steps, args.constraint_seeds = 3, 48, 1000, 300, 3
        drift_sizes = {"n_calibration": 100, "n_clean": 30, "n_drift": 15}
        constraint = {"tuning_seeds": [100], "epochs": 5}
    torch.set_num_threads(1)
    start = clock = (time.time(), time.process_time())
    timings: list[str] = []
    seeds = list(range(args.seeds))
    study_args = (list(range(args.constraint_seeds)), constraint["tuning_seeds"], 3, constraint["epochs"])
    pool = None if args.serial else ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    pending = pool.submit(constraint_study, *study_args) if pool else None
    sections = []
    scores, kept = trained_vs_random(seeds, args.n_eval, args.steps)
    sections.append((trained_vs_random_report(scores, kept), trained_vs_random_verdicts(scores)))
    print(sections[-1][0], flush=True)
    clock = _timed("section 1", timings, clock)
    d = d_ground_truth(kept, seeds, args.steps, args.n_eval, args.n_mig)
    sections.append((d_report(d), d_verdicts(d)))
    print("\n" + sections[-1][0], flush=True)
    clock = _timed("section 2", timings, clock)
    drift = drift_study({s: kept["blobs"][s]["encoder"] for s in seeds}, **drift_sizes)
    sections.append(("3. " + drift_report(drift, **drift_sizes), drift_verdicts(drift)))
    print("\n" + sections[-1][0], flush=True)
    clock = _timed("section 3", timings, clock)
    study = pending.result() if pending else constraint_study(*study_args)
    if pool:
        pool.shutdown()
    sections.append(("4. " + constraint_report(study), constraint_verdicts(study)))
    print("\n" + sections[-1][0], flush=True)
    clock = _timed("section 4" + (" (waited for)" if pending else ""), timings, clock)
    rows = [row for _, verdicts in sections for row in verdicts]
    rows.append(Verdict("the paper's full-scale results (its datasets and networks)", "-", "-", NOT_TESTABLE,
                        "this suite runs tiny encoders on 16x16 known-factor data on CPU"))
    print(f"\nVERDICTS ({'--quick' if args.quick else 'full run'}; {args.seeds} models per group, "
          f"{args.constraint_seeds} constraint seeds)")
    print(verdict_table(rows))
    print(f"\ntotal {time.time() - start[0]:.0f} s wall ({'; '.join(timings)}; CPU of the main process only)")


if __name__ == "__main__":
    main()
