"""SPEC section 7: layer-pair attribution against the plain-Captum way (B0) and a hand-written limit.

Workloads (SmallResNet: stem + 4 residual blocks, 16 -> 32 channels, 32 x 32 RGB input; source = the first block's
first conv ``layer1.0.conv1``, ``[16, 32, 32]``):

* W1: N = 8, target = the last block ``layer1.3`` (K = 32 channels, ``"sum"``);
* W2: N = 16, target = a 128-d embedding ``embed`` (K = 128).

Methods: IntegratedGradients (n_steps = 16, black-image baseline), InputXGradient, FeatureAblation over 4 x 4
windows of the source (64 features spanning all channels, baseline 0).

B0, what a user writes today: for each target unit k, one Captum *layer* call on "input -> T[:, k]" with
``layer=source``. Ours: one ``LayerPairAttribution.attribute`` call for all K units. The limit, hand-written
here: the input -> source prefix computed once, then only the source -> target sub-network (written out by hand);
FeatureAblation = one base forward + every ablated feature, batched, and one gather; gradient methods = one forward
over all steps + K backward passes reduced as they come.

Timing: each row is the median of ``--repeats`` repeats in which B0, ours and the limit take turns (a shared machine
drifts), after one untimed warm-up run of each. By default the clock is the process's CPU time (user + system) with
one intra-op thread (``--threads 1 --clock cpu``), which other processes on the machine disturb far less than wall
time; ``--clock wall`` measures wall time. By default the benchmark re-runs itself with glibc's allocator told to
keep freed memory (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``): under the default allocator every large
temporary is a fresh mapping that the kernel zeroes, which adds an erratic 10-100 % of system time to B0, ours and
the limit alike; ``--allocator default`` measures that way.
Peak memory: the rise of the resident set's high-water mark during one call, in a fresh process per figure, with
glibc told to map every block of 64 KiB or more on its own (``MALLOC_MMAP_THRESHOLD_=65536``), so that the resident
set follows the live tensors rather than what the allocator keeps of freed memory.

Run: ``python benchmarks/bench_layer_pair.py`` (``--quick``: two repeats, fewer K, no B0 on W2).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
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
SOURCE = "layer1.0.conv1"
N_STEPS = 16
WORKLOADS = {"W1": (8, 8, "layer1.3", 32), "W2": (16, 128, "embed", 128)}  # N, embed_dim, target, K
LABELS = {"IG": "IntegratedGradients n_steps=16", "IxG": "InputXGradient", "FA": "FeatureAblation 4x4 windows"}
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
STEADY_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(2**28), "MALLOC_TRIM_THRESHOLD_": str(2**32)}
TRACKING_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(2**16)}  # every block >= 64 KiB mapped alone, unmapped when freed


def workload(name: str, embed_dim: int | None = None) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    n, default_dim, target, _ = WORKLOADS[name]
    model = SmallResNet(in_channels=3, widths=(16, 16, 32, 32), embed_dim=embed_dim or default_dim, seed=0).eval()
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    windows = torch.arange(64).view(8, 8).repeat_interleave(4, 0).repeat_interleave(4, 1)  # 4x4 windows
    return model, x, windows.expand(1, 16, 32, 32).contiguous(), target


# ---------------------------------------------------------------------------------------------------- B0 and ours

def unit_function(model: torch.nn.Module, target: str, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """B0's forward: model input -> T[:, k] (summed over positions for a feature map)."""
    def forward(inp: torch.Tensor) -> torch.Tensor:
        captured = {}
        handle = model.get_submodule(target).register_forward_hook(lambda m, i, o: captured.setdefault("t", o))
        try:
            model(inp)
        finally:
            handle.remove()
        t = captured["t"][:, k]
        return t.flatten(1).sum(1) if t.dim() > 1 else t
    return forward


