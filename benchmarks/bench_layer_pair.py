"""SPEC section 7, workload W1: layer-pair attribution against the plain-Captum way (B0) and a hand-written bound.

W1: SmallResNet (stem + 4 residual blocks, 16 -> 32 channels), 32x32 RGB input, N = 8; source = the first
block's first conv (``layer1.0.conv1``), target = the last block (``layer1.3``, K = 32 channels, "sum").

B0, what a user writes today: for each target unit k, one Captum *layer* call on "input -> T[:, k].sum()" with
``layer=source``. Ours: one ``LayerPairAttribution.attribute`` call for all K units. Bound (IG only): one
forward over all interpolation steps plus one batched vector-Jacobian product for all K units, hand-written here.

Run: ``python benchmarks/bench_layer_pair.py`` (``--quick`` for a smoke run). Prints times (median of
``--repeats``), the ratios B0/ours and ours/bound, time against K, and peak memory with and without chunking.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable

import torch
from captum.attr import (FeatureAblation, InputXGradient, IntegratedGradients, LayerFeatureAblation,
                         LayerGradientXActivation, LayerIntegratedGradients)
from captum.attr._utils.approximation_methods import approximation_parameters

from captum_layerpair import LayerPairAttribution
from captum_layerpair.models import SmallResNet

warnings.filterwarnings("ignore")
SOURCE, TARGET = "layer1.0.conv1", "layer1.3"


def workload(n: int = 8) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = SmallResNet(in_channels=3, widths=(16, 16, 32, 32), embed_dim=8, seed=0).eval()
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    windows = (torch.arange(64).view(8, 8).repeat_interleave(4, 0).repeat_interleave(4, 1))  # 4x4 windows
    return model, x, windows.expand(1, 16, 32, 32).contiguous()


def unit_function(model: torch.nn.Module, k: int):
    """B0's forward: model input -> T[:, k] summed over positions."""
    def forward(inp: torch.Tensor) -> torch.Tensor:
        captured = {}
        handle = model.get_submodule(TARGET).register_forward_hook(lambda m, i, o: captured.setdefault("t", o))
        try:
            model(inp)
        finally:
            handle.remove()
        return captured["t"][:, k].sum(dim=(1, 2))
    return forward


def b0(model, x, mask, method: str, units: list[int]) -> torch.Tensor:
    source = model.get_submodule(SOURCE)
    out = []
    for k in units:
        f = unit_function(model, k)
        if method == "IG":
            out.append(LayerIntegratedGradients(f, source).attribute(x, baselines=torch.zeros_like(x), n_steps=16))
        elif method == "IxG":
            out.append(LayerGradientXActivation(f, source).attribute(x))
        else:
            out.append(LayerFeatureAblation(f, source).attribute(x, layer_mask=mask))
    return torch.stack(out, 1)


def ours(model, x, mask, method: str, units: list[int], target_batch_size: int | None = None) -> torch.Tensor:
    if method == "IG":
        lp = LayerPairAttribution(model, SOURCE, TARGET, method=IntegratedGradients)
        return lp.attribute(x, target=units, input_baselines=torch.zeros_like(x), n_steps=16,
                            target_batch_size=target_batch_size)
    if method == "IxG":
        return LayerPairAttribution(model, SOURCE, TARGET, method=InputXGradient).attribute(x, target=units)
    return LayerPairAttribution(model, SOURCE, TARGET, method=FeatureAblation).attribute(
        x, target=units, feature_mask=mask)


