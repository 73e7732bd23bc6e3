"""Network Dissection: planted concept detectors are recovered, thresholds are exact quantiles, errors are clear."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset

from captum_layerpair.aggregation import aggregate
from captum_layerpair.datasets import make_blob_images
from captum_layerpair.metrics.network_dissection import DETECTOR_IOU, NetworkDissection, dissect_maps

PERMUTATION = [2, 0, 3, 1]  # unit k detects concept PERMUTATION[k]


class PlantedDetectors(nn.Module):
    """Input: the concept masks as a float image ``[N, 4, S, S]``. ``detect`` is a 1x1 convolution whose unit
    ``k`` copies concept ``PERMUTATION[k]``; ``pool`` halves the resolution; ``head`` is a linear layer."""

    def __init__(self, image_size: int = 16) -> None:
        super().__init__()
        self.detect = nn.Conv2d(4, 4, 1, bias=False)
        with torch.no_grad():
            self.detect.weight.zero_()
            for unit, concept in enumerate(PERMUTATION):
                self.detect.weight[unit, concept] = 1.0
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(4 * (image_size // 2) ** 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.detect(x))))


@pytest.fixture(scope="module")
def blobs():
    data = make_blob_images(120, image_size=16, seed=0)
    return data.masks.float(), data.masks


def test_planted_detectors_are_recovered_with_iou_one(blobs):
    # The detectors' maps are binary. NetDissect segments `activation > threshold`, so the threshold must fall to
    # the background level 0: a top quantile above the concepts' area (about 25% of the pixels) puts it there.
    x, masks = blobs
    result = NetworkDissection(PlantedDetectors(), "detect", top_quantile=0.3).evaluate(x, masks, batch_size=25)
    assert result.best_concept.tolist() == PERMUTATION
    torch.testing.assert_close(result.best_iou, torch.ones(4))
    assert result.detectors.tolist() == [0, 1, 2, 3]
    assert (result.iou.sort(dim=1).values[:, -2] < 0.2).all()  # other concepts overlap little
    assert "4 of 4 units are detectors" in result.summary()


def test_downsampled_detectors_are_recovered_with_iou_near_one(blobs):
    # 8x8 maps upsampled bilinearly to the 16x16 masks; the quantile matches the concepts' area (about 25%).
    x, masks = blobs
    result = NetworkDissection(PlantedDetectors(), "pool", top_quantile=0.25).evaluate(x, masks)
    assert result.best_concept.tolist() == PERMUTATION
    assert (result.best_iou > 0.9).all()


def test_thresholds_are_exact_top_quantiles_whatever_the_batching():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(37, 3, 4, 4, generator=gen)
    masks = torch.rand(37, 2, 8, 8, generator=gen) > 0.5
    model = nn.Sequential(nn.Identity())
    expected = x.transpose(0, 1).flatten(1).sort(dim=1, descending=True).values[:, 6 - 1]  # ceil(0.01 * 592)
    results = [NetworkDissection(model, "0", top_quantile=0.01).evaluate(x, masks, batch_size=b) for b in (1, 10, 37)]
    loader = DataLoader(TensorDataset(x), batch_size=8)
    results.append(NetworkDissection(model, "0", top_quantile=0.01).evaluate(loader, masks))
    for result in results:
        torch.testing.assert_close(result.thresholds, expected)
        torch.testing.assert_close(result.iou, results[0].iou)


def test_shuffled_loader_of_input_mask_pairs_gives_the_same_result(blobs):
    x, masks = blobs
    dissection = NetworkDissection(PlantedDetectors(), "pool", top_quantile=0.25)
    loader = DataLoader(TensorDataset(x, masks), batch_size=16, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    from_loader, from_tensor = dissection.evaluate(loader), dissection.evaluate(x, masks)
    torch.testing.assert_close(from_loader.thresholds, from_tensor.thresholds)
    torch.testing.assert_close(from_loader.iou, from_tensor.iou)


def test_layer_pair_maps_give_each_embedding_dimension_its_concept(blobs):
    # A synthetic layer-pair attribution [N, K, C, h, w] whose dimension k only attributes to concept PERMUTATION[k]
    # (at half resolution), aggregated over channels into [N, K, h, w] maps as the engine's aggregate does.
    _, masks = blobs
    gen = torch.Generator().manual_seed(0)
    regions = nn.functional.avg_pool2d(masks.float(), 2)[:, PERMUTATION]  # [N, K, 8, 8]
    A = regions[:, :, None] * torch.randn(len(masks), 4, 3, 8, 8, generator=gen)
    maps = aggregate(A, over="channels")
    result = dissect_maps(maps, masks, top_quantile=0.1, concept_names=["tl", "tr", "bl", "br"])
    assert result.best_concept.tolist() == PERMUTATION
    assert (result.best_iou > 0.3).all()
    assert "tl" in str(result)
    via_method = NetworkDissection(PlantedDetectors(), "detect", top_quantile=0.1).evaluate_maps(maps, masks)
    torch.testing.assert_close(via_method.iou, result.iou)


def test_detectors_use_the_paper_iou_threshold():
    assert DETECTOR_IOU == 0.04
    gen = torch.Generator().manual_seed(0)
    maps, masks = torch.rand(20, 3, 8, 8, generator=gen), torch.rand(20, 2, 8, 8, generator=gen) > 0.5
    result = dissect_maps(maps, masks)
    assert torch.equal(result.detectors, torch.nonzero(result.best_iou >= 0.04).flatten())


def test_model_mode_and_hooks_are_unchanged_also_after_an_error(blobs):
    x, masks = blobs
    model = PlantedDetectors().train()
    dissection = NetworkDissection(model, model.detect)
    dissection.evaluate(x, masks)
    with pytest.raises(ValueError, match="cannot be matched"):
        dissection.evaluate(x, masks[..., :8, :8])
    assert all(m.training for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())


def test_unknown_layer_name_suggests_close_matches():
    with pytest.raises(ValueError, match="unknown dissected layer 'detector'.*Did you mean: detect"):
        NetworkDissection(PlantedDetectors(), "detector")


@pytest.mark.parametrize("mask_size, match", [
    ((8, 8), r"spatial size 8x8 cannot be matched to maps of size 16x16"),
    ((32, 16), r"spatial size 32x16 cannot be matched"),
])
def test_masks_whose_size_cannot_be_matched_are_rejected(blobs, mask_size, match):
    x, _ = blobs
    masks = torch.ones(len(x), 4, *mask_size, dtype=torch.bool)
    with pytest.raises(ValueError, match=match):
        NetworkDissection(PlantedDetectors(), "detect").evaluate(x, masks)


def test_empty_concepts_are_rejected(blobs):
    x, masks = blobs
    masks = masks.clone()
    masks[:, [1, 3]] = False
    with pytest.raises(ValueError, match=r"concepts \[1, 3\] have no positive pixel"):
        NetworkDissection(PlantedDetectors(), "detect").evaluate(x, masks)
    pairs = [(x[i:i + 40], masks[i:i + 40]) for i in range(0, len(x), 40)]  # streamed: found after the passes
    with pytest.raises(ValueError, match=r"concepts \[1, 3\] have no positive pixel"):
        NetworkDissection(PlantedDetectors(), "detect").evaluate(pairs)


def test_mismatched_sample_counts_are_rejected(blobs):
    x, masks = blobs
    with pytest.raises(ValueError, match="data has 120 samples but concept_masks has 100"):
        NetworkDissection(PlantedDetectors(), "detect").evaluate(x, masks[:100])
    with pytest.raises(ValueError, match="a batch has 20 samples but 10 concept masks"):
        NetworkDissection(PlantedDetectors(), "detect").evaluate([(x[:20], masks[:10])])
    with pytest.raises(ValueError, match="yielded 120 samples but concept_masks has 100"):
        loader = DataLoader(TensorDataset(x), batch_size=40)
        NetworkDissection(PlantedDetectors(), "detect").evaluate(loader, masks[:100])
    oversampled = DataLoader(TensorDataset(x, masks), batch_size=50,
                             sampler=RandomSampler(range(120), replacement=True, num_samples=200))
    with pytest.raises(ValueError, match="yielded 200 samples but 120 were expected"):
        NetworkDissection(PlantedDetectors(), "detect").evaluate(oversampled)
    with pytest.raises(ValueError, match="yielded 80 samples but concept_masks has 120"):
        loader = DataLoader(TensorDataset(x[:80]), batch_size=40)
        NetworkDissection(PlantedDetectors(), "detect").evaluate(loader, masks)


@pytest.mark.parametrize("layer, match", [
    ("head", r"must output one tensor \[N, units, h, w\].*shape \(120, 3\)"),
])
def test_layers_without_spatial_maps_are_rejected(blobs, layer, match):
    x, masks = blobs
    with pytest.raises(ValueError, match=match):
        NetworkDissection(PlantedDetectors(), layer).evaluate(x, masks, batch_size=200)


def test_bad_data_and_arguments_raise_clear_errors(blobs):
    x, masks = blobs
    dissection = NetworkDissection(PlantedDetectors(), "detect")
    with pytest.raises(TypeError, match="re-iterable of batches"):
        dissection.evaluate(iter([(x, masks)]))
    with pytest.raises(ValueError, match="must be binary"):
        dissection.evaluate(x, masks.float() * 0.5)
    with pytest.raises(ValueError, match="required when data is a tensor"):
        dissection.evaluate(x)
    with pytest.raises(ValueError, match=r"top_quantile must \w+ in \(0, 1\)"):
        NetworkDissection(PlantedDetectors(), "detect", top_quantile=1.5)
    with pytest.raises(ValueError, match=r"maps must be a tensor \[N, K, h, w\]"):
        dissect_maps(x[:, 0], masks)


# ---- NetDissect's rules: strict threshold, partially annotated data ----

def test_dead_unit_has_iou_zero_and_is_no_detector(blobs):
    # A unit that never fires has threshold 0; NetDissect segments `activation > threshold`, so it segments nothing.
    x, masks = blobs
    model = PlantedDetectors()
    with torch.no_grad():
        model.detect.weight[1] = 0.0  # unit 1 is dead: all-zero maps
    result = NetworkDissection(model, "detect").evaluate(x, masks)
    assert result.thresholds[1] == 0
    assert torch.equal(result.iou[1], torch.zeros(4))
    assert result.unit_area is not None and torch.equal(result.unit_area[1], torch.zeros(4))
    assert 1 not in result.detectors.tolist()


@pytest.fixture(scope="module")
def partially_annotated(blobs):
    """Blob masks as 4 concepts of 2 categories; every third image is not annotated for category 1 (its masks of
    concepts 2 and 3 are empty although the blobs are there)."""
    x, masks = blobs
    masks = masks.clone()
    masks[::3, 2:] = False
    return x, masks, ["shape", "shape", "size", "size"]


def test_unit_area_rules_differ_only_on_unannotated_images(partially_annotated):
    x, masks, categories = partially_annotated
    results = {rule: NetworkDissection(PlantedDetectors(), "detect", top_quantile=0.3, unit_area=rule,
                                       concept_categories=categories).evaluate(x, masks)
               for rule in ("annotated", "all")}
    annotated, everywhere = results["annotated"], results["all"]
    torch.testing.assert_close(annotated.iou[:, :2], everywhere.iou[:, :2])  # category 0 is annotated everywhere
    # Units 0 and 2 detect concepts 2 and 3 (category 1): counting their firing on the unannotated images as
    # false positives lowers their IoU below 1; NetDissect's rule keeps it at 1.
    torch.testing.assert_close(annotated.iou[[0, 2], [2, 3]], torch.ones(2))
    assert (everywhere.iou[[0, 2], [2, 3]] < 0.8).all()
    # The counts say why: the unit area toward a category-1 concept leaves out the unannotated images.
    assert (annotated.unit_area[:, 2:] < everywhere.unit_area[:, 2:]).all()


def test_concept_categories_must_match_the_concepts(blobs):
    x, masks = blobs
    with pytest.raises(ValueError, match="concept_categories has 3 entries but the masks have 4 concepts"):
        NetworkDissection(PlantedDetectors(), "detect", concept_categories=["a", "b", "c"]).evaluate(x, masks)
    with pytest.raises(ValueError, match="unknown unit_area 'some'.*Allowed: 'all', 'annotated'"):
        NetworkDissection(PlantedDetectors(), "detect", unit_area="some")


# ---- the metric protocol ----

def test_metric_protocol_equals_the_one_call_form(blobs):
    x, masks = blobs
    expected = NetworkDissection(PlantedDetectors(), "pool", top_quantile=0.02).evaluate(x, masks, batch_size=40)
    metric = NetworkDissection(PlantedDetectors(), "pool", top_quantile=0.02, n_samples=len(x))
    metric.update(x[:0])  # an empty batch changes nothing
    for start in range(0, len(x), 32):
        metric.update(x[start:start + 32])
    torch.testing.assert_close(metric.compute_thresholds(), expected.thresholds, rtol=0, atol=0)
    for start in range(0, len(x), 32):
        metric.update(x[start:start + 32], masks[start:start + 32])
    result = metric.compute()
    assert torch.equal(result.iou, expected.iou) and torch.equal(result.intersection, expected.intersection)
    assert result.n_samples == len(x)
    metric.reset()
    assert not metric.thresholds_fixed and metric.top.numel() == 0


def test_bounded_buffer_keeps_ceil_q_n_hw_values_per_unit(blobs):
    x, _ = blobs
    metric = NetworkDissection(PlantedDetectors(), "pool", top_quantile=0.02, n_samples=len(x))
    for start in range(0, len(x), 10):
        metric.update(x[start:start + 10])
    assert metric.top.shape == (4, math.ceil(0.02 * 120 * 8 * 8))
    unbounded = NetworkDissection(PlantedDetectors(), "pool", top_quantile=0.02)
    unbounded.update(x)
    assert unbounded.top.shape == (4, 120 * 8 * 8)
    torch.testing.assert_close(unbounded.compute_thresholds(), metric.compute_thresholds(), rtol=0, atol=0)


def test_merged_metrics_equal_one_metric_on_the_whole_data(blobs):
    # Three parts of different sizes (one empty), with unbounded buffers of different widths: merge_state pads,
    # concatenates the buffers and sums the counts, giving exactly the whole-data thresholds and IoU.
    x, masks = blobs
    whole = NetworkDissection(PlantedDetectors(), "pool", top_quantile=0.02).evaluate(x, masks)
    parts = [slice(0, 70), slice(70, 70), slice(70, 120)]
    metrics = [NetworkDissection(PlantedDetectors(), "pool", top_quantile=0.02) for _ in parts]
    for metric, part in zip(metrics, parts):
        if len(x[part]):
            metric.update(x[part])
    metrics[0].merge_state(metrics[1])
    metrics[0].merge_state(metrics[2])
    thresholds = metrics[0].compute_thresholds()
    assert torch.equal(thresholds, whole.thresholds)
    fixed = [NetworkDissection(PlantedDetectors(), "pool", thresholds=thresholds) for _ in parts]
    for metric, part in zip(fixed, parts):
        if len(x[part]):
            metric.update(x[part], masks[part])
    fixed[2].merge_state(fixed[0])
    fixed[2].merge_state(fixed[1])
    assert torch.equal(fixed[2].compute().iou, whole.iou)
    with pytest.raises(ValueError, match="thresholds differ"):
        fixed[0].merge_state(metrics[1])


def test_given_thresholds_skip_the_first_pass(blobs):
    x, masks = blobs
    first = NetworkDissection(PlantedDetectors(), "pool", top_quantile=0.05).evaluate(x, masks)
    again = NetworkDissection(PlantedDetectors(), "pool", thresholds=first.thresholds).evaluate(x[:60], masks[:60])
    assert torch.equal(again.thresholds, first.thresholds)
    assert again.n_samples == 60


def test_one_unit_keeps_its_unit_dimension(blobs):
    x, masks = blobs
    result = dissect_maps(x[:, :1], masks[:, :1], top_quantile=0.3)
    assert result.thresholds.shape == (1,) and result.iou.shape == (1, 1)
    torch.testing.assert_close(result.iou, torch.ones(1, 1))


def test_protocol_misuse_raises_clear_errors(blobs):
    x, masks = blobs
    metric = NetworkDissection(PlantedDetectors(), "detect")
    with pytest.raises(ValueError, match="thresholds are not fixed yet"):
        metric.compute()
    with pytest.raises(ValueError, match="the data yielded no batches"):
        metric.compute_thresholds()
    metric.update(x)
    metric.compute_thresholds()
    with pytest.raises(ValueError, match="needs the batch's concept masks"):
        metric.update(x)
    with pytest.raises(TypeError, match="two passes over the data"):
        metric(x)


def test_padding_distributed_sampler_is_refused(blobs):
    x, masks = blobs
    sampler = DistributedSampler(TensorDataset(x[:5], masks[:5]), num_replicas=2, rank=0, shuffle=False)
    loader = DataLoader(TensorDataset(x[:5], masks[:5]), batch_size=2, sampler=sampler)
    with pytest.raises(ValueError, match="DistributedSampler pads 5 samples to 6 by repeating 1"):
        NetworkDissection(PlantedDetectors(), "detect").evaluate(loader)


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(4)
        self.detect = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detect(self.norm(x)).sum()


def test_model_buffers_are_restored_and_the_metric_does_not_own_the_model(blobs):
    x, masks = blobs
    model = WithBatchNorm().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metric = NetworkDissection(model, "detect", top_quantile=0.1)
    metric.evaluate(x, masks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and not list(metric.children()) and not metric.state_dict()
    metric.eval()
    assert model.training
