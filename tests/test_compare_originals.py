"""Ours against the transcriptions of the official code in benchmarks/compare_originals.py (RELAX, LFXAI, NetDissect).

The benchmark's quick checks must all come out as documented (equal where we follow the original, different where
the table says we deliberately differ), and its table must name a difference for each system it covers.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from captum_layerpair.datasets import make_blob_images
from captum_layerpair.metrics.network_dissection import NetworkDissection

pytestmark = [pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require gradients")]


@pytest.fixture(scope="module")
def originals():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_originals.py"
    spec = importlib.util.spec_from_file_location("compare_originals", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_every_side_by_side_check_comes_out_as_documented(originals):
    checks = originals.run_checks(quick=True)
    failed = [(c.system, c.what, c.value, c.tolerance) for c in checks if not c.passed]
    assert not failed
    assert {c.system for c in checks} == {"RELAX", "label-free", "Network Dissection"}


def test_the_table_names_the_differences_of_every_system(originals):
    rows = originals.DIFFERENCES
    assert {row[0] for row in rows} == {"RELAX", "label-free", "Network Dissection"}
    assert all(len(row) == 4 and all(cell and "|" not in cell for cell in row) for row in rows)


@pytest.mark.parametrize("layer, quantile", [("conv", 0.3), ("pool", 0.2), ("pool", 0.01)])
def test_dissection_iou_matches_the_netdissect_transcription(originals, layer, quantile):
    # Partially annotated data: every third image lacks category 1's labels; NetDissect's rule leaves a unit's
    # firing in those images out of category 1's unions.
    data = make_blob_images(45, image_size=16, noise=0.05, seed=2)
    masks = data.masks.clone()
    masks[::3, 2:] = False
    model = originals.Units().eval()
    result = NetworkDissection(model, layer, top_quantile=quantile, concept_categories=["a", "a", "b", "b"]
                               ).evaluate(data.images, masks, batch_size=17)
    with torch.no_grad():
        maps = model.conv(data.images) if layer == "conv" else model(data.images)
    expected = originals.official_netdissect_iou(maps, masks, result.thresholds, [0, 0, 1, 1])
    torch.testing.assert_close(result.iou.double(), expected, rtol=1e-6, atol=1e-9)
