"""The computations of a report, one layer pair at a time: attributions and their summaries, latent scores with
their baselines, and the parameter-randomisation check."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from captum_layerpair._random import derive_seed
from captum_layerpair._typing import MethodSpec, TargetReduction
from captum_layerpair._user_model import UserInputError, one_line
from captum_layerpair.aggregation import aggregate
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.metrics import SCORES, ScoreSummary
from captum_layerpair.sanity import ModelParameterRandomization, RandomizationResult

__all__ = ["PairResult", "ReportLayerPair", "user_errors", "memory_errors", "checked_layer_pair", "attribute_pair",
           "report_noise", "score_pair", "randomize_pair", "WRAPPER_METHODS"]

WRAPPER_METHODS = ("NoiseTunnel",)
"""Captum classes that wrap another attribution method, so they cannot be named on their own."""


@dataclass
class PairResult:
    """What the report holds for one ``source -> target`` pair.

    matrix: ``[K, C]`` mean over the inputs of ``aggregate(A, "abs", over="space")`` (``[K, F]`` for flat sources);
        ``C`` is the source's channel dimension (the last one for a ``channels_last`` layout).
    maps: ``[n, K, *P]`` channel-aggregated ``|A|`` of the first ``n`` inputs over the source's positions ``P``
        (2-D for images, 1-D for sequences; ``|A|`` itself, ``[n, K, F]``, for flat sources), or ``None`` for
        sources with more than two position dimensions.
    unit_mass: ``[K]`` mean over the inputs of the total ``|A|`` of each target unit (orders the unit maps).
    layout: ``"channels_first"``, ``"channels_last"`` (``[N, L, D]`` tokens) or ``"flat"`` (``[N, F]``).
    scores: latent score name -> ``ScoreSummary`` (with ``random_model`` and ``null`` baselines).
    randomization: the ``ModelParameterRandomization`` result, or ``None``.
    figures: figure kind -> file name in the report directory.
    map_units: the target units the unit-map pages show, in order.
    """

    source: str
    target: str
    method: str
    source_shape: tuple[int, ...]
    n_units: int
    matrix: torch.Tensor
    maps: torch.Tensor | None
    unit_mass: torch.Tensor
    layout: str = "channels_first"
    scores: dict[str, ScoreSummary] = field(default_factory=dict)
    randomization: RandomizationResult | None = None
    figures: dict[str, str] = field(default_factory=dict)
    map_units: list[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.source} -> {self.target}"

    @property
    def channel_label(self) -> str:
        """What a column of the matrix is."""
        return {"channels_last": "token feature", "flat": "source feature"}.get(self.layout, "source channel")

    @property
    def position_label(self) -> str:
        """What a position of a 1-D map is."""
        return {"channels_last": "token position", "flat": "source feature"}.get(self.layout, "position")


class ReportLayerPair(LayerPairAttribution):
    """A ``LayerPairAttribution`` whose ``attribute`` calls take the report's defaults (``target_batch_size``,
    ``show_progress``) unless given: so do the scores and the randomisation check, which call it themselves, and
    the copies ``.on(model)`` makes for random models."""

    defaults: dict[str, Any] = {}

    def attribute(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        return super().attribute(inputs, *args, **{**self.defaults, **kwargs})


@contextmanager
def user_errors(context: str, catch: tuple[type[BaseException], ...] = (ValueError, TypeError, RuntimeError)
                ) -> Iterator[None]:
    """Turn the errors a wrong name, method, keyword or shape raises into one-line ``UserInputError``s."""
    try:
        yield
    except UserInputError:
        raise
    except catch as e:
        raise UserInputError(f"{context}: {type(e).__name__ + ': ' if type(e) not in (ValueError, TypeError) else ''}"
                             f"{one_line(e)}") from e


@contextmanager
def memory_errors(batch_size: int, target_batch_size: int | None) -> Iterator[None]:
    """Running out of memory is a ``UserInputError`` that names the options bounding it."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not any(text in str(e) for text in ("out of memory", "can't allocate")):
            raise
        raise UserInputError(f"ran out of memory with batch size {batch_size} and target batch size "
                             f"{target_batch_size}: lower --batch-size or --target-batch-size") from e


def checked_layer_pair(model: nn.Module, source: str, target: str, method: MethodSpec,
                       target_reduction: TargetReduction, sample: torch.Tensor, attribute_kwargs: dict[str, Any],
                       defaults: dict[str, Any], options: dict[str, Any] | None = None) -> ReportLayerPair:
    """The layer pair (``options``: more ``LayerPairAttribution`` arguments, e.g. ``source_layout``), tried on
    ``sample`` (the first two inputs) for one target unit: an unknown layer or method, a source that does not run
    before the target, or any error of the method and its keyword arguments on that sample comes back as a
    one-line ``UserInputError`` before the real work starts."""
    name = method if isinstance(method, str) else getattr(method, "__name__", "the method")
    if name in WRAPPER_METHODS:
        raise UserInputError(f"method {name!r} wraps another attribution method and cannot be named on its own; in "
                             f"Python pass a factory, e.g. method=lambda f: {name}(IntegratedGradients(f))")
    with user_errors(f"cannot set up {name} from {source!r} to {target!r}"):
        lp = ReportLayerPair(model, source, target, method, target_reduction, **(options or {}))
    lp.defaults = dict(defaults)
    with user_errors(f"{lp.method.name} from {source!r} to {target!r} failed on the first {len(sample)} inputs",
                     catch=(Exception,)):  # the user's model, method and keyword arguments: any error is theirs
        A = lp.attribute(sample, target=[0], show_progress=False, **attribute_kwargs)
    if not torch.isfinite(A).all():
        raise UserInputError(f"{lp.method.name} from {source!r} to {target!r} gives NaN or inf attributions on the "
                             "first inputs; check the model's weights and the method's keyword arguments")
    return lp


