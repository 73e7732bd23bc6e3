"""Across torch.distributed processes (2 gloo processes spawned from pytest): the latent scores, their baselines, a
MetricCollection and the plain accumulator equal a single-process run exactly (same per-sample values, same dataset
indices in the same order); a padding sampler's repeats are dropped; the progress bar shows on rank 0 only."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from captum.attr import InputXGradient
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from torchmetrics import MetricCollection

from captum_layerpair import LayerPairAttribution
from captum_layerpair.metrics import (DisentanglementScore, IndexedDataset, InformativenessScore, ScoreAccumulator,
                                      ScoreSummary, shard_loader)
from captum_layerpair.models import ConvEncoder

N_SAMPLES, BATCH, SEED = 11, 3, 5


def _flat(summary: ScoreSummary, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every per-sample tensor of a summary and of its nested summaries, by path."""
    out = {f"{prefix}values": summary.values, f"{prefix}indices": summary.indices}
    for key in ("calibrated", "random_model", "null"):
        nested = getattr(summary, key)
        if nested is not None:
            out.update(_flat(nested, f"{prefix}{key}."))
    return out


def _run_all(rank: int, world: int) -> dict[str, Any]:
    """What each process computes; with ``world == 1`` (no process group) the single-process reference."""
    torch.manual_seed(100 + rank)  # different global RNG states per process must not matter
    encoder = ConvEncoder(channels=(3, 4, 4), embed_dim=3, image_size=8, seed=0).eval()
    lp = LayerPairAttribution(encoder, "conv2", "embed", method=InputXGradient)
    data = TensorDataset(torch.rand(N_SAMPLES, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    results: dict[str, Any] = {}
    scores = {"informativeness": InformativenessScore(lp, calibrate=True, noise="shuffle", n_noise=2),
              "disentanglement": DisentanglementScore(lp)}
    stderr = io.StringIO()
    for name, score in scores.items():
        with contextlib.redirect_stderr(stderr):
            summary = score.evaluate(shard_loader(data, batch_size=BATCH), random_model=True, null=True, seed=SEED,
                                     show_progress=True)
        results[name] = _flat(summary)
    results["progress"] = stderr.getvalue()
    if world > 1:  # DistributedSampler repeats sample 0 on the last process; repeats are dropped by index
        loader = DataLoader(IndexedDataset(data), batch_size=BATCH, sampler=DistributedSampler(data, shuffle=False))
        results["padded"] = _flat(InformativenessScore(lp, calibrate=True, noise="shuffle", n_noise=2).evaluate(
            loader, seed=SEED))
    collection = MetricCollection([InformativenessScore(lp, calibrate=True, seed=SEED), DisentanglementScore(lp)])
    for batch in shard_loader(data, batch_size=BATCH):
        collection.update(batch)
    results["collection"] = {key: _flat(summary) for key, summary in collection.compute().items()}
    accumulator = ScoreAccumulator()  # rank 0 adds 0 1 2 at indices 0 1 2, rank 1 adds 10 .. 13 at 3 .. 6
    for r in ([rank] if world > 1 else [0, 1]):
        values = torch.arange(3 + r, dtype=torch.float64) + 10 * r
        accumulator.update(values, indices=torch.arange(3 * r, 3 * r + len(values)))
    summary = accumulator.compute()
    results["accumulator"] = (summary.mean, summary.std, summary.values)
    return results


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(_run_all(rank, world), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        return [torch.load(os.path.join(tmp, f"{rank}.pt")) for rank in range(2)]


@pytest.fixture(scope="module")
def one_process() -> dict[str, Any]:
    return _run_all(0, 1)


def test_scores_of_two_processes_equal_one_process_exactly(two_processes, one_process):
    for results in two_processes:
        for name in ("informativeness", "disentanglement"):
            assert results[name].keys() == one_process[name].keys()
            for path, expected in one_process[name].items():
                assert torch.equal(results[name][path], expected), (name, path)
        assert torch.equal(one_process["informativeness"]["indices"], torch.arange(N_SAMPLES))
        assert {"calibrated.values", "random_model.values", "null.values"} <= set(results["informativeness"])


def test_metric_collection_reduces_across_processes(two_processes, one_process):
    for results in two_processes:
        for key, flat in one_process["collection"].items():
            for path, expected in flat.items():
                assert torch.equal(results["collection"][key][path], expected), (key, path)


def test_padding_sampler_repeats_are_dropped_by_index(two_processes, one_process):
    reference = one_process["informativeness"]
    for results in two_processes:
        padded = results["padded"]
        assert torch.equal(padded["indices"], torch.arange(N_SAMPLES))
        # other batch compositions than one process: equal up to rounding
        for path in ("values", "calibrated.values"):
            assert torch.allclose(padded[path], reference[path], rtol=1e-5, atol=1e-7)


def test_accumulator_state_reduces_across_distributed_ranks(two_processes):
    everything = torch.tensor([0.0, 1, 2, 10, 11, 12, 13])
    for results in two_processes:
        mean, std, values = results["accumulator"]
        assert torch.equal(values, everything)
        assert mean == pytest.approx(everything.mean().item()) and std == pytest.approx(everything.std().item())


def test_progress_bar_shows_on_rank_zero_only(two_processes):
    assert "informativeness score" in two_processes[0]["progress"]
    assert two_processes[1]["progress"] == ""
