"""Network Dissection: planted concept detectors are recovered, thresholds are exact quantiles, errors are clear."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

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
    x, masks = blobs
    result = NetworkDissection(PlantedDetectors(), "detect").evaluate(x, masks, batch_size=25)
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
    with pytest.raises(ValueError, match=r"top_quantile must be in \(0, 1\)"):
        NetworkDissection(PlantedDetectors(), "detect", top_quantile=1.5)
    with pytest.raises(ValueError, match=r"maps must be a tensor \[N, K, h, w\]"):
        dissect_maps(x[:, 0], masks)
