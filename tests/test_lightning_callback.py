"""LatentScoreCallback in a tiny Lightning run on the CPU: the regulariser's term reaches the optimiser step exactly
as a hand-written loop adds it, the validation scores are logged (sync_dist) and equal evaluate(), and the module's
training_step is restored afterwards."""
from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import InputXGradient
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_layerpair import LayerPairAttribution
from captum_layerpair.metrics import DisentanglementScore, InformativenessScore
from captum_layerpair.models import ConvEncoder
from captum_layerpair.training import LatentScoreRegularizer

pl = pytest.importorskip("lightning.pytorch")
from captum_layerpair.training.lightning import LatentScoreCallback  # noqa: E402


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = ConvEncoder(channels=(3, 4, 4), embed_dim=3, image_size=8, seed=0)
        self.head = nn.Linear(3, 2)

    def loss(self, batch):
        x, y = batch
        return nn.functional.cross_entropy(self.head(self.encoder(x)), y)

    def training_step(self, batch, batch_idx):
        return self.loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data(n: int, seed: int) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 2, (n,), generator=gen)),
                      batch_size=4)


def trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def test_callback_applies_the_regularizer_logs_the_scores_and_restores_the_module():
    module = Classifier()
    before = copy.deepcopy(module)
    reg = LatentScoreRegularizer(module.encoder, "conv2", "embed", weights={"informativeness": 0.5,
                                                                             "disentanglement": 1.0})
    lp = LayerPairAttribution(module.encoder, "conv2", "embed", method=InputXGradient)
    scores = [InformativenessScore(lp, calibrate=True), DisentanglementScore(lp)]
    run = trainer(limit_train_batches=1, limit_val_batches=2, callbacks=[LatentScoreCallback(reg, scores)])
    run.fit(module, data(4, 0), data(8, 1))

    # the same step by hand: loss + regulariser term, SGD
    twin = copy.deepcopy(before)
    hand_reg = LatentScoreRegularizer(twin.encoder, "conv2", "embed", weights={"informativeness": 0.5,
                                                                                "disentanglement": 1.0})
    batch = next(iter(data(4, 0)))
    (twin.loss(batch) + hand_reg(batch[0])).backward()
    with torch.no_grad():
        for p in twin.parameters():
            p -= 0.1 * p.grad
    for (name, p), q in zip(module.named_parameters(), twin.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    assert not torch.allclose(module.encoder.conv1.weight, before.encoder.conv1.weight)

    metrics = run.callback_metrics
    assert metrics["train_informativeness"] == pytest.approx(hand_reg.last_scores["informativeness"].item(), rel=1e-5)
    module.eval()
    expected_I = InformativenessScore(lp, calibrate=True).evaluate(data(8, 1))
    expected_D = DisentanglementScore(lp).evaluate(data(8, 1))
    assert metrics["val_informativeness"].item() == pytest.approx(expected_I.mean, rel=1e-5)
    assert metrics["val_calibrated_informativeness"].item() == pytest.approx(expected_I.calibrated.mean, rel=1e-5)
    assert metrics["val_disentanglement"].item() == pytest.approx(expected_D.mean, rel=1e-5)
    assert "training_step" not in vars(module)  # the wrapper is gone


def test_callback_errors():
    with pytest.raises(ValueError, match="would do nothing"):
        LatentScoreCallback()
    with pytest.raises(TypeError, match="latent scores"):
        LatentScoreCallback(scores=[nn.Linear(2, 2)])
