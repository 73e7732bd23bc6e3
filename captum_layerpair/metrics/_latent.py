"""What the latent scores share: per-unit maps, input checks, noise inputs, and dataset evaluation with baselines."""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Union

import torch
from torch import nn
from tqdm import tqdm

from captum_layerpair._reinit import randomized_copy as _randomized_model
from captum_layerpair.aggregation import NORMALIZATIONS, TRANSFORMS, Transform, aggregate, apply_transform
from captum_layerpair.attr.layer_pair import LayerPairAttribution
from captum_layerpair.metrics.summary import ScoreAccumulator, ScoreSummary

__all__ = ["Noise", "check_attributions", "check_normalization", "check_options", "unit_maps", "make_noise",
           "randomized_copy", "batch_inputs", "LatentScore"]

Noise = Union[str, Callable[[torch.Tensor], torch.Tensor]]
NOISES = ("uniform", "gaussian")


def check_attributions(A: Any, name: str = "A") -> torch.Tensor:
    """Check a layer-pair attribution ``[N, K, C, *spatial]`` or ``[N, K, F]``: a finite tensor with >= 3 dims."""
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, K, C, *spatial] or [N, K, F], got {type(A).__name__}")
    if A.dim() < 3:
        raise ValueError(f"{name} must have shape [N, K, C, *spatial] or [N, K, F]; got shape {tuple(A.shape)}")
    if not A.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {A.dtype}")
    bad = ~torch.isfinite(A)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or inf values (shape {tuple(A.shape)}); the scores "
                         "of non-finite attributions are undefined")
    return A


def check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; allowed: {list(NORMALIZATIONS)}")


def check_options(transform: Transform, normalization: str, noise: Noise) -> None:
    """Reject unknown transform, normalization and noise names early (at construction)."""
    if not callable(transform) and transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; allowed: {sorted(TRANSFORMS)} or a callable")
    check_normalization(normalization)
    if not callable(noise) and noise not in NOISES:
        raise ValueError(f"unknown noise {noise!r}; allowed: {list(NOISES)} or a callable inputs -> noise batch")


def unit_maps(A: torch.Tensor, transform: Transform = "abs") -> torch.Tensor:
    """Per-unit maps ``M_k``: ``[N, K, *spatial]`` (channels summed after ``transform``) for ``[N, K, C, *spatial]``;
    ``transform(A)`` itself, ``[N, K, F]``, for a 1-D source (each feature is a position)."""
    return apply_transform(A, transform) if A.dim() == 3 else aggregate(A, transform, over="channels")


def make_noise(inputs: torch.Tensor, noise: Noise) -> torch.Tensor:
    """A noise batch shaped like ``inputs``.

    ``"uniform"``: i.i.d. Uniform[0, 1). ``"gaussian"``: i.i.d. normal with the batch's mean and (population)
    standard deviation per channel (dim 1, over the batch and all other dims). A callable receives the batch and
    returns the noise batch. Draws use the global torch RNG.
    """
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise TypeError("noise inputs need a floating-point input tensor; got "
                        f"{type(inputs).__name__ if not isinstance(inputs, torch.Tensor) else inputs.dtype}")
    if callable(noise):
        out = noise(inputs)
        if not isinstance(out, torch.Tensor) or out.shape != inputs.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the noise callable must return a tensor of the input's shape {tuple(inputs.shape)}; "
                             f"it returned {got}")
        return out
    if noise == "uniform":
        return torch.rand_like(inputs)
    if noise == "gaussian":
        dims = [d for d in range(inputs.dim()) if d != 1] if inputs.dim() > 1 else [0]
        mean = inputs.mean(dims, keepdim=True)
        std = inputs.std(dims, keepdim=True, correction=0)
        return mean + std * torch.randn_like(inputs)
    raise ValueError(f"unknown noise {noise!r}; allowed: {list(NOISES)} or a callable inputs -> noise batch")


def randomized_copy(layer_pair: LayerPairAttribution, seed: int = 0) -> LayerPairAttribution:
    """The same layer pair on a deep copy of its model with every parameter re-initialised (seeded).

    Each parameterised module is re-initialised with ``reinitialize(module, module_seed(seed, name))``, exactly as
    ``ModelParameterRandomization`` does, so both give the same parameters for the same module and seed. The
    user's model is not touched.
    """
    if not isinstance(layer_pair.forward_func, nn.Module):
        raise TypeError("a random-model baseline needs the layer pair's forward_func to be an nn.Module, got "
                        f"{type(layer_pair.forward_func).__name__}")
    return layer_pair.on(_randomized_model(layer_pair.forward_func, seed))


def batch_inputs(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError("evaluate() needs batches that are input tensors or tuples / lists whose first item is the "
                    f"input tensor (as a TensorDataset gives); got a {type(batch).__name__}")


class LatentScore:
    """Base of the latent scores: ``score(inputs) -> [N]`` per batch, ``evaluate(dataloader)`` over a dataset."""

    name = "score"

    def __init__(self, layer_pair: LayerPairAttribution, transform: Transform, normalization: str,
                 noise: Noise) -> None:
        if not isinstance(layer_pair, LayerPairAttribution):
            raise TypeError(f"layer_pair must be a LayerPairAttribution, got {type(layer_pair).__name__}")
        check_options(transform, normalization, noise)
        self.layer_pair = layer_pair
        self.transform = transform
        self.normalization = normalization
        self.noise = noise

    def score(self, inputs: torch.Tensor, **attribute_kwargs: Any) -> torch.Tensor:
        """Per-sample scores ``[N]`` of ``inputs [N, ...]``; ``attribute_kwargs`` go to ``layer_pair.attribute``."""
        raise NotImplementedError

    def evaluate(self, dataloader: Iterable[Any], random_model: bool = False, null: bool = False, seed: int = 0,
                 show_progress: bool = False, **attribute_kwargs: Any) -> ScoreSummary:
        """Score every sample of a dataset and summarise, with optional honest baselines.

        Parameters
        ----------
        dataloader:
            Iterable of input batches ``[B, ...]`` or of tuples whose first item is the input batch.
        random_model:
            Also score a copy of the model with every parameter re-initialised (seeded with ``seed``).
        null:
            Also score noise inputs drawn like this score's ``noise`` (for informativeness: noise vs. noise), which
            shows how much of the score the input structure alone produces.
        show_progress:
            Show a progress bar over batches.
        **attribute_kwargs:
            Passed to ``layer_pair.attribute`` (e.g. ``n_steps``, ``attribute_to_source_input``).

        Returns
        -------
        ScoreSummary with mean, std, per-sample ``values [n]`` and, when asked for, ``random_model`` and ``null``.
        States are reduced across ``torch.distributed`` ranks when a process group is initialised.
        """
        scorers = {"main": self}
        if random_model:
            scorers["random_model"] = copy.copy(self)
            scorers["random_model"].layer_pair = randomized_copy(self.layer_pair, seed)
        accumulators = {key: ScoreAccumulator(self.name) for key in (*scorers, *(["null"] if null else []))}
        total = len(dataloader) if hasattr(dataloader, "__len__") else None
        for batch in tqdm(dataloader, total=total, desc=f"{self.name} score", unit="batch", disable=not show_progress):
            x = batch_inputs(batch)
            for key, scorer in scorers.items():
                accumulators[key].update(scorer.score(x, **attribute_kwargs))
            if null:
                accumulators["null"].update(self.score(make_noise(x, self.noise), **attribute_kwargs))
        summary = accumulators["main"].compute()
        if random_model:
            summary.random_model = accumulators["random_model"].compute()
        if null:
            summary.null = accumulators["null"].compute()
        return summary
