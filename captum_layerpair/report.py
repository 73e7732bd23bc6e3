"""One report of a model's learned representation, shared by the ``captum-layerpair`` CLI and the tutorials.

``build_report`` explains a target layer (typically the embedding) by one or more source layers and writes into
a directory:

* ``<source>__<target>_matrix.png``: the ``K x C`` layer-pair matrix (which source channels each target unit uses;
  token features for a ``channels_last`` token source, features for a flat source);
* ``<source>__<target>_maps.png`` (``_maps_1.png``, ``_maps_2.png``, ... when K needs several pages): one map per
  target unit over the first inputs, 2-D for image sources, 1-D for sequences, tokens and flat features;
* ``<source>__<target>_randomization.png``: similarity to the original attribution as layers are randomised;
* ``scores_<name>.png``: each registered latent score (``metrics.SCORES``) per pair, against a random model and
  noise inputs;
* ``scores.json``: every number behind the figures (matrices, scores with per-sample values, curves);
* ``report.html``: all of it on one self-contained page (figures embedded as base64).

Memory is bounded by ``batch_size`` inputs and ``target_batch_size`` target units at a time; with
``show_progress`` every attribution shows a bar over the target units.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from captum_layerpair import __version__
from captum_layerpair._checks import check_positive_int
from captum_layerpair._random import seeded
from captum_layerpair._report_figures import CONDITIONS, caption, pair_figures, score_conditions, score_figures
from captum_layerpair._report_html import Section, Table, render_page
from captum_layerpair._report_kwargs import check_attribute_kwargs
from captum_layerpair._report_sections import (PairResult, attribute_pair, checked_layer_pair, memory_errors,
                                               randomize_pair, report_noise, score_pair, user_errors)
from captum_layerpair._typing import MethodSpec, TargetReduction
from captum_layerpair._user_model import UserInputError, check_batches, check_inputs
from captum_layerpair.metrics import SCORES, ScoreSummary
from captum_layerpair.sanity import RandomizationResult

__all__ = ["Report", "build_report", "DEFAULT_BATCH_SIZE", "DEFAULT_TARGET_BATCH_SIZE"]

DEFAULT_BATCH_SIZE = 16
DEFAULT_TARGET_BATCH_SIZE = 8


@dataclass
class Report:
    """The files a report wrote and the results behind them.

    out_dir: the report directory. pairs: one ``PairResult`` per source layer. summary: the content of
    ``scores.json``. figures: every PNG written. scores_json, html: the paths of ``scores.json`` and ``report.html``.
    """

    out_dir: Path
    pairs: list[PairResult]
    summary: dict[str, Any]
    figures: list[Path]
    scores_json: Path
    html: Path


def build_report(
    model: nn.Module,
    inputs: torch.Tensor,
    sources: Sequence[str],
    target: str,
    method: MethodSpec = "IntegratedGradients",
    attribute_kwargs: dict[str, Any] | None = None,
    out_dir: str | Path = "layerpair_report",
    target_reduction: TargetReduction = "sum",
    source_layout: str | None = None,
    target_layout: str | None = None,
    scores: bool = True,
    randomization: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    target_batch_size: int | None = DEFAULT_TARGET_BATCH_SIZE,
    n_map_samples: int = 4,
    max_map_units: int = 64,
    n_randomization_samples: int = 16,
    title: str = "Layer-pair attribution report",
    model_description: str | None = None,
    inputs_description: str | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> Report:
    """Explain ``target`` by each layer in ``sources`` on ``inputs`` and write figures, ``scores.json`` and
    ``report.html`` into ``out_dir``.

    Parameters
    ----------
    model:
        The model (an ``nn.Module``, used as given: put it in eval mode first).
    inputs:
        ``[N, ...]`` inputs: floats, or integer token ids for a model that starts with an ``nn.Embedding``.
        Processed in batches of ``batch_size``.
    sources, target:
        Dotted layer names; every source must run before the target.
    method:
        A Captum method (class, name such as ``"IntegratedGradients"``, or factory), as ``LayerPairAttribution``
        takes it.
    attribute_kwargs:
        Keyword arguments of ``LayerPairAttribution.attribute`` (``n_steps``, ``input_baselines``,
        ``sliding_window_shapes``, ...). Tensors in them must fit any batch (one row, or a number).
        ``input_baselines`` may also be a list: one value per input channel (e.g. ``[0.485, 0.456, 0.406]``),
        broadcast over the other dimensions of an input, or nested lists of one input's shape.
    target_reduction:
        How target units are reduced to scalars (``"sum"``, ``"mean"``, ``"none"`` or a callable).
    source_layout, target_layout:
        ``"channels_first"`` or ``"channels_last"`` (``[N, L, D]`` tokens), passed to ``LayerPairAttribution``
        when given (default: its own default). The figures label their axes from the source's layout.
    scores, randomization:
        Compute every registered latent score with its baselines / the cascading randomisation curve.
    batch_size, target_batch_size:
        Inputs per batch and target units per chunk of every attribution: together they bound the memory (the
        gradient methods hold ``target_batch_size`` gradients per evaluated point). ``target_batch_size=None``:
        all units at once (fastest, most memory).
    n_map_samples, max_map_units, n_randomization_samples:
        How many inputs the unit maps show, at most how many units they show (the largest by attribution mass,
        when K is more than one page of maps), and how many inputs the randomisation check uses.
    title, model_description, inputs_description:
        Text for the page.
    seed:
        Seed of every random draw (the caller's global RNG state is restored afterwards). The scores' noise
        inputs come from a private generator seeded with ``derive_seed(seed, "noise")`` (Uniform[0, 1) for float
        inputs, uniform ids in the observed range for integer inputs), independent of the caller's global RNG:
        data drawn with ``torch.manual_seed(seed); torch.rand(...)`` is not the noise.
    show_progress:
        Progress bars on stderr, advancing per chunk of target units.

    Returns
    -------
    Report

    Raises
    ------
    UserInputError
        (a ``ValueError``) for inputs that are not usable, a model that fails on them or returns NaN, an unknown
        layer or method, a source that does not run before the target, keyword arguments the method does not take
        or with bad values, NaN attributions, running out of memory, or an output directory that cannot be
        written.
    """
    with user_errors("build_report"):
        for name, value in (("batch_size", batch_size), ("n_map_samples", n_map_samples),
                            ("max_map_units", max_map_units), ("n_randomization_samples", n_randomization_samples)):
            check_positive_int(name, value)
        check_positive_int("target_batch_size", target_batch_size, allow_none=True)
    inputs = _check_inputs(model, inputs)
    if not sources:
        raise UserInputError("give at least one source layer")
    given = dict(attribute_kwargs or {})
    kwargs = check_attribute_kwargs(given, inputs)
    defaults = {"target_batch_size": target_batch_size, "show_progress": show_progress}
    layouts = {key: value for key, value in (("source_layout", source_layout), ("target_layout", target_layout))
               if value is not None}
    with seeded(seed):
        layer_pairs = [checked_layer_pair(model, source, target, method, target_reduction, inputs[:2], kwargs,
                                          defaults, layouts) for source in sources]
    out_dir = _make_dir(out_dir)
    batches = list(inputs.split(batch_size))
    pairs: list[PairResult] = []
    for lp in tqdm(layer_pairs, desc="layer pairs", unit="pair", disable=not show_progress):
        with seeded(seed), memory_errors(batch_size, target_batch_size):  # every draw from the seed
            pair = attribute_pair(lp, batches, kwargs, n_map_samples)
            if scores:
                pair.scores = score_pair(lp, batches, kwargs, seed, report_noise(inputs, seed), show_progress)
            if randomization:
                with_ssim = (pair.maps is not None and pair.maps.dim() == 4 and min(pair.maps.shape[2:]) >= 3
                             and pair.layout == "channels_first")  # SSIM needs 2-D maps at least 3 wide
                pair.randomization = randomize_pair(lp, inputs[:n_randomization_samples], kwargs, with_ssim,
                                                    seed, show_progress)
        with tqdm(desc=f"figures of {pair.label}", unit="file", disable=not show_progress) as progress:
            pair_figures(pair, inputs[:n_map_samples], out_dir, max_map_units, progress)
        pairs.append(pair)
    with tqdm(desc="score figures", unit="file", disable=not show_progress or not scores) as progress:
        figures_of_scores = score_figures(pairs, out_dir, progress) if scores else {}
    summary = _summary(pairs, figures_of_scores, given, target_reduction, inputs, model, model_description,
                       inputs_description, batch_size, target_batch_size)
    scores_json = out_dir / "scores.json"
    scores_json.write_text(json.dumps(summary, indent=1, default=repr) + "\n")  # repr: e.g. a callable kwarg
    html = out_dir / "report.html"
    html.write_text(render_page(title, _sections(pairs, figures_of_scores, out_dir), _intro(summary)),
                    encoding="utf-8")
    figures = [out_dir / name for pair in pairs for name in pair.figures.values()]
    return Report(out_dir, pairs, summary, figures + [out_dir / n for n in figures_of_scores.values()], scores_json,
                  html)


def _check_inputs(model: nn.Module, inputs: Any) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise UserInputError(f"inputs must be a tensor [N, ...], got {type(inputs).__name__}")
    check_inputs(inputs)
    check_batches(model, inputs)
    return inputs.detach()


def _make_dir(out_dir: str | Path) -> Path:
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(f"cannot create the output directory {str(path)!r}: {e.strerror}") from e
    return path


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else round(value, 6)


def _score_json(summary: ScoreSummary) -> dict[str, Any]:
    return {key: {"mean": _number(s.mean), "std": _number(s.std), "n": int(s.values.numel()),
                  "values": [_number(v) for v in s.values.tolist()]}
            for key, s in score_conditions(summary).items()}


def _randomization_json(result: RandomizationResult) -> dict[str, Any]:
    return {"order": "cascading", "layer_names": list(result.layer_names),
            "similarity": {m: [_number(v) for v in torch.as_tensor(values).tolist()]
                           for m, values in result.similarity.items()}}


def _summary(pairs: list[PairResult], score_figures: dict[str, str], kwargs: dict[str, Any],
             target_reduction: TargetReduction, inputs: torch.Tensor, model: nn.Module, model_description: str | None,
             inputs_description: str | None, batch_size: int, target_batch_size: int | None) -> dict[str, Any]:
    return {
        "captum_layerpair_version": __version__,
        "model": model_description or type(model).__name__,
        "inputs": {"description": inputs_description or "", "shape": list(inputs.shape),
                   "dtype": str(inputs.dtype).removeprefix("torch.")},
        "method": pairs[0].method,
        "attribute_kwargs": {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()},
        "target_reduction": target_reduction if isinstance(target_reduction, str) else repr(target_reduction),
        "batch_size": batch_size,
        "target_batch_size": target_batch_size,
        "score_figures": score_figures,
        "layer_pairs": [{
            "source": pair.source, "target": pair.target, "source_shape": list(pair.source_shape),
            "source_layout": pair.layout, "n_units": pair.n_units,
            "matrix": [[_number(v) for v in row] for row in pair.matrix.tolist()],
            "map_units": pair.map_units,
            "scores": {name: _score_json(s) for name, s in pair.scores.items()},
            "randomization": None if pair.randomization is None else _randomization_json(pair.randomization),
            "figures": pair.figures,
        } for pair in pairs],
    }


def _intro(summary: dict[str, Any]) -> list[str]:
    inputs = summary["inputs"]
    kwargs = ", ".join(f"{k}={v!r}" for k, v in summary["attribute_kwargs"].items()) or "defaults"
    return [f"Model: {summary['model']}.",
            f"Inputs: {inputs['description'] + ', ' if inputs['description'] else ''}shape {inputs['shape']}.",
            f"Method: {summary['method']} ({kwargs}); target reduction {summary['target_reduction']!r}. "
            f"captum_layerpair {summary['captum_layerpair_version']}.",
            "A layer-pair attribution A[n, k, c, h, w] says how much source unit (c, h, w) contributes to target "
            "unit k on input n, with the model's other paths held at their values for that input."]


def _sections(pairs: list[PairResult], score_figures: dict[str, str], out_dir: Path) -> list[Section]:
    sections = []
    if score_figures:
        sections.append(_scores_section(pairs, score_figures, out_dir))
    for pair in pairs:
        layout = "" if pair.layout == "channels_first" else f" ({pair.layout})"
        section = Section(f"{pair.label} ({pair.method})", [
            f"Source {pair.source}: per-input shape {list(pair.source_shape)}{layout}; target {pair.target}: K = "
            f"{pair.n_units} units."])
        section.figures = [(out_dir / name, caption(pair, kind)) for kind, name in pair.figures.items()]
        sections.append(section)
    return sections


def _scores_section(pairs: list[PairResult], score_figures: dict[str, str], out_dir: Path) -> Section:
    cells = {(pair.label, name): {key: f"{s.mean:.4f} ± {s.std:.4f}" for key, s in score_conditions(summary).items()}
             for pair in pairs for name, summary in pair.scores.items()}
    shown = [key for key in CONDITIONS if any(key in row for row in cells.values())]
    rows = [[label, name] + [row.get(key, "") for key in shown] for (label, name), row in cells.items()]
    descriptions = [f"{name.capitalize()}: {getattr(SCORES.get(name), 'description', '')}" for name in
                    dict.fromkeys(name for _, name in cells)]
    return Section(
        "Latent scores",
        [" ".join(descriptions) + " Each is reported with two baselines: a randomly re-initialised copy of the "
         "model, and noise inputs (noise vs noise for informativeness), since input structure alone already "
         "produces part of the score."],
        [Table(["layer pair", "score"] + [CONDITIONS[key] for key in shown], rows)],
        [(out_dir / file, f"{name.capitalize()} score per layer pair, mean ± std over the inputs, with its "
                          "baselines.") for name, file in score_figures.items()],
    )
