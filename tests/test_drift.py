"""DriftDetector: the relative change formula, threshold calibration (false-alarm rate), detection, errors."""
from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient
from torch.utils.data import DataLoader, TensorDataset

from captum_layerpair import LayerPairAttribution
from captum_layerpair.drift import DriftDetector
from captum_layerpair.metrics import InformativenessScore
from captum_layerpair.models import ConvEncoder


class MeanScore:
    """A stand-in score whose per-sample value is the input's mean, so its distribution is known."""

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.flatten(1).mean(1)


def clean(n: int, generator: torch.Generator) -> torch.Tensor:
    """``[n, 1]`` inputs whose score is N(1, 0.1^2)."""
    return 1 + 0.1 * torch.randn(n, 1, generator=generator)


def test_relative_change_is_the_drop_relative_to_the_reference_mean():
    detector = DriftDetector(MeanScore()).fit([torch.full((10, 1), 2.0), torch.full((10, 1), 2.0)])
    result = detector.relative_change(torch.tensor([[2.0], [1.0], [3.0], [0.0]]))
    assert detector.reference_mean == 2.0
    assert torch.allclose(result.per_sample, torch.tensor([0.0, 0.5, -0.5, 1.0]))
    assert result.mean == pytest.approx(0.25) and result.std == pytest.approx(result.per_sample.std().item())


def test_clean_batches_raise_false_alarms_at_about_the_calibrated_rate():
    gen = torch.Generator().manual_seed(0)
    reference = DataLoader(clean(2000, gen), batch_size=100)
    detector = DriftDetector(MeanScore(), false_alarm_rate=0.1).fit(reference)
    alarms = [detector.relative_change(clean(16, gen)).drifted for _ in range(500)]
    rate = sum(alarms) / len(alarms)
    assert 0.06 <= rate <= 0.14, rate  # 0.1 up to calibration and sampling error (binomial sd 0.013)
    sample_flags = torch.cat([detector.relative_change(clean(16, gen)).sample_flags for _ in range(100)])
    assert 0.07 <= sample_flags.float().mean() <= 0.13


def test_false_alarm_rate_holds_on_average_over_small_calibration_sets():
    # 40 held-out samples against batches of 32: the held-out mean's own error must widen the threshold
    gen = torch.Generator().manual_seed(2)
    alarms = []
    for i in range(400):
        detector = DriftDetector(MeanScore(), false_alarm_rate=0.1, n_bootstrap=500, seed=i).fit([clean(80, gen)])
        alarms.append(detector.relative_change(clean(32, gen)).drifted)
    assert 0.06 <= sum(alarms) / len(alarms) <= 0.14


def test_a_drop_in_the_score_is_detected_with_a_small_p_value():
    gen = torch.Generator().manual_seed(1)
    detector = DriftDetector(MeanScore(), false_alarm_rate=0.05).fit([clean(500, gen)],
                                                                      calibration_loader=[clean(500, gen)])
    drifted = detector.relative_change(clean(16, gen) - 0.2)
    assert drifted.drifted and drifted.p_value < 0.01 and drifted.mean == pytest.approx(0.2, abs=0.06)
    assert "DRIFT" in str(drifted)
    raised = detector.relative_change(clean(16, gen) + 0.2)  # one-sided: more informative is no alarm
    assert not raised.drifted and raised.p_value > 0.9


def test_detector_runs_on_informativeness_of_a_layer_pair():
    encoder = ConvEncoder(channels=(3, 4, 4), embed_dim=3, image_size=8, seed=0).eval()
    score = InformativenessScore(LayerPairAttribution(encoder, "conv2", "embed", method=InputXGradient))
    x = torch.rand(24, 1, 8, 8) * 0.5
    detector = DriftDetector(score).fit(DataLoader(TensorDataset(x, torch.zeros(24)), batch_size=8))
    result = detector.relative_change(x[:6])
    assert result.per_sample.shape == (6,) and result.sample_flags.shape == (6,)
    assert 0 <= result.p_value <= 1 and result.false_alarm_rate == 0.05


def test_drift_detector_errors():
    with pytest.raises(TypeError, match="got int"):
        DriftDetector(3)
    with pytest.raises(ValueError, match="false_alarm_rate must lie in \\(0, 1\\), got 1.5"):
        DriftDetector(MeanScore(), false_alarm_rate=1.5)
    with pytest.raises(RuntimeError, match="call fit"):
        DriftDetector(MeanScore()).relative_change(torch.ones(2, 1))
    with pytest.raises(ValueError, match="too few"):
        DriftDetector(MeanScore()).fit([torch.ones(2, 1)])
    with pytest.raises(ValueError, match="yielded no batches"):
        DriftDetector(MeanScore()).fit([])
    with pytest.raises(ValueError, match="positive reference"):
        DriftDetector(MeanScore()).fit([torch.zeros(10, 1)])
