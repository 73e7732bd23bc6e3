"""Network Dissection over 2 processes (gloo, spawned from pytest) equals one process exactly.

Each process dissects its own shard; thresholds come from the merged top-q buffers and IoU from the summed counts,
so thresholds, counts and IoU must be bit-identical to a single-process run on the whole data: with uneven shards,
with unbounded buffers of different widths, and with a process that holds no data at all.
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from captum_layerpair.datasets import make_blob_images
from captum_layerpair.metrics.network_dissection import DissectionResult, NetworkDissection

WORLD = 2
N = 37  # odd: the shards differ in size
CATEGORIES = ["shape", "shape", "size", "size"]


class ElementwiseUnits(nn.Module):
    """``[N, 1, 16, 16] -> [N, 5, 8, 8]``: unit ``u`` is ``relu(w_u x + b_u)`` average-pooled; unit 4 is dead.

    Only element-wise operations and pooling, so a sample's activations do not depend on what else is in its batch
    (a convolution's may, through the choice of kernel), and exact equality across shardings is a fair demand.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.tensor([1.0, -0.5, 2.0, 0.3, 0.0]))
        self.register_buffer("b", torch.tensor([0.0, 0.4, -0.2, 0.1, 0.0]))
        self.units = nn.ReLU()
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.units(x * self.w[None, :, None, None] + self.b[None, :, None, None]))


def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    data = make_blob_images(N, image_size=16, noise=0.05, seed=3)
    masks = data.masks.clone()
    masks[::4, 2:] = False  # partially annotated: some images lack category "size"
    return data.images, masks


def dissection(**options) -> NetworkDissection:
    return NetworkDissection(ElementwiseUnits(), "pool", top_quantile=0.1, concept_categories=CATEGORIES, **options)


def run_protocol(metric: NetworkDissection, x: torch.Tensor, masks: torch.Tensor) -> DissectionResult:
    for start in range(0, len(x), 5):
        metric.update(x[start:start + 5])
    metric.compute_thresholds()
    for start in range(0, len(x), 5):
        metric.update(x[start:start + 5], masks[start:start + 5])
    return metric.compute()


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    try:
        torch.set_num_threads(1)
        x, masks = dataset()
        strided = slice(rank, None, WORLD)  # 19 and 18 samples
        split = slice(0, 25) if rank == 0 else slice(25, N)  # 25 and 12 samples
        everything = slice(0, N) if rank == 0 else slice(0, 0)  # the second process holds nothing
        results = {
            "evaluate": dissection().evaluate(x[strided], masks[strided], batch_size=4),
            "unbounded": run_protocol(dissection(), x[split], masks[split]),
            "bounded": run_protocol(dissection(n_samples=N), x[split], masks[split]),
            "empty process": run_protocol(dissection(), x[everything], masks[everything]),
        }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process_exactly(tmp_path):
    context = mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + 300
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the distributed dissection did not finish within 300 s")
    x, masks = dataset()
    single = dissection().evaluate(x, masks, batch_size=6)
    assert single.detectors.numel() > 0 and 4 not in single.detectors.tolist()  # a meaningful case; dead unit 4
    for rank in range(WORLD):
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for name, result in results.items():
            for field in ("thresholds", "iou", "intersection", "unit_area", "concept_area"):
                assert torch.equal(getattr(result, field), getattr(single, field)), (rank, name, field)
            assert result.n_samples == N