def b0(model, x, mask, target: str, method: str, units: list[int]) -> torch.Tensor:
    source = model.get_submodule(SOURCE)
    out = []
    for k in units:
        f = unit_function(model, target, k)
        if method == "IG":
            out.append(LayerIntegratedGradients(f, source).attribute(x, baselines=torch.zeros_like(x),
                                                                     n_steps=N_STEPS))
        elif method == "IxG":
            out.append(LayerGradientXActivation(f, source).attribute(x))
        else:
            out.append(LayerFeatureAblation(f, source).attribute(x, layer_mask=mask))
    return torch.stack(out, 1)


def ours(model, x, mask, target: str, method: str, units: list[int], internal_batch_size: int | None = None
         ) -> torch.Tensor:
    if method == "IG":
        lp = LayerPairAttribution(model, SOURCE, target, method=IntegratedGradients)
        extra = {} if internal_batch_size is None else {"internal_batch_size": internal_batch_size}
        return lp.attribute(x, target=units, input_baselines=torch.zeros_like(x), n_steps=N_STEPS, **extra)
    if method == "IxG":
        return LayerPairAttribution(model, SOURCE, target, method=InputXGradient).attribute(x, target=units)
    return LayerPairAttribution(model, SOURCE, target, method=FeatureAblation).attribute(
        x, target=units, feature_mask=mask)


# --------------------------------------------------------------------------------------------------- the limit

def subnetwork(model: torch.nn.Module, a: torch.Tensor, h: torch.Tensor, target: str) -> torch.Tensor:
    """The source -> target sub-network of SmallResNet by hand: ``a`` replaces ``layer1.0.conv1``'s output, ``h``
    is the first block's input (its shortcut skips the source). Returns ``[B, K]``."""
    block = model.layer1[0]
    out = block.relu2(block.bn2(block.conv2(block.relu1(block.bn1(a)))) + block.shortcut(h))
    for later in model.layer1[1:]:
        out = later(out)
    if target == "embed":
        return model.embed(model.flatten(model.pool(out)))
    return out.sum((2, 3))


