"""One report of a model's learned representation, shared by the ``captum-layerpair`` CLI and the tutorials.

``build_report`` explains a target layer (typically the embedding) by one or more source layers and writes into
a directory:

* ``<source>__<target>_matrix.png``: the ``K x C`` layer-pair matrix (which source channels each target unit uses);
* ``<source>__<target>_maps.png``: one map per target unit over the first inputs (2-D sources);
* ``<source>__<target>_randomization.png``: similarity to the original attribution as layers are randomised;
* ``scores_<name>.png``: informativeness and disentanglement per pair, against a random model and noise inputs;
* ``scores.json``: every number behind the figures (matrices, scores with per-sample values, curves);
* ``report.html``: all of it on one self-contained page (figures embedded as base64).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm import tqdm

from captum_layerpair import __version__
from captum_layerpair._random import seeded
from captum_layerpair._report_html import Section, Table, render_page
from captum_layerpair._report_sections import (PairResult, attribute_pair, checked_layer_pair, randomize_pair,
                                               score_pair)
from captum_layerpair._user_model import UserInputError, check_forward
from captum_layerpair._typing import MethodSpec
from captum_layerpair._typing import TargetReduction
from captum_layerpair.metrics import ScoreSummary
from captum_layerpair.sanity import RandomizationResult
from captum_layerpair.visualization import plot_layer_pair_matrix, plot_randomization, plot_scores, plot_unit_maps

__all__ = ["Report", "build_report"]

_CONDITIONS = {"model": "trained model", "random_model": "random model", "null": "noise inputs"}


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
    scores: bool = True,
    randomization: bool = True,
    batch_size: int = 64,
    n_map_samples: int = 4,
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
        ``[N, ...]`` float inputs, processed in batches of ``batch_size``.
    sources, target:
        Dotted layer names; every source must run before the target.
    method:
        A Captum method (class, name such as ``"IntegratedGradients"``, or factory), as ``LayerPairAttribution``
        takes it.
    attribute_kwargs:
        Keyword arguments of ``LayerPairAttribution.attribute`` (``n_steps``, ``input_baselines``,
        ``sliding_window_shapes``, ...). Tensors in them must fit any batch (one row, or a number).
    target_reduction:
        How target units are reduced to scalars (``"sum"``, ``"mean"``, ``"none"`` or a callable).
    scores, randomization:
        Compute the latent scores with their baselines / the cascading randomisation curve.
    n_map_samples, n_randomization_samples:
        How many inputs the unit-map figure shows / the randomisation check uses.
    title, model_description, inputs_description:
        Text for the page.
    seed:
        Seed of every random draw (the caller's global RNG state is restored afterwards).
    show_progress:
        Progress bars on stderr.

    Returns
    -------
    Report

    Raises
    ------
    UserInputError
        (a ``ValueError``) for inputs that are not usable, an unknown layer or method, a source that does not run
        before the target, keyword arguments the method does not take, or an output directory that cannot be written.
    """
    inputs = _check_inputs(model, inputs)
    if not sources:
        raise UserInputError("give at least one source layer")
    if batch_size < 1:
        raise UserInputError(f"batch_size must be a positive number of inputs, got {batch_size}")
    kwargs = dict(attribute_kwargs or {})
    with seeded(seed):
        layer_pairs = [checked_layer_pair(model, source, target, method, target_reduction, inputs[:1], kwargs)
                       for source in sources]
    out_dir = _make_dir(out_dir)
    batches = list(inputs.split(batch_size))
    pairs: list[PairResult] = []
    for lp in tqdm(layer_pairs, desc="layer pairs", unit="pair", disable=not show_progress):
        with seeded(seed):  # every draw (torch, NumPy, Python) from the seed; the caller's states come back
            pair = attribute_pair(lp, batches, kwargs, n_map_samples)
            if scores:
                pair.scores = score_pair(lp, batches, kwargs, seed, show_progress)
            if randomization:
                spatial = pair.source_shape[1:]
                with_ssim = len(spatial) == 2 and min(spatial) >= 3  # SSIM needs 2-D maps at least 3 wide
                pair.randomization = randomize_pair(lp, inputs[:n_randomization_samples], kwargs, with_ssim,
                                                    seed, show_progress)
            _pair_figures(pair, inputs[:n_map_samples], out_dir)
            pairs.append(pair)
    score_figures = _score_figures(pairs, out_dir) if scores else {}
    summary = _summary(pairs, score_figures, kwargs, target_reduction, inputs, model, model_description,
                       inputs_description)
    scores_json = out_dir / "scores.json"
    scores_json.write_text(json.dumps(summary, indent=1, default=repr) + "\n")  # repr: e.g. a callable kwarg
    html = out_dir / "report.html"
    html.write_text(render_page(title, _sections(pairs, score_figures, out_dir), _intro(summary)), encoding="utf-8")
    figures = [out_dir / name for pair in pairs for name in pair.figures.values()]
    return Report(out_dir, pairs, summary, figures + [out_dir / n for n in score_figures.values()], scores_json, html)


