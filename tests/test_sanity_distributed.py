"""ModelParameterRandomization as a torchmetrics Metric: batching, ranks, dataset indices, MetricCollection.

The distributed test spawns two gloo processes from pytest and checks that their gathered result equals a
single-process run exactly: the same per-sample similarities, in the same (dataset-index) order, and the same means.
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from captum.attr import GradientShap, InputXGradient, Saliency
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset
from torchmetrics import MetricCollection

from captum_layerpair import LayerPairAttribution
from captum_layerpair._random import seeded
from captum_layerpair.distributed import IndexedDataset, shard_indices, split_batch
from captum_layerpair.models import ConvEncoder
from captum_layerpair.sanity import ModelParameterRandomization

N_SAMPLES = 9  # odd, so that DistributedSampler pads one rank with a repeated sample
# A method that draws (each sample alone, with draws from its index) and a deterministic one run with
# batch_invariant=True: both give bit-identical per-sample values in any batching.
METHODS = {"GradientShap": (GradientShap, {"input_baselines": torch.zeros(3, 1, 8, 8), "n_samples": 3}),
           "InputXGradient": (InputXGradient, {})}


def problem() -> tuple[nn.Module, TensorDataset]:
    """A small encoder with a head after the embedding, and nine 8x8 images (the same in every process)."""
    model = nn.Sequential()
    model.add_module("encoder", ConvEncoder(1, embed_dim=4, image_size=8, seed=0))
    with seeded(0):
        model.add_module("head", nn.Linear(4, 3))
    images = torch.rand(N_SAMPLES, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    return model.eval(), TensorDataset(images, torch.zeros(N_SAMPLES))


def check(model: nn.Module, method: type, **kwargs) -> ModelParameterRandomization:
    lp = LayerPairAttribution(model, "encoder.act1", "encoder.embed", method=method)
    kwargs.setdefault("batch_invariant", method is InputXGradient)
    return ModelParameterRandomization(lp, similarity=("spearman_abs", "cosine"), seed=3, **kwargs)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One rank: each method over a padded DistributedSampler shard (evaluate), and over a padding-free shard fed
    to update() by hand; results and this rank's stderr (progress bars) go to ``out``."""
    torch.set_num_threads(1)
    with open(Path(out) / f"stderr{rank}.txt", "w") as sys.stderr:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        try:
            model, dataset = problem()
            results = {}
            for name, (method, kwargs) in METHODS.items():
                sampler = DistributedSampler(IndexedDataset(dataset), shuffle=True, seed=1)
                loader = DataLoader(IndexedDataset(dataset), batch_size=2, sampler=sampler)
                results[name] = check(model, method, show_progress=True).evaluate(loader, **kwargs)
                metric = check(model, method)
                for batch in DataLoader(Subset(IndexedDataset(dataset), shard_indices(N_SAMPLES)), batch_size=4):
                    inputs, indices = split_batch(batch)
                    metric.update(inputs, indices=indices, **kwargs)
                results[f"{name} update"] = metric.compute()
            torch.save({key: (r.indices, r.per_sample, r.similarity) for key, r in results.items()},
                       Path(out) / f"rank{rank}.pt")
        finally:
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_give_the_single_process_result_exactly(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    model, dataset = problem()
    for name, (method, kwargs) in METHODS.items():
        single = check(model, method).evaluate(DataLoader(IndexedDataset(dataset), batch_size=4), **kwargs)
        assert torch.equal(single.indices, torch.arange(N_SAMPLES))
        for key in (name, f"{name} update"):
            for indices, per_sample, similarity in (r[key] for r in ranks):  # every rank: the whole dataset
                assert torch.equal(indices, single.indices), key  # the padded repeat counts once
                for measure in single.similarity:
                    assert torch.equal(per_sample[measure], single.per_sample[measure]), (key, measure)
                    assert torch.equal(similarity[measure], single.similarity[measure]), (key, measure)
    stderr = [(tmp_path / f"stderr{r}.txt").read_text() for r in range(2)]
    assert "cascading randomisation" in stderr[0] and "cascading randomisation" not in stderr[1]


def test_draws_and_results_do_not_depend_on_batching_or_sample_order():
    model, dataset = problem()
    for method, kwargs in METHODS.values():
        whole = check(model, method).evaluate(dataset.tensors[0], **kwargs)
        shuffled = DataLoader(IndexedDataset(dataset), batch_size=4, shuffle=True,
                              generator=torch.Generator().manual_seed(0))
        batched = check(model, method).evaluate(shuffled, **kwargs)
        assert torch.equal(batched.indices, whole.indices)
        for measure in whole.per_sample:
            assert torch.equal(batched.per_sample[measure], whole.per_sample[measure])


def test_whole_batch_methods_agree_across_batchings_up_to_rounding():
    """Without batch_invariant a deterministic method runs on whole batches: per-sample values then agree across
    batchings up to float rounding (kernels may round a sample differently in batches of other sizes)."""
    model, dataset = problem()
    whole = check(model, InputXGradient, batch_invariant=False).evaluate(dataset.tensors[0])
    batched = check(model, InputXGradient, batch_invariant=False).evaluate(
        DataLoader(IndexedDataset(dataset), batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(0)))
    for measure in whole.per_sample:
        torch.testing.assert_close(batched.per_sample[measure], whole.per_sample[measure], rtol=0, atol=1e-5)


def test_a_sample_is_compared_on_draws_of_its_own():
    """A drawing method attributes each sample with draws seeded by (seed, its index): the same sample under
    another index gets other draws, under the same index the same ones, whoever its batch-mates are."""
    model, dataset = problem()
    x = dataset.tensors[0][:3]
    metric = check(model, GradientShap)
    kwargs = METHODS["GradientShap"][1]
    first = metric.evaluate(x, **kwargs).per_sample["cosine"][:, 0]
    metric.reset()
    metric.update(x[:1], indices=[0], **kwargs)
    assert torch.equal(metric.compute().per_sample["cosine"][:, 0], first)
    metric.reset()
    metric.update(x[:1], indices=[7], **kwargs)
    assert not torch.equal(metric.compute().per_sample["cosine"][1:, 0], first[1:])


def test_update_compute_reset_and_metric_collection():
    model, dataset = problem()
    x = dataset.tensors[0]
    metric = check(model, Saliency)
    metric.update(x[:4])
    metric.update(x[4:])  # numbered 4 .. 8 after the first batch
    accumulated = metric.compute()
    whole = check(model, Saliency).evaluate(x)
    assert torch.equal(accumulated.indices, whole.indices)
    assert torch.equal(accumulated.per_sample["cosine"], whole.per_sample["cosine"])
    assert accumulated.similarity["spearman_abs"].shape == (len(accumulated.layer_names),)
    batch_value = metric(x[:2])  # torchmetrics' forward: this batch's result, and accumulate
    assert torch.equal(batch_value.per_sample["cosine"], whole.per_sample["cosine"][:, :2])
    assert len(metric.compute().indices) == N_SAMPLES + 2  # numbered 9, 10: the numbering goes on
    metric.reset()
    with pytest.raises(ValueError, match="update\\(\\) was never called"), pytest.warns(UserWarning, match="before"):
        metric.compute()
    collection = MetricCollection({"saliency": check(model, Saliency), "ixg": check(model, InputXGradient)})
    collection.update(x)
    results = collection.compute()
    assert set(results) == {"saliency", "ixg"} and results["ixg"].method == "InputXGradient"
    assert torch.equal(results["saliency"].per_sample["cosine"], whole.per_sample["cosine"])


def test_one_randomised_module_still_gives_one_value_per_measure():
    model, dataset = problem()
    result = check(model, Saliency, layers=["encoder.embed"]).evaluate(dataset.tensors[0])
    assert result.similarity["cosine"].shape == (1,) and result.per_sample["cosine"].shape == (1, N_SAMPLES)


def test_index_errors():
    model, dataset = problem()
    metric = check(model, Saliency)
    with pytest.raises(ValueError, match="one dataset index per sample: 3 samples, 2 indices"):
        metric.update(dataset.tensors[0][:3], indices=[0, 1])
    with pytest.raises(TypeError, match="batches must be input tensors.*got a str"):
        metric.evaluate(["not a batch"])