def limit(model, x, mask, target: str, method: str, units: list[int], internal_batch_size: int | None = None,
          fa_bytes: int = 4 * 2**20) -> torch.Tensor:
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():  # no graph for the parameters, as the engine does
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            h = model.stem(x)  # the prefix, once
            a = model.layer1[0].conv1(h)
        if method == "FA":
            return _limit_ablation(model, a, h, mask, target, units, max(1, fa_bytes // (a.numel() * 4)))
        if method == "IxG":
            return _limit_gradient(model, a, h, torch.ones(1), torch.zeros_like(a), target, units, None)
        with torch.no_grad():  # the baseline's source value, computed on N rows as B0 and ours do (a 1-row batch
            b = model.layer1[0].conv1(model.stem(torch.zeros_like(x)))  # differs in the last bit: IG flips ReLUs)
        step_sizes, alphas = approximation_parameters("gausslegendre")
        return _limit_gradient(model, a, h, torch.tensor(alphas(N_STEPS)), b, target, units, internal_batch_size,
                               torch.tensor(step_sizes(N_STEPS)))
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def _limit_ablation(model, a, h, mask, target, units, batch) -> torch.Tensor:
    """One base forward, every ablated feature (``batch`` features per forward), one gather. The default batch,
    4 MiB of perturbed values (8 features on W1, 4 on W2), was the fastest of 1 to 64 features on both."""
    n, shape, ids = len(a), a.shape[1:], mask.reshape(-1)
    n_features = int(ids.max()) + 1
    with torch.no_grad():
        base = subnetwork(model, a, h, target)[:, units]
        diffs = base.new_empty(n_features, n, len(units))
        for f0 in range(0, n_features, batch):
            f = torch.arange(f0, min(n_features, f0 + batch))
            rows = torch.where(mask[None] == f.view(-1, 1, 1, 1, 1), 0.0, a[None]).flatten(0, 1)
            out = subnetwork(model, rows, h.repeat(len(f), 1, 1, 1), target)[:, units]
            diffs[f0:f0 + len(f)] = base - out.view(len(f), n, len(units))
        index = ids[None, None].expand(n, len(units), -1)
        return torch.gather(diffs.permute(1, 2, 0).contiguous(), 2, index).view(n, len(units), *shape)


def _limit_gradient(model, a, h, alphas, b, target, units, internal_batch_size, weights=None) -> torch.Tensor:
    """IG (``weights`` given) or gradient x input (one step at ``a``): forward over the steps (``internal_batch_size``
    rows at a time), K backward passes per forward, each reduced into the result as it comes."""
    n = len(a)
    per_forward = len(alphas) if internal_batch_size is None else max(1, internal_batch_size // n)
    result = a.new_zeros(n, len(units), *a.shape[1:])
    for s0 in range(0, len(alphas), per_forward):
        steps = alphas[s0:s0 + per_forward]
        path = torch.cat([b + s * (a - b) for s in steps]).requires_grad_()
        out = subnetwork(model, path, h.repeat(len(steps), 1, 1, 1), target)[:, units]
        for k in range(len(units)):
            (grad,) = torch.autograd.grad(out[:, k].sum(), path, retain_graph=k < len(units) - 1)
            grad = grad.view(len(steps), n, *a.shape[1:])
            if weights is not None:
                grad = grad * weights[s0:s0 + len(steps)].view(-1, 1, 1, 1, 1)
            result[:, k] += grad.sum(0)
    return result.mul_((a - b)[:, None] if weights is not None else a[:, None])


# ------------------------------------------------------------------------------------------------ measurement

def interleaved(fns: dict[str, Callable[[], torch.Tensor]], repeats: int, clock: Callable[[], float]
                ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Median time of each function, the functions taking turns within every repeat (after one untimed warm-up
    run of each). Returns the medians and the last results."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results = {name: fn() for name, fn in fns.items()}
    for _ in range(repeats):
        for name, fn in fns.items():
            results.pop(name)
            start = clock()
            results[name] = fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}, results


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _status(name: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(name)) / 1024


def memory_probe(who: str, k: int, internal_batch_size: int | None) -> None:
    """Print the rise of the resident high-water mark (MiB) during one IG call on W2 with ``embed_dim = k``."""
    model, x, mask, target = workload("W2", embed_dim=k)
    run = ours if who == "ours" else limit
    run(model, x, mask, target, "IG", [0], internal_batch_size)  # warm up kernels and libraries
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give the memory the warm-up freed back, so the rise counts it again
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current resident set
    run(model, x, mask, target, "IG", list(range(k)), internal_batch_size)
    print(_status("VmHWM") - before)


def probe(who: str, k: int, internal_batch_size: int | None, threads: int) -> float:
    command = [sys.executable, __file__, "--memory-probe", who, str(k), str(internal_batch_size or 0),
               "--threads", str(threads)]
    env = {**{k: v for k, v in os.environ.items() if k not in STEADY_ALLOCATOR}, **TRACKING_ALLOCATOR}
    return float(subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout.strip())


# ---------------------------------------------------------------------------------------------------- report

def table_w1(repeats: int, clock: Callable[[], float]) -> None:
    model, x, mask, target = workload("W1")
    units = list(range(WORKLOADS["W1"][3]))
    print(f"\nW1: x {tuple(x.shape)}, source {SOURCE} [16, 32, 32], target {target} (K = {len(units)}, sum)")
    print(f"{'method':32s} {'B0 s':>8s} {'ours s':>8s} {'limit s':>8s} {'B0/ours':>8s} {'ours/limit':>10s} "
          f"{'rel diff B0':>11s} {'limit-B0':>9s}")
    for method in ("IG", "IxG", "FA"):
        t, res = interleaved({"B0": lambda m=method: b0(model, x, mask, target, m, units),
                              "ours": lambda m=method: ours(model, x, mask, target, m, units),
                              "limit": lambda m=method: limit(model, x, mask, target, m, units)}, repeats, clock)
        print(f"{LABELS[method]:32s} {t['B0']:8.3f} {t['ours']:8.3f} {t['limit']:8.3f} {t['B0'] / t['ours']:7.1f}x "
              f"{t['ours'] / t['limit']:10.2f} {rel_err(res['ours'], res['B0']):11.1e} "
              f"{rel_err(res['limit'], res['B0']):9.1e}")


def table_w2(repeats: int, clock: Callable[[], float], ks: list[int], with_b0: bool) -> None:
    model, x, mask, target = workload("W2")
    print(f"\nW2: x {tuple(x.shape)}, source {SOURCE} [16, 32, 32], target {target} (128-d); time against K "
          f"(the first K units); B0 on 8 units, for the difference only")
    print(f"{'method':39s} {'K':>4s} {'ours s':>8s} {'limit s':>8s} {'ours/limit':>10s} {'rel diff B0':>11s}")
    for method, ibs in (("IG", None), ("IxG", None), ("FA", None), ("IG", 64)):
        reference = b0(model, x, mask, target, method, list(range(8))) if with_b0 else None
        label = LABELS[method] + ("" if ibs is None else " ibs=64")
        for k in ks:
            units = list(range(k))
            t, res = interleaved({"ours": lambda m=method, u=units, i=ibs: ours(model, x, mask, target, m, u, i),
                                  "limit": lambda m=method, u=units, i=ibs: limit(model, x, mask, target, m, u, i)},
                                 repeats, clock)
            diff = f"{rel_err(res['ours'][:, :8], reference):11.1e}" if reference is not None else ""
            print(f"{label:39s} {k:4d} {t['ours']:8.3f} {t['limit']:8.3f} {t['ours'] / t['limit']:10.2f} {diff}")


def table_memory(ks: list[int], threads: int) -> None:
    print("\npeak memory of one IG call on W2 with a K-d embedding (rise of the resident high-water mark, MiB; a "
          "fresh process each, blocks >= 64 KiB mapped alone; the output alone is N K |S| 4 B = K MiB), without and "
          "with internal_batch_size=64 (4 of the 16 steps per forward pass)")
    print(f"{'K':>4s} {'ours':>8s} {'limit':>8s} {'ours/limit':>10s} {'ours ibs=64':>12s} {'limit ibs=64':>13s} "
          f"{'ours/limit':>10s}")
    for k in ks:
        m = {(who, ibs): probe(who, k, ibs, threads) for who in ("ours", "limit") for ibs in (None, 64)}
        print(f"{k:4d} {m['ours', None]:8.0f} {m['limit', None]:8.0f} {m['ours', None] / m['limit', None]:10.2f} "
              f"{m['ours', 64]:12.0f} {m['limit', 64]:13.0f} {m['ours', 64] / m['limit', 64]:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two repeats, K in {8, 32}, no B0 on W2, memory K <= 32")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time or wall time")
    parser.add_argument("--allocator", choices=["steady", "default"], default="steady",
                        help="glibc malloc keeping freed memory (steady, default) or as configured")
    parser.add_argument("--sections", nargs="+", choices=["W1", "W2", "memory"], default=["W1", "W2", "memory"])
    parser.add_argument("--memory-probe", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe is None and args.allocator == "steady" and any(k not in os.environ for k in STEADY_ALLOCATOR):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **STEADY_ALLOCATOR})
    torch.set_num_threads(args.threads)
    if args.memory_probe is not None:
        who, k, ibs = args.memory_probe
        memory_probe(who, int(k), int(ibs) or None)
        return
    repeats = 2 if args.quick else args.repeats
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    steady = all(os.environ.get(k) == v for k, v in STEADY_ALLOCATOR.items())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), clock: {args.clock} time, median "
          f"of {repeats} interleaved repeats, allocator: {'steady' if steady else 'as configured'}; load average at "
          f"start {' '.join(load)} on {os.cpu_count()} CPUs")
    if "W1" in args.sections:
        table_w1(repeats, CLOCKS[args.clock])
    if "W2" in args.sections:
        table_w2(repeats, CLOCKS[args.clock], [8, 32] if args.quick else [8, 32, 128], with_b0=not args.quick)
    if "memory" in args.sections:
        table_memory([8, 32] if args.quick else [8, 32, 128, 256], args.threads)


if __name__ == "__main__":
    main()
