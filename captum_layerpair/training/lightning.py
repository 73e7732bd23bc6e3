"""A Lightning callback for latent-score constraints and latent-score logging (needs ``lightning``:
``pip install captum_layerpair[lightning]``).

``LatentScoreCallback(regularizer=..., scores=[...])``:

* with a ``LatentScoreRegularizer``, adds its term to the loss of every training step (for the fit, the module's
  ``training_step`` is wrapped; it is restored afterwards, also after an exception) and logs the scores of the
  term (``train_<score>``, ``sync_dist=True``);
* with latent scores (``InformativenessScore``, ``DisentanglementScore``, ...), updates them on every validation
  batch (under ``torch.distributed`` each process scores its share and ``compute()`` gathers them) and logs each
  dataset mean (``val_<score>``, and ``val_calibrated_<score>`` for a calibrated score) with ``sync_dist=True``.

Validation runs under ``torch.inference_mode``; the scores need gradients, so the callback scores a normal copy of
the batch with inference mode off and gradients on. Under DDP, wrap the validation dataset in ``IndexedDataset`` so
that every sample keeps its dataset index (its noise draw and its place in the result).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - the extra is installed in the test environment
    raise ImportError("captum_layerpair.training.lightning needs lightning: pip install "
                      "'captum_layerpair[lightning]'") from error

from captum_layerpair.metrics import Indexed, LatentScore, split_batch
from captum_layerpair.training.regularizer import LatentScoreRegularizer

__all__ = ["LatentScoreCallback"]


def _inputs(batch: Any) -> torch.Tensor:
    return split_batch(batch)[0]


class LatentScoreCallback(pl.Callback):
    """Train with a latent-score regulariser and log latent scores, in Lightning.

    Parameters
    ----------
    regularizer:
        Added to the training loss (``loss + regularizer(inputs)``), or ``None``. The module's ``training_step``
        must return the loss (a tensor or a dict with ``"loss"``), i.e. use automatic optimisation.
    scores:
        Latent scores to evaluate on the validation data, built on the module's model (their state moves to the
        module's device at setup).
    inputs:
        How to get the model inputs from a batch (default: the batch itself, the first item of a tuple / list, or
        the data of an ``Indexed`` batch).
    prefix:
        Prefix of the logged names.

    Examples
    --------
    >>> reg = LatentScoreRegularizer(module.encoder, "conv2", "embed", weights={"disentanglement": 1.0})
    >>> lp = LayerPairAttribution(module.encoder, "conv2", "embed", method=InputXGradient)
    >>> callback = LatentScoreCallback(reg, scores=[InformativenessScore(lp, calibrate=True),
    ...                                             DisentanglementScore(lp)])
    >>> Trainer(callbacks=[callback]).fit(module, train_loader, val_loader)
    """

    def __init__(self, regularizer: LatentScoreRegularizer | None = None, scores: Sequence[LatentScore] = (),
                 inputs: Callable[[Any], torch.Tensor] | None = None, prefix: str = "") -> None:
        if regularizer is not None and not isinstance(regularizer, LatentScoreRegularizer):
            raise TypeError(f"regularizer must be a LatentScoreRegularizer or None, got {type(regularizer).__name__}")
        scores = list(scores)
        for score in scores:
            if not isinstance(score, LatentScore):
                raise TypeError(f"scores must be latent scores (InformativenessScore, ...), got {type(score).__name__}")
        if regularizer is None and not scores:
            raise ValueError("give a regularizer, scores, or both: the callback would do nothing")
        self.regularizer = regularizer
        self.scores = scores
        self.inputs = inputs or _inputs
        self.prefix = prefix
        self._wrapped: pl.LightningModule | None = None

    # ---- the regulariser -------------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.regularizer is None:
            return
        if not pl_module.automatic_optimization:
            raise ValueError("LatentScoreCallback adds the regulariser to the loss that training_step returns, which "
                             "needs automatic optimisation; with manual optimisation add regularizer(x) to your loss")
        original = pl_module.training_step
        regularizer, inputs = self.regularizer, self.inputs

        def training_step(batch: Any, *args: Any, **kwargs: Any) -> Any:
            out = original(batch, *args, **kwargs)
            if out is None:  # the module skips this batch
                return out
            term = regularizer(inputs(batch))
            if isinstance(out, torch.Tensor):
                return out + term
            if isinstance(out, dict) and "loss" in out:
                return {**out, "loss": out["loss"] + term}
            raise TypeError("training_step must return the loss (a tensor or a dict with 'loss') for "
                            f"LatentScoreCallback to add the regulariser; it returned {type(out).__name__}")

        pl_module.training_step = training_step
        self._wrapped = pl_module

    def _restore(self) -> None:
        if self._wrapped is not None:
            del self._wrapped.training_step
            self._wrapped = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.regularizer is None or not self.regularizer.last_scores:
            return
        if (self.regularizer.calls - 1) % self.regularizer.every_n_steps == 0:  # computed in this step
            for name, value in self.regularizer.last_scores.items():
                pl_module.log(f"{self.prefix}train_{name}", value, sync_dist=True, on_step=True, on_epoch=True)

    # ---- the scores ------------------------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for score in self.scores:
            score.to(pl_module.device)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for score in self.scores:
            score.reset()

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.scores or trainer.sanity_checking:
            return
        indices = split_batch(batch)[1] if isinstance(batch, Indexed) else None
        with torch.inference_mode(False), torch.enable_grad():
            x = self.inputs(batch).clone()  # a normal tensor: inference tensors cannot take part in autograd
            for score in self.scores:
                score.update(x, indices=indices)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for score in self.scores:
            if score.update_count == 0 and trainer.world_size == 1:
                continue  # under DDP every process must join compute(), which gathers the states
            summary = score.compute()
            pl_module.log(f"{self.prefix}val_{score.name}", summary.mean, sync_dist=True)
            if summary.calibrated is not None:
                pl_module.log(f"{self.prefix}val_calibrated_{score.name}", summary.calibrated.mean, sync_dist=True)
            score.reset()
