"""The computations of a report, one layer pair at a time: attributions and their summaries, latent scores with
their baselines, and the parameter-randomisation check."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from captum_layerpair._user_model import UserInputError, one_line
from captum_layerpair.aggregation import aggregate
from captum_layerpair._typing import MethodSpec
from captum_layerpair._typing import TargetReduction
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.metrics import DisentanglementScore, InformativenessScore, ScoreSummary
from captum_layerpair.sanity import ModelParameterRandomization, RandomizationResult

__all__ = ["PairResult", "user_errors", "checked_layer_pair", "attribute_pair", "score_pair", "randomize_pair"]


@dataclass
class PairResult:
    """What the report holds for one ``source -> target`` pair.

    matrix: ``[K, C]`` mean over the inputs of ``aggregate(A, "abs", over="space")`` (``[K, F]`` for 1-D sources).
    maps: ``[n, K, H, W]`` channel-aggregated ``|A|`` maps of the first ``n`` inputs (``None`` unless the source
        is a 2-D feature map).
    scores: latent score name -> ``ScoreSummary`` (with ``random_model`` and ``null`` baselines).
    randomization: the ``ModelParameterRandomization`` result, or ``None``.
    figures: figure kind -> file name in the report directory.
    """

    source: str
    target: str
    method: str
    source_shape: tuple[int, ...]
    n_units: int
    matrix: torch.Tensor
    maps: torch.Tensor | None
    scores: dict[str, ScoreSummary] = field(default_factory=dict)
    randomization: RandomizationResult | None = None
    figures: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.source} -> {self.target}"


@contextmanager
def user_errors(context: str) -> Iterator[None]:
    """Turn the errors a wrong name, method, keyword or shape raises into one-line ``UserInputError``s."""
    try:
        yield
    except UserInputError:
        raise
    except (ValueError, TypeError, RuntimeError) as e:
        raise UserInputError(f"{context}: {one_line(e)}") from e


def checked_layer_pair(model: nn.Module, source: str, target: str, method: MethodSpec,
                       target_reduction: TargetReduction, sample: torch.Tensor,
                       attribute_kwargs: dict[str, Any]) -> LayerPairAttribution:
    """The layer pair, tried on ``sample`` (one input): an unknown layer or method, a source that does not run
    before the target, or a keyword the method does not take comes back as a ``UserInputError``."""
    name = method if isinstance(method, str) else getattr(method, "__name__", "the method")
    with user_errors(f"cannot set up {name} from {source!r} to {target!r}"):
        lp = LayerPairAttribution(model, source, target, method, target_reduction)
    with user_errors(f"{lp.method.name} from {source!r} to {target!r} failed"):
        lp.attribute(sample, **attribute_kwargs)
    return lp


def attribute_pair(lp: LayerPairAttribution, batches: list[torch.Tensor], attribute_kwargs: dict[str, Any],
                   n_maps: int) -> PairResult:
    """Layer-pair attributions of every batch, reduced to the K x C matrix and the first ``n_maps`` unit maps."""
    total, maps, n_seen = None, [], 0
    for batch in batches:
        A = lp.attribute(batch, **attribute_kwargs).detach()
        matrix = aggregate(A, "abs", over="space").sum(0)
        total = matrix if total is None else total + matrix
        n_seen += len(batch)
        have = sum(len(m) for m in maps)
        if A.dim() == 5 and have < n_maps:
            maps.append(aggregate(A[:n_maps - have], "abs", over="channels"))
    return PairResult(source=lp.source.name, target=lp.target.name, method=lp.method.name,
                      source_shape=tuple(A.shape[2:]), n_units=A.shape[1], matrix=total / n_seen,
                      maps=torch.cat(maps) if maps else None)


def score_pair(lp: LayerPairAttribution, batches: list[torch.Tensor], attribute_kwargs: dict[str, Any],
               seed: int, show_progress: bool) -> dict[str, ScoreSummary]:
    """Informativeness and disentanglement (SPEC section 4) with the random-model and noise baselines."""
    return {score.name: score.evaluate(batches, random_model=True, null=True, seed=seed,
                                       show_progress=show_progress, **attribute_kwargs)
            for score in (InformativenessScore(lp), DisentanglementScore(lp))}


def randomize_pair(lp: LayerPairAttribution, inputs: torch.Tensor, attribute_kwargs: dict[str, Any],
                   with_ssim: bool, seed: int, show_progress: bool) -> RandomizationResult:
    """Cascading model-parameter randomisation (SPEC section 5): similarity to the original attribution, with
    SSIM of the unit maps where they are 2-D and at least 3 wide, else cosine similarity."""
    similarity = ("spearman_abs", "ssim") if with_ssim else ("spearman_abs", "cosine")
    check = ModelParameterRandomization(lp, order="cascading", similarity=similarity, seed=seed,
                                        show_progress=show_progress)
    return check.evaluate(inputs, **attribute_kwargs)
