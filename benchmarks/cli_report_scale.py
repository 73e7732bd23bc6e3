"""The CLI report at modest scale (issue 16, case 3): peak memory, wall time and how often the progress advances.

Case 3: 64x64 RGB inputs, a conv encoder with a 64-d embedding (``ConvEncoder(3, (16, 32, 64), 64, 64)``),
N = 32, Integrated Gradients with n_steps = 32, one source (``conv2``, 32 x 32 x 32), scores and randomisation
on. The report runs as ``python -m captum_layerpair report ...`` in a child process; its peak resident memory comes
from ``os.wait4`` (``ru_maxrss``), and the longest stretch of its CPU time (``/proc/PID/stat``) without any output
on stderr is measured while it runs (tqdm writes when a bar advances). CPU time, not wall time: the machine may be
shared, and with one thread CPU time is the work done.

Run: ``python benchmarks/cli_report_scale.py`` (about 10 minutes on one core; ``--quick``: N = 4, n_steps = 4).
Extra arguments go to the report, e.g. ``--target-batch-size 64`` (all units at once) for a comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from captum_layerpair.models import ConvEncoder


def case3_model() -> ConvEncoder:
    """The model of case 3 (a ``--model`` factory): ``[N, 3, 64, 64] -> [N, 64]``, seeded weights."""
    return ConvEncoder(in_channels=3, channels=(16, 32, 64), embed_dim=64, image_size=64, seed=0).eval()


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process ``pid`` has used so far, from ``/proc`` (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _watch(stream, pid: int, times: list[float], texts: list[str]) -> None:
    """Record the CPU time of process ``pid`` and the text of every write to ``stream`` until it closes."""
    while chunk := os.read(stream.fileno(), 65536):
        times.append(_cpu_seconds(pid))
        texts.append(chunk.decode(errors="replace"))


def run(n: int, n_steps: int, threads: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "inputs.pt"
        torch.save(torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(0)), inputs)
        model = f"{Path(__file__).resolve()}:case3_model"
        argv = [sys.executable, "-m", "captum_layerpair", "report", "--model", model, "--inputs", str(inputs),
                "--source", "conv2", "--target", "embed", "--method", "IntegratedGradients",
                "--method-kwargs", json.dumps({"n_steps": n_steps}), "--threads", str(threads), "--out",
                str(Path(folder) / "report"), *extra]
        start = time.monotonic()
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        times: list[float] = [0.0]
        texts: list[str] = ["(start)"]
        watcher = threading.Thread(target=_watch, args=(child.stderr, child.pid, times, texts))
        watcher.start()
        _, status, usage = os.wait4(child.pid, 0)
        end = time.monotonic()
        watcher.join()
        out = child.stdout.read().decode()
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise SystemExit(f"the report failed (exit {child.returncode}):\n{out}")
        cpu = usage.ru_utime + usage.ru_stime
        gaps = [b - a for a, b in zip(times, times[1:] + [cpu])]
        longest = max(range(len(gaps)), key=gaps.__getitem__)
        after = [line for line in "".join(texts[:longest + 1]).replace("\r", "\n").splitlines() if line.strip()][-1:]
        return {"command": " ".join(argv[2:]), "peak_rss_gb": usage.ru_maxrss / 1e6, "wall_s": end - start,
                "cpu_s": cpu, "longest_silence_s": gaps[longest],
                "longest_silence_after": after[0][:100], "stdout": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 4, n_steps = 4 (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the report (default: 1)")
    args, extra = parser.parse_known_args()
    n, n_steps = (4, 4) if args.quick else (32, 32)
    result = run(n, n_steps, args.threads, extra)
    print(result["stdout"].rstrip())
    print(f"case 3 (N = {n}, IG n_steps = {n_steps}, {args.threads} thread(s)"
          f"{', ' + ' '.join(extra) if extra else ', defaults'}):")
    print(f"  peak RSS {result['peak_rss_gb']:.2f} GB, wall {result['wall_s']:.0f} s, CPU {result['cpu_s']:.0f} s, "
          f"longest CPU time without progress output {result['longest_silence_s']:.1f} s (after: "
          f"{result['longest_silence_after']!r})")


if __name__ == "__main__":
    main()
