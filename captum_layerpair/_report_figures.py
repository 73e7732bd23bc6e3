"""The report's figures of one layer pair and of the scores, written as PNG files, with their captions.

Unit maps come in pages, so that each map stays readable whatever K is: 8 units per page for 2-D maps (images),
16 for 1-D maps (sequences, tokens, features). With more units than one page holds, the units are ordered by
their attribution mass and at most ``max_units`` of them (the largest) are shown.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from captum_layerpair._report_sections import PairResult
from captum_layerpair.metrics import ScoreSummary
from captum_layerpair.visualization import (plot_layer_pair_matrix, plot_position_maps, plot_randomization,
                                            plot_scores, plot_unit_maps)

__all__ = ["UNITS_PER_PAGE", "CONDITIONS", "score_conditions", "map_pages", "pair_figures", "score_figures",
           "caption"]

UNITS_PER_PAGE = {2: 8, 1: 16}
"""Units per page of unit maps, by the number of position dimensions of the maps."""

CONDITIONS = {"calibrated": "calibrated", "calibrated_random_model": "calibrated, random model",
              "model": "trained model", "random_model": "random model", "null": "noise inputs"}
"""The conditions a score is reported under (key in scores.json -> label), in the order shown."""


def score_conditions(summary: ScoreSummary) -> dict[str, ScoreSummary]:
    """The score's summaries by condition key, in ``CONDITIONS`` order: the calibrated score first where the
    summary has one, then the trained model's and its baselines."""
    random_model = summary.random_model
    found = {"calibrated": getattr(summary, "calibrated", None),
             "calibrated_random_model": getattr(random_model, "calibrated", None),
             "model": summary, "random_model": random_model, "null": summary.null}
    return {key: value for key, value in found.items() if value is not None}


def _file_stem(pair: PairResult) -> str:
    return re.sub(r"[^\w.-]", "_", f"{pair.source}__{pair.target}")


def _save(fig: Figure, out_dir: Path, name: str, progress: tqdm | None) -> str:
    fig.savefig(out_dir / name, dpi=110)
    if progress is not None:
        progress.update(1)
    return name


def map_pages(unit_mass: torch.Tensor, n_positions: int, max_units: int) -> list[list[int]]:
    """The units of each page of unit maps: all units in index order when they fit one page, else the
    ``max_units`` units of largest mass, in decreasing mass."""
    per_page = UNITS_PER_PAGE[n_positions]
    n_units = len(unit_mass)
    if n_units <= per_page:
        return [list(range(n_units))]
    order = torch.argsort(unit_mass, descending=True, stable=True)[:max_units].tolist()
    return [order[i:i + per_page] for i in range(0, len(order), per_page)]


def _displayable(images: torch.Tensor | None) -> bool:
    """Inputs the unit-map figure can show beside the maps: float images ``[n, 1 or 3, H, W]`` or ``[n, H, W]``."""
    return (images is not None and images.is_floating_point()
            and (images.dim() == 3 or (images.dim() == 4 and images.shape[1] in (1, 3))))


def pair_figures(pair: PairResult, images: torch.Tensor | None, out_dir: Path, max_map_units: int,
                 progress: tqdm | None = None) -> None:
    """Write the pair's matrix, unit-map pages and randomisation curve; record them in ``pair.figures``;
    ``progress`` advances by one per file."""
    stem = _file_stem(pair)
    fig, _ = plot_layer_pair_matrix(pair.matrix, pair.source, pair.target, use_pyplot=False,
                                    title=f"{pair.method}: {pair.target} <- {pair.source}",
                                    colorbar_label="mean over inputs of sum over positions |A|",
                                    column_label=pair.channel_label)
    pair.figures["matrix"] = _save(fig, out_dir, f"{stem}_matrix.png", progress)
    if pair.maps is not None:
        n_positions = pair.maps.dim() - 2
        pages = map_pages(pair.unit_mass, n_positions, max_map_units)
        pair.map_units = [unit for page in pages for unit in page]
        for number, units in enumerate(pages, start=1):
            suffix = "" if len(pages) == 1 else f"_{number}"
            page = "" if len(pages) == 1 else f" (page {number} of {len(pages)})"
            if n_positions == 2:
                shown = images[:len(pair.maps)] if _displayable(images) else None
                fig, _ = plot_unit_maps(pair.maps, shown, units=units, overlay=False, source_name=pair.source,
                                        target_name=pair.target, use_pyplot=False,
                                        title=f"{pair.method}: where each {pair.target} unit looks in {pair.source} "
                                              f"(sum over channels of |A|){page}")
            else:
                what = "|A|" if pair.layout == "flat" else "sum over channels of |A|"
                fig, _ = plot_position_maps(pair.maps, units=units, position_label=pair.position_label,
                                            source_name=pair.source, target_name=pair.target, use_pyplot=False,
                                            title=f"{pair.method}: where each {pair.target} unit looks in "
                                                  f"{pair.source} ({what}){page}")
            pair.figures[f"maps{suffix}"] = _save(fig, out_dir, f"{stem}_maps{suffix}.png", progress)
    if pair.randomization is not None:
        fig, _ = plot_randomization(pair.randomization.layer_names, pair.randomization.similarity,
                                    order="cascading, top-down", use_pyplot=False,
                                    title=f"Model-parameter randomisation\n{pair.method}, {pair.label}")
        pair.figures["randomization"] = _save(fig, out_dir, f"{stem}_randomization.png", progress)


def score_figures(pairs: list[PairResult], out_dir: Path, progress: tqdm | None = None) -> dict[str, str]:
    """One bar chart per score over the layer pairs and conditions; score name -> file name."""
    names = list(dict.fromkeys(name for pair in pairs for name in pair.scores))
    figures = {}
    for name in names:
        groups = {pair.label: {CONDITIONS[key]: s for key, s in score_conditions(pair.scores[name]).items()}
                  for pair in pairs if name in pair.scores}
        fig, _ = plot_scores(groups, title=f"{name.capitalize()} score (mean ± std over inputs)", ylabel=name,
                             use_pyplot=False)
        figures[name] = _save(fig, out_dir, f"scores_{name}.png", progress)
    return figures


def caption(pair: PairResult, kind: str) -> str:
    """The caption of figure ``kind`` (``"matrix"``, ``"maps"``, ``"maps_2"``, ``"randomization"``) of ``pair``."""
    if kind == "matrix":
        return (f"Layer-pair matrix: row k shows how strongly target unit k draws on each {pair.channel_label} "
                "(|A| summed over positions, averaged over the inputs).")
    if kind == "randomization":
        return ("Cascading randomisation: the model's layers are re-initialised from the top down; an explanation "
                "of the trained model falls below 1 once the layers it depends on are random, while a curve that "
                "stays near 1 shows an explanation insensitive to the weights (an edge detector).")
    n_positions = pair.maps.dim() - 2
    if n_positions == 2:
        text = ("Unit maps: for each input (row, shown first where it is an image) and target unit (column), |A| "
                "summed over the source channels, min-max normalised per map (bright: where that unit draws on the "
                "source).")
    else:
        text = (f"Unit maps: for each input (panel), one row per target unit over the {pair.position_label}s, |A|"
                f"{'' if pair.layout == 'flat' else ' summed over the source channels'}, min-max normalised per "
                "row (bright: where that unit draws on the source).")
    if pair.n_units > UNITS_PER_PAGE[n_positions]:
        shown = len(pair.map_units)
        text += (f" Units in decreasing attribution mass ({shown} of K = {pair.n_units}"
                 f"{', the largest' if shown < pair.n_units else ''}).")
    return text
