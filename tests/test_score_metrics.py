"""The latent scores as torchmetrics metrics: the score protocol and registry, update / compute / reset,
MetricCollection, device-aware state, per-sample draws independent of batching and processes, dataset indices,
calibrated informativeness, the noise registry (shuffle, integer inputs, private generators) and input checks."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient, Saliency
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import Metric, MetricCollection

from captum_layerpair import LayerPairAttribution
from captum_layerpair._random import rng_state
from captum_layerpair.metrics import (NOISES, SCORES, DisentanglementScore, Indexed, IndexedDataset,
                                      InformativenessScore, ScoreAccumulator, ShardSampler,
                                      calibrated_informativeness_score, informativeness_score, make_noise,
                                      shard_loader)
from captum_layerpair.models import ConvEncoder


@pytest.fixture
def layer_pair():
    encoder = ConvEncoder(channels=(3, 4, 4), embed_dim=3, image_size=8, seed=0).eval()
    return LayerPairAttribution(encoder, "conv2", "embed", method=InputXGradient)


def all_scores(layer_pair):
    return [InformativenessScore(layer_pair, calibrate=True), InformativenessScore(layer_pair, combine="per_unit"),
            DisentanglementScore(layer_pair)]


# ---- protocol and registry -----------------------------------------------------------------------------------------

def test_every_registered_score_declares_the_protocol(layer_pair):
    assert set(SCORES) == {"informativeness", "disentanglement"}
    for name, cls in SCORES.items():
        assert cls.name == name and issubclass(cls, Metric)
        assert isinstance(cls.higher_is_better, bool) and isinstance(cls.is_differentiable, bool)
        assert isinstance(cls.description, str) and cls.description.strip()
        assert cls(layer_pair).score(torch.rand(2, 1, 8, 8)).shape == (2,)


# ---- update / compute / reset ----------------------------------------------------------------------------------------

def test_update_and_compute_give_the_scores_of_the_whole_dataset_in_any_batching(layer_pair):
    x = torch.rand(10, 1, 8, 8)
    for score in all_scores(layer_pair):
        whole = score.score(x)
        for sizes in ([4, 6], [2, 2, 2, 4]):
            score.reset()
            for chunk in x.split(sizes):
                score.update(chunk)
            summary = score.compute()
            values = summary.values if summary.calibrated is None else summary.calibrated.values
            assert torch.allclose(values, whole, rtol=1e-5, atol=1e-7), score
            assert torch.equal(summary.indices, torch.arange(10))
            assert summary.mean == pytest.approx(summary.values.double().mean().item())


def test_calling_the_metric_updates_and_returns_the_batch_summary(layer_pair):
    score = DisentanglementScore(layer_pair)
    x = torch.rand(6, 1, 8, 8)
    first = score(x[:4])
    assert first.n == 4 and torch.equal(first.indices, torch.arange(4))
    assert torch.allclose(first.values, score.score(x[:4]))
    score(x[4:])
    assert score.compute().n == 6 and torch.equal(score.compute().indices, torch.arange(6))


def test_metric_collection_updates_and_computes_both_scores(layer_pair):
    x = torch.rand(7, 1, 8, 8)
    collection = MetricCollection([InformativenessScore(layer_pair, calibrate=True), DisentanglementScore(layer_pair)])
    for chunk in x.split(4):
        collection.update(chunk)
    result = collection.compute()
    assert set(result) == {"InformativenessScore", "DisentanglementScore"}
    assert torch.allclose(result["InformativenessScore"].calibrated.values,
                          InformativenessScore(layer_pair, calibrate=True).score(x), rtol=1e-5)
    assert torch.allclose(result["DisentanglementScore"].values, DisentanglementScore(layer_pair).score(x))
    collection.reset()
    assert all(m.update_count == 0 for m in collection.values())


def test_state_is_kept_on_the_metric_device_and_moves_with_to(layer_pair):
    score = InformativenessScore(layer_pair, calibrate=True)
    score.update(torch.rand(3, 1, 8, 8))
    assert {s.device.type for name in ("indices", "values", "null_values") for s in getattr(score, name)} == {"cpu"}
    score.to("meta")
    assert score.device.type == "meta"
    assert {s.device.type for name in ("indices", "values", "null_values") for s in getattr(score, name)} == {"meta"}


def test_evaluate_leaves_the_score_state_alone_and_carries_indices(layer_pair):
    score = InformativenessScore(layer_pair)
    x = torch.rand(5, 1, 8, 8)
    score.update(x[:2])
    summary = score.evaluate(DataLoader(IndexedDataset(TensorDataset(x)), batch_size=2), null=True)
    assert score.compute().n == 2 and summary.n == 5 and summary.null.n == 5
    assert torch.equal(summary.indices, torch.arange(5))


# ---- per-sample randomness: batching, processes and the caller's RNG ------------------------------------------------

def test_shards_of_any_process_count_give_the_single_process_values_exactly(layer_pair):
    x = torch.rand(11, 1, 8, 8)
    dataset = TensorDataset(x)
    for score in (InformativenessScore(layer_pair, calibrate=True, noise="shuffle"),
                  InformativenessScore(layer_pair.on(layer_pair.forward_func), n_noise=2),
                  DisentanglementScore(LayerPairAttribution(layer_pair.forward_func, "conv2", "embed",
                                                            method="paper_expected_gradients"))):
        single = score.evaluate(shard_loader(dataset, batch_size=2, num_replicas=1, rank=0), random_model=True)
        for world in (2, 4):
            shards = [score.evaluate(shard_loader(dataset, batch_size=2, num_replicas=world, rank=r),
                                     random_model=True) for r in range(world)]
            for key in ("values", "indices"):
                joined = torch.cat([getattr(s, key) for s in shards])
                assert torch.equal(joined, getattr(single, key)), (score, world, key)
                joined = torch.cat([getattr(s.random_model, key) for s in shards])
                assert torch.equal(joined, getattr(single.random_model, key))


def test_scoring_reads_and_leaves_no_global_random_state(layer_pair):
    x = torch.rand(4, 1, 8, 8)
    score = InformativenessScore(layer_pair, calibrate=True)
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    before = rng_state()
    first = score.score(x)
    score.evaluate([x], random_model=True, null=True)
    after = rng_state()
    assert torch.equal(before.torch_cpu, after.torch_cpu)
    assert all(np.array_equal(a, b) for a, b in zip(before.numpy[1:2], after.numpy[1:2]))
    assert before.python == after.python
    torch.manual_seed(2)
    assert torch.equal(score.score(x), first)  # the caller's seed is not the noise's


@pytest.mark.parametrize("noise", sorted(NOISES))
def test_each_sample_noise_depends_only_on_seed_stream_and_index(noise):
    x = torch.rand(6, 2, 5, 5)
    indices = torch.tensor([7, 3, 11, 0, 5, 9])
    batch = make_noise(x, noise, seed=4, indices=indices)
    for n in range(6):
        alone = make_noise(x[n:n + 1], noise, seed=4, indices=indices[n:n + 1])
        assert torch.equal(alone[0], batch[n])
    assert not torch.equal(make_noise(x, noise, seed=4, indices=indices + 1), batch)
    assert not torch.equal(make_noise(x, noise, seed=5, indices=indices), batch)
    assert not torch.equal(make_noise(x, noise, seed=4, indices=indices, stream="null"), batch)
    torch.manual_seed(0)
    assert not torch.equal(make_noise(x, noise, seed=0), torch.rand(6, 2, 5, 5))  # no shared seed stream


# ---- calibrated informativeness ----------------------------------------------------------------------------------

def test_calibrated_score_is_one_when_the_data_maps_equal_the_null_noise_maps():
    A, A_noise = torch.rand(3, 4, 2, 5, 5), torch.rand(2, 3, 4, 2, 5, 5)
    assert torch.equal(calibrated_informativeness_score(A, A_noise, A.clone()), torch.ones(3))
    other = torch.rand(3, 4, 2, 5, 5)
    expected = informativeness_score(A, A_noise) / informativeness_score(other, A_noise)
    assert torch.allclose(calibrated_informativeness_score(A, A_noise, other), expected)


def test_calibrated_score_of_a_model_on_inputs_that_are_its_null_noise_is_one(layer_pair):
    # the data is exactly the independent noise input the score draws for I_null: same maps, so I / I_null = 1
    indices = torch.arange(5)
    x = make_noise(torch.zeros(5, 1, 8, 8), "uniform", seed=3, indices=indices, stream="null")
    score = InformativenessScore(layer_pair, calibrate=True, seed=3, n_noise=2)
    assert torch.equal(score.score(x, indices=indices), torch.ones(5))
    summary = score.evaluate([x], null=True, seed=3)
    assert summary.calibrated.mean == 1.0 and summary.null.mean == summary.mean


def test_calibrated_score_is_one_for_maps_that_do_not_depend_on_the_input():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(),
                          nn.Linear(2 * 36, 3)).eval()
    lp = LayerPairAttribution(model, "1", "3", method=Saliency)  # linear after the source: constant gradients
    score = InformativenessScore(lp, calibrate=True)
    x = torch.rand(4, 1, 6, 6)
    assert torch.equal(InformativenessScore(lp).score(x), torch.zeros(4))
    assert torch.equal(score.score(x), torch.ones(4))


def test_calibrated_score_of_data_drawn_like_the_noise_is_about_one(layer_pair):
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    summary = InformativenessScore(layer_pair, calibrate=True, n_noise=4).evaluate([x], null=True)
    ratio_of_means = summary.mean / summary.null.mean
    assert abs(ratio_of_means - 1) < 0.1 and abs(summary.calibrated.mean - 1) < 0.25


def test_calibrated_score_with_undefined_null_is_an_error():
    A = torch.rand(2, 3, 1, 4, 4)
    constant = torch.ones(2, 3, 1, 4, 4)
    with pytest.raises(ValueError, match="undefined for 2 samples: their null score I_null is 0"):
        calibrated_informativeness_score(A, constant, constant.clone())


def test_per_unit_combine_is_the_mean_of_each_unit_score():
    A, A_noise = torch.randn(3, 4, 2, 5, 5, dtype=torch.float64), torch.randn(3, 4, 2, 5, 5, dtype=torch.float64)

    def norm(m: np.ndarray) -> np.ndarray:
        return (m - m.min()) / (m.max() - m.min())

    expected = [np.mean([np.mean(np.abs(norm(np.abs(a[k]).sum(0)) - norm(np.abs(z[k]).sum(0)))) for k in range(4)])
                for a, z in zip(A.numpy(), A_noise.numpy())]
    np.testing.assert_allclose(informativeness_score(A, A_noise, combine="per_unit").numpy(), expected, rtol=1e-12)


# ---- noises --------------------------------------------------------------------------------------------------------

def test_shuffle_keeps_each_sample_histogram_and_moves_channels_together():
    x = torch.rand(4, 1, 6, 6)
    x = torch.cat([x, 2 * x], 1)  # channel 1 = 2 * channel 0
    xi = make_noise(x, "shuffle", seed=0)
    assert torch.equal(xi.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)
    assert torch.equal(xi[:, 1], 2 * xi[:, 0]) and not torch.equal(xi, x)
    ids = torch.randint(0, 50, (3, 9))
    assert torch.equal(make_noise(ids, "shuffle").sort(1).values, ids.sort(1).values)


def test_gaussian_noise_matches_each_sample_mean_and_std_per_channel():
    x = torch.stack([torch.rand(50, 30, 30) * 2 + 3, torch.rand(50, 30, 30) * 0.1], 1)  # [50, 2, 30, 30]
    xi = make_noise(x, "gaussian")
    mean, std = x.flatten(2).mean(2), x.flatten(2).std(2)
    assert ((xi.flatten(2).mean(2) - mean).abs() < 4 * std / 30).all()  # 4 standard errors of a mean of 900
    assert torch.allclose(xi.flatten(2).std(2), std, rtol=0.12)  # 5 standard errors of a std of 900


class TokenEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(20, 4)
        self.conv = nn.Conv1d(4, 5, 3, padding=1)
        self.embed = nn.Linear(5 * 6, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embedding(ids).transpose(1, 2)  # [N, 4, L]
        return self.embed(torch.relu(self.conv(h)).flatten(1))


def test_integer_inputs_are_scored_with_a_callable_or_a_token_aware_noise():
    lp = LayerPairAttribution(TokenEncoder(), "conv", "embed", method=InputXGradient)
    ids = torch.randint(3, 17, (4, 6))
    calls = []

    def noise(inputs: torch.Tensor) -> torch.Tensor:
        calls.append(inputs.dtype)
        return torch.randint(0, 20, inputs.shape)

    assert InformativenessScore(lp, noise=noise).score(ids).shape == (4,) and calls == [torch.int64]
    for name in ("uniform", "shuffle"):
        assert torch.isfinite(InformativenessScore(lp, noise=name, calibrate=True).score(ids)).all()
    uniform = make_noise(ids, "uniform")
    assert uniform.dtype == ids.dtype
    assert (uniform.min(1).values >= ids.min(1).values).all() and (uniform.max(1).values <= ids.max(1).values).all()
    summary = DisentanglementScore(lp).evaluate([ids[:2], ids[2:]], null=True)
    assert summary.n == summary.null.n == 4
    with pytest.raises(TypeError, match="gaussian noise needs floating-point inputs.*a callable"):
        InformativenessScore(lp, noise="gaussian").score(ids)


# ---- checks --------------------------------------------------------------------------------------------------------

def test_non_finite_inputs_and_attributions_are_refused(layer_pair):
    x = torch.rand(3, 1, 8, 8)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="inputs contains 1 NaN or inf"):
        InformativenessScore(layer_pair).score(x)
    broken = ConvEncoder(channels=(3, 4, 4), embed_dim=3, image_size=8, seed=0).eval()
    with torch.no_grad():
        broken.conv3.weight.fill_(float("nan"))
    lp = LayerPairAttribution(broken, "conv2", "embed", method=InputXGradient)
    # the engine refuses the NaN target output before any attribution (naming the model's weights)
    with pytest.raises(ValueError, match="target layer 'embed'.*weights.*NaN or inf"):
        DisentanglementScore(lp).score(torch.rand(2, 1, 8, 8))


def test_bad_options_and_indices_name_what_is_allowed(layer_pair):
    with pytest.raises(ValueError, match="unknown noise 'shufle'. Did you mean: 'shuffle'"):
        InformativenessScore(layer_pair, noise="shufle")
    with pytest.raises(ValueError, match="unknown combine 'unit'.*'per_unit'"):
        InformativenessScore(layer_pair, combine="unit")
    with pytest.raises(TypeError, match="calibrate must be True or False"):
        InformativenessScore(layer_pair, calibrate="yes")
    with pytest.raises(ValueError, match=r"indices must be 2 integer dataset indices .* shape \(3,\)"):
        DisentanglementScore(layer_pair).update(torch.rand(2, 1, 8, 8), indices=[0, 1, 2])


def test_repeated_indices_are_dropped_when_their_values_agree_and_refused_otherwise():
    acc = ScoreAccumulator("s")
    acc.update(torch.tensor([0.1, 0.2, 0.3]), indices=[0, 1, 2])
    acc.update(torch.tensor([0.3, 0.4]), indices=[2, 3])  # index 2 again: a padding sampler's repeat
    summary = acc.compute()
    assert torch.equal(summary.indices, torch.arange(4))
    assert torch.allclose(summary.values, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    acc.update(torch.tensor([0.9]), indices=[1])
    with pytest.raises(ValueError, match="dataset index 1 was scored twice with different values.*IndexedDataset"):
        acc.compute()


@given(st.integers(0, 40), st.integers(1, 5), st.integers(1, 6))
def test_shards_cover_every_index_once_in_whole_batches(n, world, batch_size):
    shards = [list(ShardSampler(n, world, rank, batch_size)) for rank in range(world)]
    assert [i for shard in shards for i in shard] == list(range(n))
    assert all(shard[0] % batch_size == 0 for shard in shards if shard)


def test_indexed_batches_carry_their_dataset_indices():
    batch = next(iter(DataLoader(IndexedDataset(TensorDataset(torch.rand(5, 2), torch.zeros(5))), batch_size=3)))
    assert isinstance(batch, Indexed) and torch.equal(batch.index, torch.arange(3))
    with pytest.raises(TypeError, match="map-style dataset"):
        IndexedDataset(iter([1, 2]))