def ig_bound(model, x, units: list[int], vmap: bool) -> torch.Tensor:
    """Hand-written IG: one forward over all 16 steps, one batched VJP for all units (vmap, or a loop of
    backward passes over the same graph); parameters frozen during the call, so no graph is built for them."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        return _ig_bound(model, x, units, vmap)
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def _ig_bound(model, x, units: list[int], vmap: bool) -> torch.Tensor:
    source, target = model.get_submodule(SOURCE), model.get_submodule(TARGET)
    store = {}

    def capture(module, args, out):
        store["a"] = out

    with torch.no_grad():
        handle = source.register_forward_hook(capture)
        model(x)
        a = store["a"]
        model(torch.zeros_like(x))
        b = store["a"]
        handle.remove()
    step_sizes, alphas = approximation_parameters("gausslegendre")
    steps, weights = alphas(16), torch.tensor(step_sizes(16))
    path = torch.cat([b + s * (a - b) for s in steps]).requires_grad_()
    h1 = source.register_forward_hook(lambda m, i, o: path.clone())
    h2 = target.register_forward_hook(lambda m, i, o: store.__setitem__("t", o))
    try:
        model(x.repeat(16, 1, 1, 1))
    finally:
        h1.remove()
        h2.remove()
    out = store["t"].sum(dim=(2, 3))[:, units]  # [16 N, K]
    eye = torch.eye(len(units))[:, None, :].expand(len(units), out.shape[0], len(units))
    if vmap:
        (rows,) = torch.autograd.grad(out, path, grad_outputs=eye, is_grads_batched=True)  # [K, 16 N, *S]
    else:
        rows = torch.stack([torch.autograd.grad(out, path, grad_outputs=eye[k], retain_graph=True)[0]
                            for k in range(len(units))])
    rows = rows.view(len(units), 16, x.shape[0], *a.shape[1:])
    total = (rows * weights.view(1, 16, 1, 1, 1, 1)).sum(1)
    return (total * (a - b)).transpose(0, 1)


def interleaved(fns: dict[str, Callable[[], torch.Tensor]], repeats: int) -> tuple[dict[str, float], dict]:
    """Median time of each function, the functions taking turns within every repeat, so that the machine's
    drifting speed (a shared VM here) hits all of them alike. Returns the medians and the last results."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, results


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_probe(target_batch_size: int | None) -> None:
    """Peak resident memory above the level before the call, sampled every millisecond (Linux)."""
    model, x, mask = workload()
    ours(model, x, mask, "IG", [0])  # warm up allocator and kernels
    baseline, peak, done = resident_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    ours(model, x, mask, "IG", list(range(32)), target_batch_size)
    done.set()
    sampler.join()
    print(peak[0] - baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="K = 8 and one repeat (smoke run)")
    parser.add_argument("--methods", nargs="+", choices=["IG", "IxG", "FA"], default=["IG", "IxG", "FA"],
                        help="rows of the B0 table; with anything but all three, only that table is printed")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe is not None:
        memory_probe(None if args.memory_probe == "none" else int(args.memory_probe))
        return
    repeats = 1 if args.quick else args.repeats
    model, x, mask = workload()
    units = list(range(8 if args.quick else 32))
    source_shape = tuple(ours(model, x, mask, "IxG", [0]).shape[2:])
    print(f"W1: SmallResNet 16->32 channels, x {tuple(x.shape)}, source {SOURCE} {source_shape}, "
          f"target {TARGET} (K = {len(units)}, sum); torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {repeats} interleaved repeats")
    print(f"\n{'method':34s} {'B0 s':>8s} {'ours s':>8s} {'B0/ours':>8s} {'max rel diff':>13s}")
    labels = {"IG": "IntegratedGradients n_steps=16", "IxG": "InputXGradient", "FA": "FeatureAblation 4x4 windows"}
    for method in args.methods:
        label = labels[method]
        t, res = interleaved({"B0": lambda m=method: b0(model, x, mask, m, units),
                              "ours": lambda m=method: ours(model, x, mask, m, units)}, repeats)
        print(f"{label:34s} {t['B0']:8.3f} {t['ours']:8.3f} {t['B0'] / t['ours']:7.1f}x "
              f"{rel_err(res['ours'], res['B0']):13.1e}")

    if len(args.methods) < 3:
        return
    print("\nIG against a hand-written bound: 1 forward over all 16 steps + the K Jacobian rows from that one graph")
    t, res = interleaved({"ours": lambda: ours(model, x, mask, "IG", units),
                          "vmap": lambda: ig_bound(model, x, units, True),
                          "loop": lambda: ig_bound(model, x, units, False)}, repeats)
    for key, label in [("vmap", "batched VJP (is_grads_batched)"), ("loop", "loop of K backward passes")]:
        print(f"  {label:32s} {t[key]:7.3f} s   ours {t['ours']:.3f} s   ours/bound = {t['ours'] / t[key]:5.2f} "
              f"(target <= 1.3)   max rel diff {rel_err(res['ours'], res[key]):.1e}")

    print(f"\nscaling with K (IntegratedGradients n_steps=16):\n{'K':>4s} {'B0 s':>8s} {'ours s':>8s} {'B0/ours':>8s}")
    previous = None
    for K in [4, 8, 16, 32] if not args.quick else [4, 8]:
        t, _ = interleaved({"B0": lambda K=K: b0(model, x, mask, "IG", list(range(K))),
                            "ours": lambda K=K: ours(model, x, mask, "IG", list(range(K)))}, repeats)
        print(f"{K:4d} {t['B0']:8.3f} {t['ours']:8.3f} {t['B0'] / t['ours']:7.1f}x")
        first, previous = previous or (K, t), (K, t)
    (k0, t0), (k1, t1) = first, previous
    print(f"  seconds per extra target unit: B0 {(t1['B0'] - t0['B0']) / (k1 - k0):.4f}, "
          f"ours {(t1['ours'] - t0['ours']) / (k1 - k0):.4f}")

    print("\npeak memory of one IG call for K = 32 (extra resident MiB, fresh process each):")
    for tbs in ["none", "8", "1"]:
        out = subprocess.run([sys.executable, __file__, "--memory-probe", tbs], capture_output=True, text=True,
                             check=True).stdout.strip()
        print(f"  target_batch_size={tbs:>4s}: {float(out):8.1f} MiB")


if __name__ == "__main__":
    main()
