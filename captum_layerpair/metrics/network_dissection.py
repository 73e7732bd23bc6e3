"""Network Dissection (Bau et al., CVPR 2017): how well each unit of a layer segments each labelled concept.

For unit ``k`` the threshold ``T_k`` is the top-``q`` quantile of its activations over every spatial position of
every image in the dataset (``q = 0.005`` in the paper): the ``ceil(q * n)``-th largest of its ``n`` activations.
Each activation map is upsampled bilinearly to the concept masks' resolution and segmented where it *exceeds* the
threshold, ``S_k(x) = up(A_k(x)) > T_k`` (NetDissect's rule: a unit that never exceeds its threshold, such as a
dead unit, segments nothing). The dataset-level intersection over union with concept ``c``'s masks ``L_c(x)`` is
``IoU_{k,c} = sum_x |S_k(x) & L_c(x)| / sum_x (a_c(x) |S_k(x)| + |L_c(x)| - |S_k(x) & L_c(x)|)``, where, as in
NetDissect, ``a_c(x) = 1`` only for images annotated for ``c``'s category (holding a positive pixel of any concept
of that category), so partially annotated data do not count a unit's firing in unannotated images against a
concept (``unit_area="all"`` sets ``a_c = 1``). A unit whose best IoU reaches 0.04 is a *detector*.

The dissection is a ``torchmetrics.Metric`` that makes two passes over the data: ``update(inputs)`` keeps, per unit,
the largest activations (``ceil(q * n_samples * h * w)`` of them, or all without ``n_samples``), which gives the
exact quantile; ``compute_thresholds()`` fixes the thresholds (over all processes); ``update(inputs, masks)`` then
accumulates integer counts and ``compute()`` returns a :class:`DissectionResult`. Buffers merge by concatenation and
counts by summation, so thresholds and IoU over several processes equal those of one process exactly.
``evaluate(data, concept_masks)`` runs both passes in one call. The same applies to any per-unit spatial maps
(:class:`MapDissection`, :func:`dissect_maps`), e.g. channel-aggregated layer-pair attribution maps ``[N, K, h, w]``.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors
from tqdm import tqdm

from captum_layerpair._checks import check_choice, check_positive_int, check_probability
from captum_layerpair._hooks import capture_layers
from captum_layerpair._model_state import model_state_preserved
from captum_layerpair._typing import LayerSpec
from captum_layerpair.layers import Layer, resolve_layer
from captum_layerpair.metrics import _dissection as arithmetic
from captum_layerpair.metrics._dissection import UNIT_AREA_RULES
from captum_layerpair.metrics.dissection_result import DETECTOR_IOU, DissectionResult

__all__ = ["DETECTOR_IOU", "UNIT_AREA_RULES", "DissectionResult", "MapDissection", "NetworkDissection",
           "dissect_maps"]

# How each state is padded so that every process (or merged metric) holds the same shapes: fill value and the
# dimensions that may differ (the buffer's width); other dimensions must agree unless the state is still empty.
_PADDING: dict[str, tuple[float, tuple[int, ...]]] = {
    "top": (-math.inf, (1,)), "thresholds": (-math.inf, ()), "intersection": (0.0, ()), "unit_area": (0.0, ()),
    "concept_area": (0.0, ()),
}


class MapDissection(Metric):
    """Network Dissection of per-unit spatial maps ``[N, U, h, w]``, as a ``torchmetrics.Metric``.

    Two passes over the same data: ``update(maps)`` for every batch, ``compute_thresholds()``, then
    ``update(maps, masks)`` for every batch and ``compute()`` (a :class:`DissectionResult`); ``reset()`` starts over.
    ``evaluate(maps, concept_masks)`` does all of it. Under ``torch.distributed`` each process updates with its own
    shard; ``compute_thresholds()`` and ``compute()`` reduce over all processes (every process must call them), and
    the result equals that of one process on the whole dataset exactly.

    Parameters
    ----------
    top_quantile:
        ``q`` in ``(0, 1)``: each unit's threshold leaves the fraction ``q`` of its activations above it.
    n_samples:
        Number of samples in the whole dataset (over all processes), or an upper bound: each process then keeps
        only ``units x ceil(q * n_samples * h * w)`` values (float32), about 55 MB for AlexNet's conv5 (256 units,
        13x13) on the 63k Broden images at ``q = 0.005``. ``None`` keeps every value (exact, but memory grows with
        the data). ``evaluate`` sets it from the data.
    unit_area:
        ``"annotated"`` (NetDissect's rule, default): a unit's segmented area counts toward a concept's union only in
        images annotated for the concept's category; ``"all"``: in every image (the plain IoU of the paper's
        formula; equal to ``"annotated"`` when every image holds a positive pixel of every category).
    concept_categories:
        The category of each of the ``C`` concepts (e.g. ``["object", "object", "color", ...]``), for
        ``unit_area="annotated"``. ``None``: one category holding every concept, so only images without any
        positive pixel are left out of a unit's area.
    concept_names:
        Optional names of the concepts, for :meth:`DissectionResult.summary`.
    thresholds:
        ``[U]`` thresholds fixed in advance (e.g. from another dissection): the first pass is skipped.
    **kwargs:
        ``torchmetrics.Metric`` options (``sync_on_compute``, ``process_group``, ``dist_sync_fn``, ...).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, top_quantile: float = 0.005, *, n_samples: int | None = None, unit_area: str = "annotated",
                 concept_categories: Sequence[Hashable] | None = None, concept_names: list[str] | None = None,
                 thresholds: torch.Tensor | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.top_quantile = check_probability("top_quantile", top_quantile)
        self.n_samples = check_positive_int("n_samples", n_samples, allow_none=True)
        check_choice("unit_area", unit_area, UNIT_AREA_RULES)
        self.unit_area_rule = unit_area
        self.concept_categories = None if concept_categories is None else list(concept_categories)
        self.concept_names = concept_names
        # Activations, buffers and thresholds are float32 whatever the default dtype (the same on every process).
        fixed = torch.empty(0) if thresholds is None else torch.as_tensor(thresholds).flatten()
        self.add_state("top", torch.empty(0, 0, dtype=torch.float32), dist_reduce_fx=arithmetic.merge_top)
        self.add_state("seen", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("positions", torch.zeros((), dtype=torch.int64), dist_reduce_fx="max")
        self.add_state("thresholds", fixed.float(), dist_reduce_fx="max")
        self.add_state("intersection", torch.empty(0, 0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("unit_area", torch.empty(0, 0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("concept_area", torch.empty(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counted", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    @property
    def thresholds_fixed(self) -> bool:
        """Whether the thresholds are fixed, i.e. updates count IoU rather than collect activations."""
        return self.thresholds.numel() > 0

    def update(self, inputs: torch.Tensor, masks: torch.Tensor | None = None) -> None:
        """Add a batch: its activations (first pass) or, once the thresholds are fixed, its IoU counts.

        Parameters
        ----------
        inputs:
            ``[B, U, h, w]`` maps (for :class:`NetworkDissection`: model inputs, whose layer output is dissected).
        masks:
            ``[B, C, H, W]`` binary concept masks of the batch; required once the thresholds are fixed, ignored
            before.
        """
        maps = self._maps(inputs)
        if len(maps) == 0:
            return
        if not self.thresholds_fixed:
            self.top = arithmetic.keep_top(self.top, maps, self._capacity(maps)).to(self.device)
            self.seen += len(maps)
            self.positions.fill_(maps[0, 0].numel())
            return
        if masks is None:
            raise ValueError("the thresholds are fixed, so update() needs the batch's concept masks: "
                             "update(inputs, masks)")
        if len(self.thresholds) != maps.shape[1]:
            raise ValueError(f"the maps have {maps.shape[1]} units but there are {len(self.thresholds)} thresholds")
        masks = arithmetic.check_masks(masks, maps)
        categories = (None if self.unit_area_rule == "all" else
                      arithmetic.category_matrix(self.concept_categories, masks.shape[1]))
        counts = arithmetic.tally(maps, masks, self.thresholds, categories)
        if self.intersection.numel() == 0:
            self.intersection, self.unit_area, self.concept_area = (c.to(self.device) for c in counts)
        else:
            if self.concept_area.shape != counts[2].shape:
                raise ValueError(f"the masks have {len(counts[2])} concepts but earlier batches had "
                                 f"{len(self.concept_area)}")
            self.intersection += counts[0].to(self.device)
            self.unit_area += counts[1].to(self.device)
            self.concept_area += counts[2].to(self.device)
        self.counted += len(maps)

    def compute_thresholds(self) -> torch.Tensor:
        """End the first pass: fix and return the ``[U]`` thresholds (over all processes when distributed)."""
        if not self.thresholds_fixed:
            with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
                thresholds = self._thresholds_from_buffer()
            self.thresholds = thresholds.to(self.device)
            self.top = self.top.new_empty(0, 0)  # the buffer is no longer needed
            self._computed = None
        return self.thresholds.clone()

    def compute(self) -> DissectionResult:
        """End the second pass: the :class:`DissectionResult` (over all processes when distributed)."""
        if not self.thresholds_fixed:
            raise ValueError("the thresholds are not fixed yet: pass over the data with update(inputs), call "
                             "compute_thresholds(), then pass again with update(inputs, masks) before compute()")
        if self.intersection.numel() == 0:
            raise ValueError("no concept masks were counted: pass over the data with update(inputs, masks)")
        arithmetic.check_concepts_present(self.concept_area)
        union = self.unit_area + self.concept_area[None, :] - self.intersection
        iou = torch.where(union > 0, self.intersection / union.clamp_min(1), torch.zeros_like(union))
        names = self.concept_names
        if names is not None and len(names) != iou.shape[1]:
            raise ValueError(f"got {len(names)} concept_names for {iou.shape[1]} concepts")
        return DissectionResult(self.thresholds.cpu(), iou.float().cpu(), None if names is None else list(names),
                                DETECTOR_IOU, self.intersection.cpu(), self.unit_area.cpu(),
                                self.concept_area.cpu(), int(self.counted))

    def evaluate(self, data: Any, concept_masks: torch.Tensor | None = None, batch_size: int = 64,
                 concept_names: list[str] | None = None, show_progress: bool = False) -> DissectionResult:
        """Dissect a dataset in one call: ``reset()``, both passes, ``compute()``.

        Parameters
        ----------
        data:
            ``[N, ...]`` (maps, or model inputs for :class:`NetworkDissection`); or a re-iterable of batches (a
            ``DataLoader``, a list) that yield ``(inputs, masks)`` pairs when ``concept_masks`` is None, else inputs
            (or tuples whose first item is the input, as a ``TensorDataset`` gives) in the order of
            ``concept_masks`` (do not shuffle). Under ``torch.distributed``, each process passes its own shard; a
            ``DistributedSampler`` must not pad (the repeated samples would count twice).
        concept_masks:
            ``[N, C, H, W]`` binary masks of ``C`` concepts, with ``H, W`` at least the maps' spatial size and the
            same aspect ratio (maps are upsampled to ``H x W``). Every concept needs a positive pixel somewhere in
            the dataset.
        batch_size:
            Batch size for tensor ``data``.
        concept_names:
            Optional names of the concepts (default: those given to the constructor).
        show_progress:
            Show progress bars for the two passes (on the first process only).

        Returns
        -------
        DissectionResult with ``thresholds [U]`` and ``iou [U, C]``.
        """
        stream, n_local = arithmetic.batches(data, concept_masks, batch_size)
        hide = not show_progress or (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)
        saved = self.n_samples
        self.n_samples = saved or self._total_over_processes(n_local)
        try:
            self.reset()
            if not self.thresholds_fixed:
                for inputs, _ in tqdm(stream(), desc="Dissection thresholds", unit="batch", disable=hide):
                    self.update(inputs)
                self.compute_thresholds()
            for inputs, masks in tqdm(stream(), desc="Dissection IoU", unit="batch", disable=hide):
                self.update(inputs, masks)
            result = self.compute()
        finally:
            self.n_samples = saved
        if concept_names is not None:
            if len(concept_names) != result.iou.shape[1]:
                raise ValueError(f"got {len(concept_names)} concept_names for {result.iou.shape[1]} concepts")
            result.concept_names = list(concept_names)
        return result

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} needs two passes over the data, so it has no per-batch value: use "
                        "update() / compute_thresholds() / update(inputs, masks) / compute(), or evaluate()")

    def _maps(self, inputs: torch.Tensor) -> torch.Tensor:
        """The per-unit maps ``[B, U, h, w]`` of a batch."""
        return arithmetic.check_maps(inputs, "maps must be")

    def _capacity(self, maps: torch.Tensor) -> int | None:
        if self.n_samples is None:
            return None
        return max(1, math.ceil(self.top_quantile * self.n_samples * maps[0, 0].numel()))

    def _thresholds_from_buffer(self) -> torch.Tensor:
        seen = int(self.seen)
        if seen == 0:
            raise ValueError("the data yielded no batches")
        if self.n_samples is not None and seen > self.n_samples:
            raise ValueError(f"the data yielded {seen} samples but {self.n_samples} were expected (n_samples: the "
                             "concept masks' or the dataset's length)")
        rank = max(1, math.ceil(self.top_quantile * seen * int(self.positions)))
        return self.top.topk(rank, dim=1).values[:, -1]

    def _total_over_processes(self, count: int) -> int:
        """``count`` summed over the processes of the group (``count`` itself without ``torch.distributed``)."""
        if not self.sync_on_compute or not (dist.is_available() and dist.is_initialized()):
            return count
        total = torch.tensor([count], device=self.device)
        dist.all_reduce(total, group=self.process_group)
        return int(total)

    def _padded(self, states: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        """The states padded to common ``shapes`` (see ``_PADDING``); ``ValueError`` where the units disagree."""
        out = dict(states)
        for name, (fill, free) in _PADDING.items():
            value, shape = states[name], shapes[name]
            if tuple(value.shape) == tuple(shape):
                continue
            if value.numel() and any(a != b for d, (a, b) in enumerate(zip(value.shape, shape)) if d not in free):
                raise ValueError(f"cannot merge dissections of different shapes: state {name!r} has shape "
                                 f"{tuple(value.shape)} here and {tuple(shape)} elsewhere (different units or "
                                 "concepts)")
            padded = value.new_full(shape, fill)
            padded[tuple(slice(0, n) for n in value.shape)] = value
            out[name] = padded
        return out

    def _sync_dist(self, dist_sync_fn: Callable | None = None, process_group: Any | None = None) -> None:
        """Agree on the states' shapes across processes (a process may hold an empty or a narrower buffer), then
        reduce as declared."""
        gather = dist_sync_fn or gather_all_tensors
        local = {name: getattr(self, name) for name in _PADDING}
        dims = torch.tensor([n for value in local.values() for n in value.shape], device=self.device)
        every = torch.stack(gather(dims, group=process_group or self.process_group)).amax(0).tolist()
        shapes, start = {}, 0
        for name, value in local.items():
            shapes[name], start = tuple(every[start:start + value.dim()]), start + value.dim()
        for name, value in self._padded(local, shapes).items():
            setattr(self, name, value)
        super()._sync_dist(gather, process_group)

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """``merge_state``: pad both sides to common shapes, check that the thresholds agree, then reduce."""
        local = {name: getattr(self, name) for name in _PADDING}
        incoming = {name: incoming_state[name] for name in _PADDING}
        if local["thresholds"].numel() != incoming["thresholds"].numel() or not torch.equal(
                local["thresholds"], incoming["thresholds"].to(local["thresholds"].device)):
            raise ValueError("cannot merge dissections whose thresholds differ (or are fixed in one only)")
        shapes = {name: tuple(max(a, b) for a, b in zip(local[name].shape, incoming[name].shape)) for name in local}
        for name, value in self._padded(local, shapes).items():
            setattr(self, name, value)
        super()._reduce_states({**incoming_state, **self._padded(incoming, shapes)})

    def _wrap_compute(self, compute: Callable) -> Callable:
        """Synchronise around ``compute`` and cache its result, without torchmetrics' squeezing of one-element
        tensors (a one-unit dissection keeps ``thresholds [1]`` and ``iou [1, C]``)."""
        @functools.wraps(compute)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self._computed is not None:
                return self._computed
            with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync,
                                   should_unsync=self._should_unsync):
                value = compute(*args, **kwargs)
            if self.compute_with_cache:
                self._computed = value
            return value
        return wrapped


class NetworkDissection(MapDissection):
    """Network Dissection of one layer of a model (Bau et al., CVPR 2017), as a ``torchmetrics.Metric``.

    ``update(inputs[, masks])`` runs the model on a batch and dissects the layer's output; otherwise as
    :class:`MapDissection` (whose keyword options it takes).

    Parameters
    ----------
    model:
        The network; it is run under ``torch.no_grad()`` in its current train/eval mode, and its buffers (e.g.
        BatchNorm statistics) are restored after each batch. The metric does not own it: ``.to()``, ``.eval()``
        and ``state_dict()`` of the metric leave the model alone. Inputs are moved to the model's device.
    layer:
        The dissected layer, an ``nn.Module`` of ``model`` or its dotted name (``model.get_submodule``). Its
        output must be one tensor ``[N, units, h, w]``, produced once per forward pass (the forward stops there).
    top_quantile:
        ``q`` in ``(0, 1)``: each unit's threshold leaves the fraction ``q`` of its activations above it.
    **options:
        ``n_samples``, ``unit_area``, ``concept_categories``, ``concept_names``, ``thresholds`` and the
        ``torchmetrics.Metric`` options, as in :class:`MapDissection`.
    """

    def __init__(self, model: nn.Module, layer: LayerSpec, top_quantile: float = 0.005, **options: Any) -> None:
        super().__init__(top_quantile, **options)
        # Plain attributes, not submodules: the metric must not move, re-mode or save the user's model.
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "dissected", resolve_layer(model, layer, "dissected"))

    @property
    def layer(self) -> nn.Module:
        """The dissected module."""
        return self.dissected.module

    @property
    def layer_name(self) -> str:
        """The dissected module's dotted name."""
        return self.dissected.name

    def evaluate_maps(
        self, maps: torch.Tensor, concept_masks: torch.Tensor, batch_size: int = 64,
        concept_names: list[str] | None = None, show_progress: bool = False,
    ) -> DissectionResult:
        """Dissect precomputed per-unit maps with this dissection's options; see :func:`dissect_maps`."""
        return MapDissection(self.top_quantile, unit_area=self.unit_area_rule,
                             concept_categories=self.concept_categories, concept_names=self.concept_names,
                             ).evaluate(maps, concept_masks, batch_size, concept_names, show_progress)

    def _maps(self, inputs: torch.Tensor) -> torch.Tensor:
        layer: Layer = self.dissected
        device = next((p.device for p in self.model.parameters()), None)
        inputs = inputs if device is None else inputs.to(device)
        with model_state_preserved(self.model), torch.no_grad():
            _, (out,) = capture_layers(self.model, (inputs,), [layer], stop_after=True)
        return arithmetic.check_maps(out, f"layer {layer.name!r} must output")


def dissect_maps(
    maps: torch.Tensor, concept_masks: torch.Tensor, top_quantile: float = 0.005, batch_size: int = 64,
    concept_names: list[str] | None = None, show_progress: bool = False, **options: Any,
) -> DissectionResult:
    """Dissect precomputed per-unit spatial maps, e.g. layer-pair attribution maps per embedding dimension.

    Parameters
    ----------
    maps:
        ``[N, K, h, w]``, e.g. ``aggregate(A, over="channels")`` of a layer-pair attribution ``[N, K, C, h, w]``.
    concept_masks:
        ``[N, C, H, W]`` binary concept masks (``H, W`` at least ``h, w``, same aspect ratio).
    top_quantile, batch_size, concept_names, show_progress:
        As in :meth:`MapDissection.evaluate`.
    **options:
        ``unit_area``, ``concept_categories``, ``thresholds``, as in :class:`MapDissection`.

    Returns
    -------
    DissectionResult with ``thresholds [K]`` and ``iou [K, C]``: the concept alignment of each of the K units.
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4:
        got = f"shape {tuple(maps.shape)}" if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a tensor [N, K, h, w]; got {got}")
    return MapDissection(top_quantile, **options).evaluate(maps, concept_masks, batch_size, concept_names,
                                                           show_progress)
