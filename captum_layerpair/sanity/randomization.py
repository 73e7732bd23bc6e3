"""Model-parameter randomisation checks for layer-pair attributions (Adebayo et al. 2018; paper, section 4).

If an attribution method explains what the model learned, re-initialising the model's weights must change its
maps. ``ModelParameterRandomization`` re-initialises the parameterised modules of a *copy* of the model one after
the other, recomputes the layer-pair attribution after each step and compares it with the original one. It is a
``torchmetrics.Metric``: ``update(batch)`` accumulates per-sample similarities with their dataset indices,
``compute()`` gives the means over the whole dataset (over every ``torch.distributed`` rank), and ``evaluate``
does both in one call on a tensor or a data loader.
"""
from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from tqdm import tqdm

from captum_layerpair._checks import check_choice
from captum_layerpair._reinit import reinitialize
from captum_layerpair._typing import LayerSpec
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.distributed import get_rank, get_world_size, split_batch
from captum_layerpair.layers import resolve_layer
from captum_layerpair.sanity._per_sample import BatchingFreeAttribution, unique_sorted
from captum_layerpair.sanity._schedule import Step, parameterised_names, schedule
from captum_layerpair.sanity.result import ORDERS, POSITIONS, RandomizationResult
from captum_layerpair.sanity.similarity import SimilaritySpec, check_sources, resolve_similarities

__all__ = ["ModelParameterRandomization", "RandomizationResult", "ORDERS", "POSITIONS"]

Order = Literal["cascading", "independent", "bottom_up"]


