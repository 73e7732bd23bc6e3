"""Latent scores over a dataset on N processes, with ``torchrun``: one result, the same for every N.

    torchrun --nproc_per_node 2 benchmarks/distributed_scores.py --out scores_2.json
    torchrun --nproc_per_node 1 benchmarks/distributed_scores.py --out scores_1.json --check scores_2.json

Each process scores its share of the 297 held-out digits (``shard_loader``: contiguous runs of whole batches, no
padding) with the demo's encoder (``conv2`` -> 8-d ``embed``, Integrated Gradients, 16 steps, black baseline):
calibrated informativeness (shuffled-pixel noise) and disentanglement, each with the random-model and null
baselines. ``evaluate`` gathers every process's per-sample values (gloo), so rank 0 writes the whole dataset's
result: per-sample values with their dataset indices, means, the wall time of the scoring (from a barrier before
to the gathered result) and each process's CPU time. ``--check`` compares the values with an earlier result bit for
bit. Without ``torchrun`` the script runs as one process.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from captum_layerpair import LayerPairAttribution
from captum_layerpair.demo import default_encoder, digits
from captum_layerpair.metrics import DisentanglementScore, InformativenessScore, ScoreSummary, shard_loader

ATTRIBUTE = {"n_steps": 16, "input_baselines": 0.0}


def flatten(summary: ScoreSummary, prefix: str = "") -> dict[str, Any]:
    """Means, per-sample values and indices of a summary and its nested baselines."""
    out = {f"{prefix}mean": summary.mean, f"{prefix}values": summary.values.tolist(),
           f"{prefix}indices": summary.indices.tolist()}
    for key in ("calibrated", "random_model", "null"):
        if getattr(summary, key) is not None:
            out.update(flatten(getattr(summary, key), f"{prefix}{key}."))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("distributed_scores.json"))
    parser.add_argument("--check", type=Path, help="an earlier result whose per-sample values must be identical")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--samples", type=int, default=None, help="score the first n held-out digits (default 297)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show-progress", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    try:
        images, _ = digits("test")
        dataset = TensorDataset(images[:args.samples])
        lp = LayerPairAttribution(default_encoder(), "conv2", "embed", method="IntegratedGradients")
        scores = [InformativenessScore(lp, calibrate=True, noise="shuffle"), DisentanglementScore(lp)]
        loader = shard_loader(dataset, batch_size=args.batch_size)
        if distributed:
            dist.barrier()
        start, cpu_start = time.perf_counter(), time.process_time()
        summaries = {score.name: score.evaluate(loader, random_model=True, null=True, seed=args.seed,
                                                show_progress=args.show_progress, **ATTRIBUTE) for score in scores}
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        cpu_per_process = [cpu]
        if distributed:
            cpu_per_process = [0.0] * world
            dist.all_gather_object(cpu_per_process, cpu)
        if rank != 0:
            return
        values = {name: flatten(summary) for name, summary in summaries.items()}
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
        result = {"processes": world, "threads_per_process": args.threads, "n_samples": len(dataset),
                  "batch_size": args.batch_size, "seed": args.seed, "wall_seconds": round(seconds, 2),
                  "cpu_seconds_per_process": [round(c, 2) for c in cpu_per_process], "digest": digest, "scores": values}
        args.out.write_text(json.dumps(result, indent=1))
        print(f"{world} process(es) x {args.threads} thread(s): scored {len(dataset)} samples in {seconds:.1f} s "
              f"(CPU s per process: {', '.join(f'{c:.1f}' for c in cpu_per_process)}); values digest {digest}; "
              f"wrote {args.out}")
        for summary in summaries.values():
            print(f"  {summary}".replace("\n", "\n  "))
        if args.check is not None:
            reference = json.loads(args.check.read_text())
            same = reference["scores"] == values
            print(f"identical to {args.check} ({reference['processes']} process(es), "
                  f"{reference['wall_seconds']} s): {same}")
            if not same:
                raise SystemExit(1)
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