def _check_inputs(model: nn.Module, inputs: Any) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise UserInputError(f"inputs must be a tensor [N, ...], got {type(inputs).__name__}")
    if not inputs.is_floating_point() or inputs.dim() < 2 or len(inputs) == 0:
        raise UserInputError(f"inputs must be a float tensor [N, ...] with N >= 1; got {inputs.dtype} of shape "
                             f"{list(inputs.shape)}")
    if not torch.isfinite(inputs).all():
        raise UserInputError("inputs contain NaN or inf values")
    check_forward(model, inputs[:1])
    return inputs.detach()


def _make_dir(out_dir: str | Path) -> Path:
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(f"cannot create the output directory {str(path)!r}: {e.strerror}") from e
    return path


def _file_stem(pair: PairResult) -> str:
    return re.sub(r"[^\w.-]", "_", f"{pair.source}__{pair.target}")


def _save(fig: Figure, out_dir: Path, name: str) -> str:
    fig.savefig(out_dir / name, dpi=110)
    return name


def _pair_figures(pair: PairResult, images: torch.Tensor, out_dir: Path) -> None:
    stem = _file_stem(pair)
    fig, _ = plot_layer_pair_matrix(pair.matrix, pair.source, pair.target, use_pyplot=False,
                                    title=f"{pair.method}: {pair.target} <- {pair.source}",
                                    colorbar_label="mean over inputs of sum over space |A|")
    pair.figures["matrix"] = _save(fig, out_dir, f"{stem}_matrix.png")
    if pair.maps is not None:
        fig, _ = plot_unit_maps(pair.maps, images[:len(pair.maps)], overlay=False, source_name=pair.source,
                                target_name=pair.target, use_pyplot=False,
                                title=f"{pair.method}: where each {pair.target} unit looks in {pair.source} "
                                      "(sum over channels of |A|)")
        pair.figures["maps"] = _save(fig, out_dir, f"{stem}_maps.png")
    if pair.randomization is not None:
        fig, _ = plot_randomization(pair.randomization.layer_names, pair.randomization.similarity,
                                    order="cascading, top-down", use_pyplot=False,
                                    title=f"Model-parameter randomisation\n{pair.method}, {pair.label}")
        pair.figures["randomization"] = _save(fig, out_dir, f"{stem}_randomization.png")


def _score_figures(pairs: list[PairResult], out_dir: Path) -> dict[str, str]:
    names = list(dict.fromkeys(name for pair in pairs for name in pair.scores))
    figures = {}
    for name in names:
        groups = {pair.label: {_CONDITIONS[c]: s for c, s in _conditions(pair.scores[name]).items()}
                  for pair in pairs if name in pair.scores}
        fig, _ = plot_scores(groups, title=f"{name.capitalize()} score (mean ± std over inputs)", ylabel=name,
                             use_pyplot=False)
        figures[name] = _save(fig, out_dir, f"scores_{name}.png")
    return figures