def _channels_first(A: torch.Tensor, layout: str) -> torch.Tensor:
    """``A [N, K, *source_shape]`` with the source's channel dimension right after K."""
    return A.movedim(-1, 2) if layout == "channels_last" and A.dim() > 3 else A


def source_layout(lp: LayerPairAttribution, source_dims: int) -> str:
    """The source's layout: ``"flat"`` for ``[N, F]`` sources, else the layer pair's (its source layer's
    ``layout``, or its ``source_layout``; ``"channels_first"`` when it has neither)."""
    if source_dims == 1:
        return "flat"
    return getattr(lp.source, "layout", None) or getattr(lp, "source_layout", None) or "channels_first"


def attribute_pair(lp: LayerPairAttribution, batches: list[torch.Tensor], attribute_kwargs: dict[str, Any],
                   n_maps: int) -> PairResult:
    """Layer-pair attributions of every batch, reduced to the K x C matrix, the unit masses and the first
    ``n_maps`` unit maps; NaN or inf attributions are refused."""
    total, maps, n_seen = None, [], 0
    for batch in batches:
        A = lp.attribute(batch, **attribute_kwargs).detach()
        source_shape, n_units = tuple(A.shape[2:]), A.shape[1]
        if not torch.isfinite(A).all():
            raise UserInputError(f"{lp.method.name} from {lp.source.name!r} to {lp.target.name!r} gives "
                                 f"{int((~torch.isfinite(A)).sum())} NaN or inf attributions; check the model's "
                                 "weights and the method's keyword arguments")
        layout = source_layout(lp, A.dim() - 2)
        A = _channels_first(A, layout)
        matrix = aggregate(A, "abs", over="space").sum(0)
        total = matrix if total is None else total + matrix
        n_seen += len(batch)
        have = sum(len(m) for m in maps)
        if have < n_maps and A.dim() <= 5:
            part = A[:n_maps - have].abs()
            maps.append(part if A.dim() == 3 else aggregate(part, "abs", over="channels"))
    matrix = total / n_seen
    return PairResult(source=lp.source.name, target=lp.target.name, method=lp.method.name, source_shape=source_shape,
                      n_units=n_units, matrix=matrix, maps=torch.cat(maps) if maps else None, unit_mass=matrix.sum(1),
                      layout=layout)


def report_noise(inputs: torch.Tensor, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The noise inputs of the report's scores, from a private generator (never the user's global RNG stream):
    Uniform[0, 1) for float inputs; for integer inputs (token ids), uniform ids in the observed range
    ``[inputs.min(), inputs.max()]``. The generator is seeded with ``derive_seed(seed, "noise")``."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "noise"))
    if inputs.is_floating_point():
        def noise(x: torch.Tensor) -> torch.Tensor:
            return torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    else:
        low, high = int(inputs.min()), int(inputs.max())

        def noise(x: torch.Tensor) -> torch.Tensor:
            return torch.randint(low, high + 1, x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return noise


def score_pair(lp: LayerPairAttribution, batches: list[torch.Tensor], attribute_kwargs: dict[str, Any],
               seed: int, noise: Callable[[torch.Tensor], torch.Tensor] | None,
               show_progress: bool) -> dict[str, ScoreSummary]:
    """Every registered latent score (``captum_layerpair.metrics.SCORES``, SPEC section 4) with the random-model
    and noise baselines; ``noise`` draws the noise inputs of the scores that take one."""
    summaries = {}
    for name, cls in SCORES.items():
        parameters = inspect.signature(cls).parameters
        options = {"noise": noise} if noise is not None and "noise" in parameters else {}
        if "calibrate" in parameters:
            options["calibrate"] = True  # the calibrated score is shown first; raw I and its null come with it
        score = cls(lp, **options)
        summaries[name] = score.evaluate(batches, random_model=True, null=True, seed=seed,
                                         show_progress=show_progress, **attribute_kwargs)
    return summaries


def randomize_pair(lp: LayerPairAttribution, inputs: torch.Tensor, attribute_kwargs: dict[str, Any],
                   with_ssim: bool, seed: int, show_progress: bool) -> RandomizationResult:
    """Cascading model-parameter randomisation (SPEC section 5): similarity to the original attribution, with
    SSIM of the unit maps where they are 2-D and at least 3 wide, else cosine similarity."""
    similarity = ("spearman_abs", "ssim") if with_ssim else ("spearman_abs", "cosine")
    check = ModelParameterRandomization(lp, order="cascading", similarity=similarity, seed=seed,
                                        show_progress=show_progress)
    return check.evaluate(inputs, **attribute_kwargs)
