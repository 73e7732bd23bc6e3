"""Model-parameter randomisation checks for layer-pair attributions (Adebayo et al. 2018; paper, section 4).

If an attribution method explains what the model learned, re-initialising the model's weights must change its
maps. ``ModelParameterRandomization`` re-initialises the parameterised modules of a *copy* of the model one after
the other, recomputes the layer-pair attribution after each step and compares it with the original one.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from tqdm import tqdm

from captum_layerpair._model_state import model_state_preserved
from captum_layerpair._random import seeded
from captum_layerpair._reinit import module_seed, reinitialize
from captum_layerpair._typing import LayerSpec
from captum_layerpair.layers import Layer, resolve_layer
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.sanity.similarity import SimilaritySpec, resolve_similarities

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ModelParameterRandomization", "RandomizationResult", "ORDERS", "POSITIONS"]

Order = Literal["cascading", "independent", "bottom_up"]
ORDERS = ("cascading", "independent", "bottom_up")
# Where a randomised module sits relative to the layer pair: it runs after the target has been computed (it cannot
# change the attribution), between source and target (target included: it changes g_x), or up to the source
# (source included: it changes the source activation a itself).
POSITIONS = ("after_target", "between", "up_to_source")

_XLABELS = {"cascading": "randomised module (cumulative, from the top)",
            "bottom_up": "randomised module (cumulative, from the bottom)",
            "independent": "randomised module (one at a time)"}
_REGION_COLOURS = {"after_target": "0.85", "up_to_source": "#fde0c5"}


@dataclass
class RandomizationResult:
    """What ``ModelParameterRandomization.evaluate`` found.

    Attributes
    ----------
    layer_names:
        Dotted names of the randomised modules, in randomisation order (``n_layers`` of them).
    similarity:
        Per measure, ``[n_layers]``: the mean over samples of the similarity between the attribution after each
        step and the original model's attribution.
    per_sample:
        Per measure, ``[n_layers, N]``: the same per sample.
    positions:
        For each randomised module, ``"after_target"``, ``"between"`` or ``"up_to_source"`` (see ``POSITIONS``).
    order, method:
        The randomisation order and the attribution method's name.
    original:
        ``[N, K, *source_shape]``: the original model's attribution (with ``keep_attributions=True``).
    randomized:
        One ``[N, K, *source_shape]`` attribution per step (with ``keep_attributions=True``).
    """

    layer_names: list[str]
    similarity: dict[str, torch.Tensor]
    per_sample: dict[str, torch.Tensor]
    positions: list[str]
    order: str
    method: str
    original: torch.Tensor | None = None
    randomized: list[torch.Tensor] | None = None

    def plot(self, ax: Axes | None = None) -> Figure:
        """Similarity against randomised module: one line per measure, a band of +-1 standard deviation over
        samples; modules after the target are shaded grey, the source and modules before it orange."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

        n = len(self.layer_names)
        if ax is None:
            _, ax = plt.subplots(figsize=(max(4.5, 0.55 * n + 2.5), 3.8))
        steps = torch.arange(n).numpy()
        for name, mean in self.similarity.items():
            spread = self.per_sample[name].std(1, correction=0)
            (line,) = ax.plot(steps, mean.numpy(), marker="o", label=name)
            ax.fill_between(steps, (mean - spread).numpy(), (mean + spread).numpy(), color=line.get_color(),
                            alpha=0.15)
        handles, _ = ax.get_legend_handles_labels()
        for region, colour in _REGION_COLOURS.items():
            shaded = [i for i, position in enumerate(self.positions) if position == region]
            for i in shaded:
                ax.axvspan(i - 0.5, i + 0.5, color=colour, zorder=0, lw=0)
            if shaded:
                label = "after the target" if region == "after_target" else "source and before"
                handles.append(Patch(color=colour, label=label))
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_xticks(steps, self.layer_names, rotation=45, ha="right")
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_xlabel(_XLABELS[self.order])
        ax.set_ylabel("similarity to original attribution")
        ax.set_title(f"{self.method}: {self.order.replace('_', '-')} parameter randomisation")
        ax.legend(handles=handles, fontsize="small")
        ax.figure.tight_layout()
        return ax.figure