class ModelParameterRandomization(Metric):
    r"""Re-initialise a copy of the model module by module and measure how much a layer-pair attribution changes.

    Parameters
    ----------
    layer_pair:
        The ``LayerPairAttribution`` to check; its ``forward_func`` must be an ``nn.Module``. It is rebuilt on a
        deep copy of the model (made afresh at every ``update``, so a model that trains between updates is checked
        as it is) with the same layer names, method, target reduction and method arguments; the user's model
        (parameters, buffers, hooks, train/eval mode) is never touched.
    order:
        ``"cascading"``: top-down and cumulative (the last parameterised module in the forward pass first, then
        the one before it, keeping earlier randomisations); ``"bottom_up"``: cumulative from the first module;
        ``"independent"``: one module at a time (top-down), the others as trained.
    similarity:
        Measure names (``SIMILARITIES``: ``"spearman_abs"``, ``"spearman"``, ``"pearson"``, ``"cosine"``, ``"ssim"``,
        ``"spatial_spearman"``), callables ``(A_original, A_random) -> [N]``, or a ``{name: callable}`` dict (see
        ``captum_layerpair.sanity.similarity``). Each measure is checked against the source's shape at the first
        ``update``, before any attribution is computed ("ssim" refuses a source without spatial dimensions).
    layers:
        Restrict the randomised modules to these (dotted names or modules of the model, each with parameters of
        its own); by default every module with parameters of its own that runs in the forward pass.
    seed:
        Seeds the re-initialisation (module ``name`` with ``_reinit.module_seed(seed, name)``, so a module gets the
        same new values in every order and in the latent scores' random-model baseline) and the attribution's
        random draws: where the method draws (GradientShap, NoiseTunnel, the paper's expected gradients, ...), the
        sample with dataset index ``i`` is attributed alone with every RNG seeded from ``(seed, i)``, so its draws
        are the same at every step, in every batching and on every rank. Methods that draw nothing run on the
        whole batch.
    batch_invariant:
        Attribute every sample alone, also where the method draws nothing, so that per-sample values are
        bit-identical whatever the batching and the number of processes (numeric kernels may round a sample's
        result differently in batches of different sizes, at the level of float rounding). Slower: up to about
        7x for perturbation methods on small models.
    show_progress:
        Show a progress bar over the randomisation steps (on rank 0 only).
    **metric_kwargs:
        Passed to ``torchmetrics.Metric`` (``sync_on_compute``, ``process_group``, ``dist_sync_fn``, ...).

    Modules are re-initialised with their ``reset_parameters()`` where they have one (which also resets a
    normalisation layer's running statistics), otherwise their parameters are drawn from ``N(0, s^2)`` with ``s``
    the standard deviation of the original values (1 where it is 0). A step that changes neither a parameter nor a
    running statistic warns, once.

    Examples
    --------
    >>> lp = LayerPairAttribution(model, "conv1", "embed", method=Saliency)
    >>> res = ModelParameterRandomization(lp, order="cascading").evaluate(x)      # a tensor or a DataLoader
    >>> res.layer_names, res.similarity["spearman_abs"]      # list[str], [n_layers]
    >>> res.plot()

    As a metric (also in a ``MetricCollection`` or across ``torch.distributed`` ranks):

    >>> check = ModelParameterRandomization(lp, similarity="spearman_abs")
    >>> for batch in DataLoader(IndexedDataset(dataset), batch_size=32):
    ...     check.update(batch["inputs"], indices=batch["index"])
    >>> res = check.compute()                                # means over the whole dataset, every rank
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        layer_pair: LayerPairAttribution,
        order: Order = "cascading",
        similarity: SimilaritySpec = ("spearman_abs", "ssim"),
        layers: Sequence[LayerSpec] | None = None,
        seed: int = 0,
        batch_invariant: bool = False,
        show_progress: bool = False,
        **metric_kwargs: Any,
    ) -> None:
        super().__init__(**metric_kwargs)
        if not isinstance(layer_pair, LayerPairAttribution):
            raise TypeError(f"layer_pair must be a LayerPairAttribution; got {type(layer_pair).__name__}")
        if not isinstance(layer_pair.forward_func, nn.Module):
            raise TypeError("ModelParameterRandomization re-initialises a copy of the model, so the layer pair's "
                            f"forward_func must be an nn.Module; got {type(layer_pair.forward_func).__name__}")
        check_choice("order", order, ORDERS)
        self.layer_pair = layer_pair
        self.order = order
        self.measures = resolve_similarities(similarity)
        self.layers = None if layers is None else [self._check_layer(layer) for layer in layers]
        self.seed = seed
        self.batch_invariant = batch_invariant
        self.show_progress = show_progress
        self.add_state("sample_indices", default=[], dist_reduce_fx="cat")
        self.add_state("sample_values", default=[], dist_reduce_fx="cat")  # [B * n_measures * n_layers] per update
        self._steps: list[Step] | None = None  # fixed by the first update after a reset
        self._attributor = BatchingFreeAttribution(seed, alone=True if batch_invariant else None)
        self._warned: set[str] = set()
        self._next_index = 0  # the default dataset index of the next sample
        self._in_forward = False
        self._kept: list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]] | None = None  # evaluate's
        self._bar: tqdm | None = None  # evaluate's progress bar, over all batches
        self._n_batches: int | None = None

    def _check_layer(self, layer: LayerSpec) -> str:
        found = resolve_layer(self.layer_pair.forward_func, layer, "randomised")
        if next(found.module.parameters(recurse=False), None) is None:
            raise ValueError(f"layer {found.name!r} ({type(found.module).__name__}) has no parameters of its own to "
                             "randomise; modules with parameters: "
                             f"{', '.join(parameterised_names(self.layer_pair.forward_func))}")
        return found.name

    # ------------------------------------------------------------------ the metric protocol

    def reset(self) -> None:
        """Forget every update (the steps are found again at the next one; default indices start at 0 again)."""
        super().reset()
        self._steps = None
        if not self._in_forward:  # Metric.forward resets around its batch-level update: keep numbering
            self._next_index = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``update`` and the result on this batch alone (torchmetrics' ``forward``)."""
        self._in_forward = True
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._in_forward = False

    def update(self, inputs: torch.Tensor | tuple[torch.Tensor, ...],
               indices: Sequence[int] | torch.Tensor | None = None, **attribute_kwargs: Any) -> None:
        """Randomise step by step on this batch and store each sample's similarities with its dataset index.

        Parameters
        ----------
        inputs:
            Model inputs ``[B, ...]`` (or a tuple of them), as for ``LayerPairAttribution.attribute``.
        indices:
            ``[B]`` dataset indices of the samples (they seed the per-sample draws and order the results). By
            default the samples are numbered in the order this process sees them since the last reset; with more
            than one process, give them (``distributed.IndexedDataset``).
        **attribute_kwargs:
            Passed to ``LayerPairAttribution.attribute`` at every step (``target``, ``n_steps``, ``baselines``,
            ``input_baselines``, ``additional_forward_args``, ...). Where the method draws, samples are attributed
            one at a time: ``additional_forward_args`` tensors with a batch dimension are split with them, and
            ``baselines`` / ``input_baselines`` are shared by every sample (one baseline, or a distribution).
        """
        with torch.enable_grad():  # torchmetrics runs update() without gradients; the attributions need them
            self._update(inputs, indices, attribute_kwargs)

    def compute(self) -> RandomizationResult:
        """The result over every sample updated so far, on every rank; a sample seen twice (a padding sampler)
        counts once."""
        if self._steps is None:
            raise ValueError("no samples to summarise: update() was never called since the last reset")
        indices = dim_zero_cat(self.sample_indices).to("cpu", torch.int64)
        values = dim_zero_cat(self.sample_values).to("cpu", torch.float64)
        indices, rows = unique_sorted(indices)
        values = values.reshape(-1, len(self.measures), len(self._steps))[rows]  # [N, n_measures, n_layers]
        per_sample = {measure: values[:, j].T.contiguous() for j, measure in enumerate(self.measures)}
        return RandomizationResult(
            layer_names=[step.name for step in self._steps],
            similarity={measure: v.mean(1) for measure, v in per_sample.items()},
            per_sample=per_sample,
            positions=[step.position for step in self._steps],
            order=self.order,
            method=self.layer_pair.method.name,
            indices=indices,
        )

    def _wrap_compute(self, compute: Any) -> Any:
        """torchmetrics' caching and cross-rank sync, without its squeezing of one-element tensors (a check with
        one randomised module still returns ``[1]`` per measure)."""
        boxed = super()._wrap_compute(lambda: _Box(compute()))

        @functools.wraps(compute)
        def wrapped() -> RandomizationResult:
            return boxed().value

        return wrapped

    # ------------------------------------------------------------------ one call

    def evaluate(self, data: torch.Tensor | tuple[torch.Tensor, ...] | Iterable[Any], keep_attributions: bool = False,
                 **attribute_kwargs: Any) -> RandomizationResult:
        """Reset, update on ``data`` and compute: the check over a batch or a whole dataset in one call.

        Parameters
        ----------
        data:
            Model inputs ``[N, ...]`` (or a tuple of them; dataset indices ``0 .. N-1``), or an iterable of batches
            (a ``DataLoader``): input tensors, ``(inputs, ...)`` tuples, or ``{"inputs", "index"}`` mappings as
            ``distributed.IndexedDataset`` gives (needed with more than one process).
        keep_attributions:
            Also return the original and every step's attribution (``[N, K, *source_shape]`` each; single process).
        **attribute_kwargs:
            Passed to ``LayerPairAttribution.attribute`` at every step (see ``update``).

        Returns
        -------
        RandomizationResult with ``layer_names``, ``similarity`` (measure -> ``[n_layers]``, means over the whole
        dataset and every rank), ``per_sample`` (measure -> ``[n_layers, N]``), ``indices`` and ``positions``.
        """
        if keep_attributions and get_world_size() > 1:
            raise ValueError("keep_attributions works in a single process; with several, compute() gathers only "
                             "the similarities")
        one_batch = isinstance(data, (torch.Tensor, tuple))
        batches = [(data, None)] if one_batch else (split_batch(batch) for batch in data)
        self.reset()
        self._kept = [] if keep_attributions else None
        self._n_batches = 1 if one_batch else len(data) if hasattr(data, "__len__") else None
        with tqdm(desc=f"{self.order} randomisation", unit="module", disable=not self._progress()) as self._bar:
            try:
                for inputs, indices in batches:
                    self.update(inputs, indices=indices, **attribute_kwargs)
                result = self.compute()
            finally:
                kept, self._kept, self._bar = self._kept, None, None
        if kept:
            indices, rows = unique_sorted(torch.cat([k[0] for k in kept]))
            result.original = torch.cat([k[1] for k in kept])[rows]
            result.randomized = [torch.cat(step)[rows] for step in zip(*(k[2] for k in kept))]
        return result

    # ------------------------------------------------------------------ the work

    def _progress(self) -> bool:
        return self.show_progress and get_rank() == 0

    def _update(self, inputs: Any, indices: Any, attribute_kwargs: dict[str, Any]) -> None:
        if attribute_kwargs.get("return_convergence_delta"):
            raise ValueError("return_convergence_delta is not supported here: the check compares attributions only")
        x = inputs if isinstance(inputs, tuple) else (inputs,)
        indices = self._indices(indices, len(x[0]))
        model = _deep_copy(self.layer_pair.forward_func)
        pair = self.layer_pair.on(model)
        steps = self._check_steps(pair, x, attribute_kwargs)
        bar = self._bar if self._bar is not None else tqdm(
            total=len(steps), desc=f"{self.order} randomisation", unit="module", disable=not self._progress())
        if bar.total is None and self._n_batches is not None:
            bar.total = len(steps) * self._n_batches
            bar.refresh()
        trained_state = ({key: value.clone() for key, value in model.state_dict().items()}
                         if self.order == "independent" else None)
        original = self._attributor(pair, x, indices, attribute_kwargs)
        values = torch.empty(len(indices), len(self.measures), len(steps), dtype=torch.float64)
        kept = []
        for i, step in enumerate(steps):
            if trained_state is not None:
                model.load_state_dict(trained_state)
            self._reinitialize(model.get_submodule(step.name), step)
            attribution = self._attributor(pair, x, indices, attribute_kwargs)
            for j, (measure, fn) in enumerate(self.measures.items()):
                values[:, j, i] = _per_sample_values(measure, fn(original, attribution), len(indices))
            if self._kept is not None:
                kept.append(attribution)
            bar.update()
        if bar is not self._bar:
            bar.close()
        if self._kept is not None:
            self._kept.append((indices, original, kept))
        self.sample_indices.append(indices.to(self.device))
        self.sample_values.append(values.flatten().to(self.device))

    def _indices(self, indices: Any, n: int) -> torch.Tensor:
        if indices is None:
            if get_world_size() > 1:
                raise ValueError("with more than one process, give each sample's dataset index (update(x, "
                                 "indices=...), or batches from distributed.IndexedDataset): the indices seed the "
                                 "per-sample draws and put the gathered results in dataset order")
            indices = torch.arange(self._next_index, self._next_index + n)
        indices = torch.as_tensor(indices, dtype=torch.int64).detach().cpu().reshape(-1)
        if len(indices) != n:
            raise ValueError(f"indices must give one dataset index per sample: {n} samples, {len(indices)} indices")
        self._next_index = max(self._next_index, int(indices.max()) + 1) if n else self._next_index
        return indices

    def _check_steps(self, pair: LayerPairAttribution, x: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Step]:
        """The steps on this batch; at the first update the measures are checked against the source's shape."""
        steps = schedule(pair, x, kwargs, self.layers, self.order, self.seed)
        if self._steps is None:
            source = pair.source_activations(x, kwargs.get("additional_forward_args"),
                                             bool(kwargs.get("attribute_to_source_input", False)))
            check_sources(self.measures, source.shape[1:])
            self._steps = steps
        elif steps != self._steps:
            raise ValueError(f"this batch runs the modules {[s.name for s in steps]}, the first batch ran "
                             f"{[s.name for s in self._steps]}: every batch of one check must take the same path")
        return steps

    def _reinitialize(self, module: nn.Module, step: Step) -> None:
        statistics = [b.clone() for b in module.buffers(recurse=False) if b.is_floating_point()]
        changed = reinitialize(module, step.seed)
        changed = changed or any(not torch.equal(old, new) for old, new in
                                 zip(statistics, (b for b in module.buffers(recurse=False) if b.is_floating_point())))
        if not changed and step.name not in self._warned:
            self._warned.add(step.name)
            statistics_too = " (running statistics included)" if statistics else ""
            warnings.warn(f"re-initialising {step.name!r} ({type(module).__name__}) left its parameters unchanged"
                          f"{statistics_too}, so this step cannot change the attribution", stacklevel=2)


class _Box:
    """Hides the result from torchmetrics' collection traversal (squeeze, clone)."""

    def __init__(self, value: RandomizationResult) -> None:
        self.value = value


def _per_sample_values(measure: str, values: Any, n: int) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.shape != (n,):
        raise ValueError(f"similarity measure {measure!r} must return one value per sample, shape [N] = [{n}]; "
                         f"it returned shape {tuple(values.shape)}")
    return values


def _deep_copy(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as error:
        raise TypeError(f"could not deep-copy the model ({type(error).__name__}: {error}); parameter randomisation "
                        "works on a copy so that the model itself is never changed") from error