def _conditions(summary: ScoreSummary) -> dict[str, ScoreSummary]:
    """The trained-model summary and its baselines, by condition key."""
    found = {"model": summary, "random_model": summary.random_model, "null": summary.null}
    return {key: value for key, value in found.items() if value is not None}


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else round(value, 6)


def _score_json(summary: ScoreSummary) -> dict[str, Any]:
    return {key: {"mean": _number(s.mean), "std": _number(s.std), "n": int(s.values.numel()),
                  "values": [_number(v) for v in s.values.tolist()]}
            for key, s in _conditions(summary).items()}


def _randomization_json(result: RandomizationResult) -> dict[str, Any]:
    return {"order": "cascading", "layer_names": list(result.layer_names),
            "similarity": {m: [_number(v) for v in torch.as_tensor(values).tolist()]
                           for m, values in result.similarity.items()}}


def _summary(pairs: list[PairResult], score_figures: dict[str, str], kwargs: dict[str, Any],
             target_reduction: TargetReduction, inputs: torch.Tensor, model: nn.Module, model_description: str | None,
             inputs_description: str | None) -> dict[str, Any]:
    return {
        "captum_layerpair_version": __version__,
        "model": model_description or type(model).__name__,
        "inputs": {"description": inputs_description or "", "shape": list(inputs.shape)},
        "method": pairs[0].method,
        "attribute_kwargs": {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()},
        "target_reduction": target_reduction if isinstance(target_reduction, str) else repr(target_reduction),
        "score_figures": score_figures,
        "layer_pairs": [{
            "source": pair.source, "target": pair.target, "source_shape": list(pair.source_shape),
            "n_units": pair.n_units, "matrix": [[_number(v) for v in row] for row in pair.matrix.tolist()],
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
        section = Section(f"{pair.label} ({pair.method})", [
            f"Source {pair.source}: per-input shape {list(pair.source_shape)}; target {pair.target}: K = "
            f"{pair.n_units} units."])
        captions = {
            "matrix": "Layer-pair matrix: row k shows how strongly target unit k draws on each source channel "
                      "(|A| summed over positions, averaged over the inputs).",
            "maps": "Unit maps: for each input (row, shown first) and target unit (column), |A| summed over the "
                    "source channels, min-max normalised per map (bright: where that unit draws on the source).",
            "randomization": "Cascading randomisation: the model's layers are re-initialised from the top down; "
                             "an explanation of the trained model falls below 1 once the layers it depends on are "
                             "random, while a curve that stays near 1 shows an explanation insensitive to the "
                             "weights (an edge detector).",
        }
        section.figures = [(out_dir / name, captions[kind]) for kind, name in pair.figures.items()]
        sections.append(section)
    return sections


def _scores_section(pairs: list[PairResult], score_figures: dict[str, str], out_dir: Path) -> Section:
    rows = []
    for pair in pairs:
        for name, summary in pair.scores.items():
            cells = {key: f"{s.mean:.4f} ± {s.std:.4f}" for key, s in _conditions(summary).items()}
            rows.append([pair.label, name] + [cells.get(key, "") for key in _CONDITIONS])
    return Section(
        "Latent scores",
        ["Informativeness: how differently the embedding attends to the data than to noise (0: the same). "
         "Disentanglement: how much the embedding's units attend to different places (variance over units). "
         "Both are reported with two baselines: a randomly re-initialised copy of the model, and noise inputs "
         "(noise vs noise), since input structure alone already produces part of the score."],
        [Table(["layer pair", "score"] + list(_CONDITIONS.values()), rows)],
        [(out_dir / file, f"{name.capitalize()} score per layer pair, mean ± std over the inputs, with its "
                          "baselines.") for name, file in score_figures.items()],
    )