class ModelParameterRandomization:
    r"""Re-initialise a copy of the model module by module and measure how much a layer-pair attribution changes.

    Parameters
    ----------
    layer_pair:
        The ``LayerPairAttribution`` to check; its ``forward_func`` must be an ``nn.Module``. It is rebuilt on a
        deep copy of the model with the same layer names, method, target reduction and method arguments; the
        user's model (parameters, buffers, hooks, train/eval mode) is never touched.
    order:
        ``"cascading"``: top-down and cumulative (the last parameterised module in the forward pass first, then
        the one before it, keeping earlier randomisations); ``"bottom_up"``: cumulative from the first module;
        ``"independent"``: one module at a time (top-down), the others as trained.
    similarity:
        Measure names (``"spearman_abs"``, ``"spearman"``, ``"pearson"``, ``"cosine"``, ``"ssim"``), callables
        ``(A_original, A_random) -> [N]``, or a ``{name: callable}`` dict (see ``captum_layerpair.sanity.similarity``).
    layers:
        Restrict the randomised modules to these (dotted names or modules of the model, each with parameters of
        its own); by default every module with parameters of its own that runs in the forward pass.
    seed:
        Seeds the re-initialisation (module ``i`` of the forward order with a seed mixed from ``(seed, i)``, so
        a module gets the same new values in every order, and not the values a model built after
        ``torch.manual_seed(small int)`` started from) and the attribution's random draws (the same for every
        step, so a stochastic method such as GradientShap is compared with itself on identical draws).
    show_progress:
        Show a progress bar over the randomisation steps.

    Modules are re-initialised with their ``reset_parameters()`` where they have one, otherwise their parameters
    are drawn from ``N(0, s^2)`` with ``s`` the standard deviation of the original values (1 where it is 0).

    Examples
    --------
    >>> lp = LayerPairAttribution(model, "conv1", "embed", method=Saliency)
    >>> res = ModelParameterRandomization(lp, order="cascading").evaluate(x)
    >>> res.layer_names, res.similarity["spearman_abs"]      # list[str], [n_layers]
    >>> res.plot()
    """

    def __init__(
        self,
        layer_pair: LayerPairAttribution,
        order: Order = "cascading",
        similarity: SimilaritySpec = ("spearman_abs", "ssim"),
        layers: Sequence[LayerSpec] | None = None,
        seed: int = 0,
        show_progress: bool = False,
    ) -> None:
        if not isinstance(layer_pair, LayerPairAttribution):
            raise TypeError(f"layer_pair must be a LayerPairAttribution; got {type(layer_pair).__name__}")
        if not isinstance(layer_pair.forward_func, nn.Module):
            raise TypeError("ModelParameterRandomization re-initialises a copy of the model, so the layer pair's "
                            f"forward_func must be an nn.Module; got {type(layer_pair.forward_func).__name__}")
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; allowed: {', '.join(map(repr, ORDERS))}")
        self.layer_pair = layer_pair
        self.order = order
        self.measures = resolve_similarities(similarity)
        self.layers = None if layers is None else [self._check_layer(layer) for layer in layers]
        self.seed = seed
        self.show_progress = show_progress

    def _check_layer(self, layer: LayerSpec) -> str:
        name, module = _name_module(resolve_layer(self.layer_pair.forward_func, layer, "randomised"))
        if not _own_parameters(module):
            raise ValueError(f"layer {name!r} ({type(module).__name__}) has no parameters of its own to randomise; "
                             f"modules with parameters: {', '.join(_parameterised(self.layer_pair.forward_func))}")
        return name

    def evaluate(self, inputs: torch.Tensor | tuple[torch.Tensor, ...], keep_attributions: bool = False,
                 **attribute_kwargs: Any) -> RandomizationResult:
        """Randomise step by step and compare each step's attribution with the original model's.

        Parameters
        ----------
        inputs:
            Model inputs ``[N, ...]`` (or a tuple of them), as for ``LayerPairAttribution.attribute``.
        keep_attributions:
            Also return the original and every step's attribution (``[N, K, *source_shape]`` each).
        **attribute_kwargs:
            Passed to ``LayerPairAttribution.attribute`` for every step (``target``, ``n_steps``,
            ``baselines``, ``input_baselines``, ``additional_forward_args``, ...).

        Returns
        -------
        RandomizationResult with ``layer_names``, ``similarity`` (measure -> ``[n_layers]``), ``per_sample``
        (measure -> ``[n_layers, N]``) and ``positions``.
        """
        if attribute_kwargs.get("return_convergence_delta"):
            raise ValueError("return_convergence_delta is not supported here: the check compares attributions only")
        model = _deep_copy(self.layer_pair.forward_func)
        pair = self.layer_pair.on(model)
        schedule = self._schedule(pair, inputs, attribute_kwargs)
        trained_state = ({key: value.clone() for key, value in model.state_dict().items()}
                         if self.order == "independent" else None)
        original = self._attribute(pair, inputs, attribute_kwargs)
        scores: dict[str, list[torch.Tensor]] = {name: [] for name in self.measures}
        kept = []
        for name, seed_of_module, _ in tqdm(schedule, desc=f"{self.order} randomisation", unit="module",
                                         disable=not self.show_progress):
            if trained_state is not None:
                model.load_state_dict(trained_state)
            module = model.get_submodule(name)
            if not reinitialize(module, seed_of_module) and not _has_running_stats(module):
                warnings.warn(f"re-initialising {name!r} ({type(module).__name__}) left its parameters unchanged, so "
                              "this step cannot change the attribution", stacklevel=2)
            attribution = self._attribute(pair, inputs, attribute_kwargs)
            for measure, fn in self.measures.items():
                scores[measure].append(_per_sample_values(measure, fn(original, attribution), len(original)))
            if keep_attributions:
                kept.append(attribution)
        per_sample = {measure: torch.stack(values) for measure, values in scores.items()}
        return RandomizationResult(
            layer_names=[name for name, _, _ in schedule],
            similarity={measure: values.mean(1) for measure, values in per_sample.items()},
            per_sample=per_sample,
            positions=[position for _, _, position in schedule],
            order=self.order,
            method=pair.method.name,
            original=original if keep_attributions else None,
            randomized=kept if keep_attributions else None,
        )

    def _schedule(self, pair: LayerPairAttribution, inputs: Any,
                  attribute_kwargs: dict[str, Any]) -> list[tuple[str, int, str]]:
        """``(name, seed, position)`` of each module to randomise, in randomisation order."""
        runs = _forward_order(pair, inputs, attribute_kwargs)
        if self.layers is None:
            chosen = [name for name, _ in runs]
        else:
            missing = [name for name in self.layers if name not in dict(runs)]
            if missing:
                raise ValueError(f"layers {missing} do not run in the forward pass on these inputs, so randomising "
                                 f"them cannot change anything; modules that run: {', '.join(n for n, _ in runs)}")
            chosen = [name for name, _ in runs if name in self.layers]
        schedule = [(name, module_seed(self.seed, name), position) for name, position in runs if name in chosen]
        if not schedule:
            raise ValueError("no module with parameters runs in the forward pass: nothing to randomise")
        return schedule if self.order == "bottom_up" else schedule[::-1]

    def _attribute(self, pair: LayerPairAttribution, inputs: Any, attribute_kwargs: dict[str, Any]) -> torch.Tensor:
        """The attribution ``[N, K, *source_shape]`` with the same random draws at every call."""
        with seeded(self.seed):
            attribution = pair.attribute(inputs, **attribute_kwargs)
        target = attribute_kwargs.get("target")
        if isinstance(target, int) or (isinstance(target, torch.Tensor) and target.dim() == 0):
            attribution = attribution.unsqueeze(1)
        return attribution.detach()


