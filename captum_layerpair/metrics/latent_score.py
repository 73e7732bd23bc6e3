"""The latent-score protocol: a ``torchmetrics.Metric`` over a layer pair's attributions, with per-sample values.

A score class declares ``name``, ``higher_is_better``, ``is_differentiable`` and a one-line ``description``, and
implements ``score_parts(attribute, inputs, indices, seed)``: the per-sample score of a batch given a function that
attributes inputs (the layer pair's, or the regulariser's differentiable one). The rest is shared:

* ``score(batch) -> [N]``: the per-sample scores of one batch (no state).
* ``update(batch)`` / ``compute() -> ScoreSummary`` / ``reset()``: the torchmetrics protocol (``MetricCollection``,
  Lightning, ``torch.distributed``); ``metric(batch)`` updates and returns the batch's summary.
* ``evaluate(loader) -> ScoreSummary``: the one-call form over a dataset, with the random-model and null baselines.

Randomness is rank independent: noise inputs are drawn per sample from ``(seed, dataset index)``
(``metrics.noise``), and each attribution call runs under a private seed derived from ``seed`` and the batch's first
dataset index (for methods that draw, e.g. GradientShap; ``shard_loader`` gives every process whole single-process
batches, so those draws match too). No global RNG is read or left changed.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from captum_layerpair._checks import check_choice, check_finite
from captum_layerpair._random import derive_seed, seeded
from captum_layerpair._typing import Noise, Transform
from captum_layerpair.aggregation import NORMALIZATIONS, TRANSFORMS
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.distributed import get_rank, split_batch
from captum_layerpair.metrics.maps import check_attributions
from captum_layerpair.metrics.noise import check_noise, make_noise
from captum_layerpair.metrics.per_sample import PerSampleMetric, as_indices
from captum_layerpair.metrics.random_model import random_model_pair
from captum_layerpair.metrics.summary import ScoreSummary

__all__ = ["LatentScore", "ScoreParts", "Attribute"]

Attribute = Callable[[torch.Tensor], torch.Tensor]
"""A function ``inputs [N, ...] -> attributions [N, K, C, *spatial]`` (or ``[N, K, F]``)."""


@dataclass
class ScoreParts:
    """Per-sample results of one batch.

    Attributes
    ----------
    raw: ``[N]`` the score as defined (e.g. ``I(x)``).
    null: ``[N]`` its noise-vs-noise counterpart where the score is calibrated, else ``None``.
    calibrated: ``[N]`` ``raw / null`` where the score is calibrated, else ``None``.
    """

    raw: torch.Tensor
    null: torch.Tensor | None = None
    calibrated: torch.Tensor | None = None

    @property
    def value(self) -> torch.Tensor:
        """What ``score()`` returns: the calibrated score where there is one, else the raw score."""
        return self.raw if self.calibrated is None else self.calibrated


class LatentScore(PerSampleMetric):
    """Base of the latent scores (SPEC section 4). Subclasses set the class attributes and ``score_parts``.

    Parameters
    ----------
    layer_pair:
        A ``LayerPairAttribution`` from a source layer to the embedding.
    transform:
        ``"abs"``, ``"sqrt"``, ``"lin"``, ``"square"`` or a callable (``aggregation.TRANSFORMS``).
    normalization:
        ``"minmax"`` or ``"max"`` (``aggregation.NORMALIZATIONS``).
    noise:
        Noise inputs (``metrics.noise.NOISES``: ``"uniform"``, ``"gaussian"``, ``"shuffle"``, or a callable
        ``inputs -> noise batch``), for the score itself where it uses noise and for the ``null`` baseline.
    seed:
        Seed of every random draw (noise per sample and dataset index; attribution calls per batch).
    attribute_kwargs:
        Default keyword arguments for ``layer_pair.attribute`` (e.g. ``{"n_steps": 16}``); keyword arguments
        of ``score``/``update``/``evaluate`` are added to them.
    **metric_kwargs:
        ``torchmetrics.Metric`` options (``process_group``, ``sync_on_compute``, ``compute_on_cpu``, ...).
    """

    name: str = "score"
    description: str = ""
    higher_is_better = True
    is_differentiable = True

    def __init__(self, layer_pair: LayerPairAttribution, transform: Transform = "abs", normalization: str = "minmax",
                 noise: Noise = "uniform", seed: int = 0, attribute_kwargs: dict[str, Any] | None = None,
                 **metric_kwargs: Any) -> None:
        super().__init__(**metric_kwargs)
        if not isinstance(layer_pair, LayerPairAttribution):
            raise TypeError(f"layer_pair must be a LayerPairAttribution, got {type(layer_pair).__name__}")
        check_choice("transform", transform, TRANSFORMS, allow_callable=True)
        check_choice("normalization", normalization, NORMALIZATIONS)
        check_noise(noise)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.layer_pair = layer_pair
        self.transform = transform
        self.normalization = normalization
        self.noise = noise
        self.seed = seed
        self.attribute_kwargs = dict(attribute_kwargs or {})
        self._on_noise = False
        self._metric_kwargs = metric_kwargs
        self._last_batch: tuple[torch.Tensor, ScoreParts] | None = None

    # ---- what a score defines --------------------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        """The constructor's keyword arguments (besides ``layer_pair``), to build the same score elsewhere."""
        return {"transform": self.transform, "normalization": self.normalization, "noise": self.noise,
                "seed": self.seed, "attribute_kwargs": self.attribute_kwargs}

    def score_parts(self, attribute: Attribute, inputs: torch.Tensor, indices: torch.Tensor | None = None,
                    seed: int | None = None) -> ScoreParts:
        """Per-sample results of ``inputs [N, ...]`` with attributions from ``attribute`` (differentiable where
        ``attribute`` is: the regulariser passes its own). ``indices [N]`` and ``seed`` select the noise draws
        (defaults ``0 .. N-1`` and ``self.seed``)."""
        raise NotImplementedError

    def _summarize(self, indices: torch.Tensor, states: dict[str, torch.Tensor]) -> ScoreSummary:
        return ScoreSummary.of(self.name, states["values"], indices)

    # ---- one batch -----------------------------------------------------------------------------------------------

    def _attribution(self, first_index: int, attribute_kwargs: dict[str, Any]) -> Attribute:
        """``layer_pair.attribute`` with this score's keyword arguments, each call under its own private seed."""
        calls = itertools.count()
        kwargs = {**self.attribute_kwargs, **attribute_kwargs}

        def attribute(x: torch.Tensor) -> torch.Tensor:
            with seeded(derive_seed(self.seed, "attribution", next(calls), first_index)):
                A = self.layer_pair.attribute(x, **kwargs)
            return check_attributions(A, "the layer pair's attribution").detach()

        return attribute

    def _batch(self, batch: Any, indices: Any, attribute_kwargs: dict[str, Any],
               next_indices: bool = False) -> tuple[torch.Tensor, ScoreParts]:
        inputs, batch_indices = split_batch(batch)
        given = indices if indices is not None else batch_indices
        if next_indices:
            index = self._next_indices(len(inputs), given)
        else:
            index = torch.arange(len(inputs)) if given is None else as_indices(len(inputs), given)
        check_finite("inputs", inputs)
        if self._on_noise:
            inputs = make_noise(inputs, self.noise, self.seed, index, stream="null")
        first = int(index[0]) if len(index) else 0
        parts = self.score_parts(self._attribution(first, attribute_kwargs), inputs, index, self.seed)
        return index, parts

    def score(self, batch: Any, indices: Any = None, **attribute_kwargs: Any) -> torch.Tensor:
        """Per-sample scores ``[N]`` of one batch (no state is changed).

        Parameters
        ----------
        batch:
            Inputs ``[N, ...]``, a tuple / list whose first item is the inputs, or ``Indexed(batch, indices)``.
        indices:
            ``[N]`` dataset indices, which select each sample's noise (default: the batch's own, else ``0 .. N-1``).
        **attribute_kwargs:
            Passed to ``layer_pair.attribute`` (e.g. ``n_steps``, ``attribute_to_source_input``).
        """
        return self._batch(batch, indices, attribute_kwargs)[1].value.detach()

    # ---- torchmetrics protocol -------------------------------------------------------------------------------------

    def update(self, batch: Any, indices: Any = None, **attribute_kwargs: Any) -> None:
        """Score one batch and add its samples to the state. ``indices``: ``[N]`` dataset indices (default: the
        batch's own (``Indexed``), else consecutive numbers after the samples already added on this process)."""
        index, parts = self._batch(batch, indices, attribute_kwargs, next_indices=True)
        self._append(index, values=parts.raw, null_values=parts.null)
        self._last_batch = (index, parts)

    def compute(self) -> ScoreSummary:
        """The summary of every sample added (on every process when ``torch.distributed`` is initialised), sorted
        by dataset index."""
        indices, states = self._collected()
        return self._summarize(indices, states)

    def forward(self, batch: Any, indices: Any = None, **attribute_kwargs: Any) -> ScoreSummary:
        """``metric(batch)``: ``update(batch)`` and return the summary of this batch alone (this process)."""
        self.update(batch, indices, **attribute_kwargs)
        assert self._last_batch is not None
        index, parts = self._last_batch
        states = {"values": parts.raw.detach().double()}
        if parts.null is not None:
            states["null_values"] = parts.null.detach().double()
        return self._summarize(index, states)

    # ---- one call over a dataset -----------------------------------------------------------------------------------

    def _copy(self, seed: int, layer_pair: LayerPairAttribution | None = None, on_noise: bool = False) -> LatentScore:
        """A fresh score with the same options (no state) on ``layer_pair``, seeded with ``seed``, its state on this
        score's device, or on the model's where this score is on the CPU (an NCCL group gathers CUDA tensors only)."""
        copy = type(self)(layer_pair or self.layer_pair, **{**self._options(), "seed": seed}, **self._metric_kwargs)
        copy._on_noise = on_noise
        device = self.device
        model = self.layer_pair.forward_func
        if device.type == "cpu" and isinstance(model, torch.nn.Module):
            device = next(model.parameters(), torch.zeros(())).device
        return copy.to(device)

    def _null_in_states(self) -> bool:
        """Whether ``compute()`` already gives the ``null`` baseline (a calibrated score computes it anyway)."""
        return False

    def evaluate(self, dataloader: Iterable[Any], random_model: bool = False, null: bool = False,
                 seed: int | None = None, show_progress: bool = False, **attribute_kwargs: Any) -> ScoreSummary:
        """Score every sample of a dataset and summarise, with optional honest baselines.

        This score's own state is not used or changed. Under ``torch.distributed`` each process passes its share
        (``shard_loader``) and every process gets the summary of the whole dataset.

        Parameters
        ----------
        dataloader:
            Iterable of batches: input tensors ``[B, ...]``, tuples whose first item is the input batch, or
            ``Indexed(batch, indices)`` (``IndexedDataset`` / ``shard_loader``); without indices the samples are
            numbered in the order they come.
        random_model:
            Also score a copy of the model with every parameter re-initialised (seeded with ``seed``).
        null:
            Also score noise inputs drawn like this score's ``noise`` (for informativeness: noise vs. noise), which
            shows how much of the score the input structure alone produces.
        seed:
            Seed of the random model and of every draw (default: this score's ``seed``).
        show_progress:
            Show a progress bar over batches (on the process of rank 0 only).
        **attribute_kwargs:
            Passed to ``layer_pair.attribute`` (e.g. ``n_steps``, ``attribute_to_source_input``).

        Returns
        -------
        ScoreSummary with mean, std, per-sample ``values [n]`` and their dataset ``indices [n]``, ``calibrated``
        for a calibrated score, and, when asked for, ``random_model`` and ``null``.
        """
        seed = self.seed if seed is None else seed
        runs = {"main": self._copy(seed)}
        if random_model:
            runs["random_model"] = self._copy(seed, layer_pair=random_model_pair(self.layer_pair, seed))
        if null and not self._null_in_states():
            runs["null"] = self._copy(seed, on_noise=True)
        total = len(dataloader) if hasattr(dataloader, "__len__") else None
        progress = tqdm(dataloader, total=total, desc=f"{self.name} score", unit="batch",
                        disable=not show_progress or get_rank() != 0)
        for batch in progress:
            inputs, indices = split_batch(batch)
            indices = runs["main"]._next_indices(len(inputs), indices)
            for run in runs.values():
                run.update(inputs, indices=indices, **attribute_kwargs)
        summary = runs["main"].compute()
        if random_model:
            summary.random_model = runs["random_model"].compute()
        summary.null = (runs["null"].compute() if "null" in runs else summary.null) if null else None
        return summary
