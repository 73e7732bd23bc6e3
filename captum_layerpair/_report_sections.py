"""The computations of a report, one layer pair at a time: attributions and their summaries, latent scores with
their baselines, and the parameter-randomisation check."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from captum_layerpair._user_model import UserInputError, one_line
from captum_layerpair.aggregation import aggregate
from captum_layerpair.attr._methods import MethodSpec
from captum_layerpair.attr._subnetwork import TargetReduction
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.metrics import DisentanglementScore, InformativenessScore, ScoreSummary
from captum_layerpair.sanity import ModelParameterRandomization, RandomizationResult

__all__ = ["PairResult", "user_errors", "attribute_pair", "score_pair", "randomize_pair"]


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


def attribute_pair(
    model: nn.Module, batches: list[torch.Tensor], source: str, target: str, method: MethodSpec,
    attribute_kwargs: dict[str, Any], target_reduction: TargetReduction, n_maps: int,
) -> tuple[LayerPairAttribution, PairResult]:
    """Layer-pair attributions of every batch, reduced to the K x C matrix and the first ``n_maps`` unit maps.

    Errors from building the layer pair or from the first batch (unknown layer or method, source not before
    target, a keyword the method does not take) are the user's and come back as ``UserInputError``.
    """
    with user_errors(f"cannot set up {method if isinstance(method, str) else 'the method'} from {source!r} to "
                     f"{target!r}"):
        lp = LayerPairAttribution(model, source, target, method, target_reduction)
    total, maps, n_seen = None, [], 0
    for i, batch in enumerate(batches):
        check = user_errors(f"{lp.method.name} from {source!r} to {target!r} failed") if i == 0 else nullcontext()
        with check:
            A = lp.attribute(batch, **attribute_kwargs).detach()
        matrix = aggregate(A, "abs", over="space").sum(0)
        total = matrix if total is None else total + matrix
        n_seen += len(batch)
        have = sum(len(m) for m in maps)
        if A.dim() == 5 and have < n_maps:
            maps.append(aggregate(A[:n_maps - have], "abs", over="channels"))
    result = PairResult(source=source, target=target, method=lp.method.name, source_shape=tuple(A.shape[2:]),
                        n_units=A.shape[1], matrix=total / n_seen, maps=torch.cat(maps) if maps else None)
    return lp, result


def score_pair(lp: LayerPairAttribution, batches: list[torch.Tensor], attribute_kwargs: dict[str, Any],
               seed: int, show_progress: bool) -> dict[str, ScoreSummary]:
    """Informativeness and disentanglement (SPEC section 4) with the random-model and noise baselines."""
    return {score.name: score.evaluate(batches, random_model=True, null=True, seed=seed,
                                       show_progress=show_progress, **attribute_kwargs)
            for score in (InformativenessScore(lp), DisentanglementScore(lp))}


def randomize_pair(lp: LayerPairAttribution, inputs: torch.Tensor, attribute_kwargs: dict[str, Any],
                   spatial: bool, seed: int, show_progress: bool) -> RandomizationResult:
    """Cascading model-parameter randomisation (SPEC section 5): similarity to the original attribution."""
    similarity = ("spearman_abs", "ssim") if spatial else ("spearman_abs", "cosine")
    check = ModelParameterRandomization(lp, order="cascading", similarity=similarity, seed=seed,
                                        show_progress=show_progress)
    return check.evaluate(inputs, **attribute_kwargs)