def _per_sample_values(measure: str, values: Any, n: int) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.shape != (n,):
        raise ValueError(f"similarity measure {measure!r} must return one value per sample, shape [N] = [{n}]; "
                         f"it returned shape {tuple(values.shape)}")
    return values


def _own_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _parameterised(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if name and _own_parameters(module)]


def _deep_copy(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as error:
        raise TypeError(f"could not deep-copy the model ({type(error).__name__}: {error}); parameter randomisation "
                        "works on a copy so that the model itself is never changed") from error


def _forward_order(pair: LayerPairAttribution, inputs: Any, attribute_kwargs: dict[str, Any]) -> list[tuple[str, str]]:
    """``(name, position)`` of the parameterised modules that run on ``inputs``, in the order they are first called.

    One forward pass (no gradient, state restored) records when each module is first called and when the source
    value and the target output are ready; ``position`` follows from these times (see ``POSITIONS``).
    """
    model = pair.forward_func
    to_source_input = bool(attribute_kwargs.get("attribute_to_source_input", False))
    clock: dict[str, int] = {}

    def stamp(key: str) -> Any:
        def hook(*_: Any) -> None:
            clock.setdefault(key, len(clock))
        return hook

    source_module, target_module = pair.source_layer, pair.target_layer
    handles = [source_module.register_forward_pre_hook(stamp("<source>")) if to_source_input
               else source_module.register_forward_hook(stamp("<source>")),
               target_module.register_forward_hook(stamp("<target>"))]
    names = _parameterised(model)
    handles += [model.get_submodule(name).register_forward_pre_hook(stamp(name)) for name in names]
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    extra = attribute_kwargs.get("additional_forward_args")
    extra = () if extra is None else extra if isinstance(extra, tuple) else (extra,)
    try:
        with torch.no_grad(), model_state_preserved(model):
            model(*inputs, *extra)
    finally:
        for handle in handles:
            handle.remove()
    source_time, target_time = clock.get("<source>", -1), clock.get("<target>", len(clock))
    runs = sorted((time, name) for name, time in clock.items() if name in names)
    return [(name, "after_target" if time > target_time else "up_to_source" if time < source_time else "between")
            for time, name in runs]


def _name_module(layer: Layer) -> tuple[str, nn.Module]:
    return layer.name, layer.module


def _has_running_stats(module: nn.Module) -> bool:
    """Normalisation layers whose re-initialisation also resets running statistics (buffers)."""
    return callable(getattr(module, "reset_running_stats", None))
