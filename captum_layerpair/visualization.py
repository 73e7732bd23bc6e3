"""Matplotlib figures for layer-pair attributions, latent scores and parameter-randomisation checks.

Every function follows ``captum.attr.visualization``: it returns ``(fig, ax)`` (``(fig, axes)`` for grids), draws
into ``plt_fig_axis=(fig, ax)`` when given, and with ``use_pyplot=True`` creates the figure through pyplot and
calls ``plt.show()``; with ``use_pyplot=False`` it builds a bare ``matplotlib.figure.Figure`` (no global pyplot
state), which is what scripts and the report use.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from captum_layerpair._checks import check_choice
from captum_layerpair.aggregation import normalize as normalize_maps

__all__ = ["plot_layer_pair_matrix", "plot_unit_maps", "plot_position_maps", "plot_scores", "plot_randomization"]

ArrayLike = Any  # torch.Tensor, numpy array or nested sequence of numbers
NORMALIZATIONS = ("minmax", "max")


def _to_numpy(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().to(torch.float64).numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a tensor, an array or a sequence of numbers; got {type(values).__name__}") \
            from e


def _create_figure(plt_fig_axis: tuple[Figure, Any] | None, use_pyplot: bool, fig_size: tuple[float, float],
                   nrows: int = 1, ncols: int = 1, layout: str | None = "constrained") -> tuple[Figure, Any]:
    """``(fig, ax)`` from ``plt_fig_axis`` or a new figure; for grids ``ax`` is an ``[nrows, ncols]`` array."""
    grid = nrows * ncols > 1
    if plt_fig_axis is not None:
        fig, ax = plt_fig_axis
        if grid:
            ax = np.asarray(ax, dtype=object)
            if ax.size != nrows * ncols:
                raise ValueError(f"plt_fig_axis holds {ax.size} axes; this figure needs {nrows} x {ncols}")
            ax = ax.reshape(nrows, ncols)
        return fig, ax
    fig = (plt.figure if use_pyplot else Figure)(figsize=fig_size, layout=layout)
    ax = fig.subplots(nrows, ncols, squeeze=not grid)
    return fig, ax


def _finish(use_pyplot: bool) -> None:
    if use_pyplot:
        plt.show()


def plot_layer_pair_matrix(
    matrix: ArrayLike,
    source_name: str = "source",
    target_name: str = "target",
    title: str | None = None,
    colorbar_label: str = "aggregated attribution",
    cmap: str = "viridis",
    fig_size: tuple[float, float] | None = None,
    plt_fig_axis: tuple[Figure, Axes] | None = None,
    use_pyplot: bool = True,
    column_label: str = "source channel",
) -> tuple[Figure, Axes]:
    """Heatmap of the ``K x C`` layer-pair matrix: how much each target unit draws on each source channel.

    Parameters
    ----------
    matrix:
        ``[K, C]``, e.g. ``aggregate(A, over="space").mean(0)``; a ``[N, K, C]`` tensor is averaged over samples.
    source_name, target_name:
        Layer names for the axis labels (columns are source channels, rows are target units).
    column_label:
        What a column is: ``"source channel"`` (default), ``"token feature"`` for a ``channels_last`` token
        source ``[N, L, D]``, ``"source feature"`` for a flat source ``[N, F]``.
    title, colorbar_label, cmap, fig_size:
        Figure text and look; ``fig_size`` defaults to a size that grows with ``K`` and ``C``.
    plt_fig_axis:
        ``(fig, ax)`` to draw into instead of a new figure.
    use_pyplot:
        Create the figure with pyplot and show it (``False``: a bare ``Figure``, nothing shown).

    Returns
    -------
    (fig, ax):
        The figure and the heatmap's axes (the colour bar has its own axes in ``fig``).
    """
    values = _to_numpy(matrix, "matrix")
    if values.ndim == 3:
        values = values.mean(0)
    if values.ndim != 2:
        raise ValueError(f"matrix must be [K, C] (or [N, K, C], averaged over N); got shape {values.shape}")
    n_units, n_channels = values.shape
    if fig_size is None:
        fig_size = (min(2.5 + 0.3 * n_channels, 14.0), min(1.8 + 0.3 * n_units, 10.0))
    fig, ax = _create_figure(plt_fig_axis, use_pyplot, fig_size)
    image = ax.imshow(values, cmap=cmap, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label=colorbar_label)
    ax.set_xlabel(f"{column_label} ({source_name})")
    ax.set_ylabel(f"target unit ({target_name})")
    if n_channels <= 32:
        ax.set_xticks(range(n_channels))
    if n_units <= 32:
        ax.set_yticks(range(n_units))
    ax.set_title(title if title is not None else f"Layer-pair matrix: {target_name} <- {source_name}")
    _finish(use_pyplot)
    return fig, ax


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An image ``[C, H, W]`` or ``[H, W]`` as something ``imshow`` draws: grey ``[H, W]`` or RGB ``[H, W, 3]``."""
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 3 and image.shape[0] == 3:
        lo, hi = image.min(), image.max()
        return np.transpose((image - lo) / (hi - lo if hi > lo else 1.0), (1, 2, 0)), None
    if image.ndim != 2:
        raise ValueError(f"each image must be [H, W], [1, H, W] or [3, H, W]; got shape {image.shape}")
    return image, "gray"


def plot_unit_maps(
    maps: ArrayLike,
    images: ArrayLike | None = None,
    units: Sequence[int] | None = None,
    overlay: bool = True,
    normalization: str | None = "minmax",
    source_name: str = "source",
    target_name: str = "target",
    title: str | None = None,
    cmap: str | None = None,
    alpha: float = 0.6,
    fig_size: tuple[float, float] | None = None,
    plt_fig_axis: tuple[Figure, Any] | None = None,
    use_pyplot: bool = True,
) -> tuple[Figure, np.ndarray]:
    """One spatial map per target unit (columns), for one or several samples (rows), optionally over the input.

    Parameters
    ----------
    maps:
        Channel-aggregated maps ``[K, H, W]`` (one sample) or ``[N, K, H, W]``, e.g.
        ``aggregate(A, over="channels")``.
    images:
        Optional inputs ``[C, H', W']`` / ``[N, C, H', W']`` with ``C`` in {1, 3} (or without the channel
        dimension), shown in a first column. Maps are stretched over the image's extent, so a coarse source layer
        lines up with the input regions it sees.
    units:
        Which target units to show (default: all ``K``).
    overlay:
        With ``images``: draw each map over its input (with opacity ``alpha``) instead of on its own.
    normalization:
        ``"minmax"`` (default) or ``"max"`` per map, as in ``captum_layerpair.aggregation.normalize``, or ``None``
        for one shared scale across all maps.
    source_name, target_name, title:
        Text for the figure title.
    cmap, alpha:
        Colour map of the attribution (default ``"inferno"``, or ``"RdBu_r"`` centred at 0 for signed maps) and
        its opacity over an image.
    fig_size, plt_fig_axis, use_pyplot:
        As in ``plot_layer_pair_matrix``; ``plt_fig_axis`` holds as many axes as the grid has.

    Returns
    -------
    (fig, axes):
        The figure and an ``[N, len(units)]`` array of axes, ``[N, 1 + len(units)]`` with ``images`` (column 0
        shows the input); one colour bar serves all maps.
    """
    values, units = _unit_maps(maps, units, normalization)
    n_samples = len(values)
    pictures = None
    if images is not None:
        pictures = _to_numpy(images, "images")
        pictures = pictures[None] if np.ndim(maps) == 3 else pictures
        if len(pictures) != n_samples:
            raise ValueError(f"images hold {len(pictures)} samples but maps hold {n_samples}")
    signed = normalization is None and values.min() < 0
    vmax = float(np.abs(values).max()) if signed else float(values.max())
    vmin = -vmax if signed else (0.0 if normalization is not None else float(values.min()))
    cmap = cmap or ("RdBu_r" if signed else "inferno")
    first = 0 if pictures is None else 1
    rows, cols = n_samples, first + len(units)
    fig, axes = _create_figure(plt_fig_axis, use_pyplot, fig_size or (1.5 * cols + 1.5, 1.5 * rows + 0.8),
                               rows, cols, layout=None)
    axes = np.asarray(axes, dtype=object).reshape(rows, cols)
    extent = (0.0, 1.0, 1.0, 0.0)
    mappable = None
    for i in range(rows):
        picture, picture_cmap = (None, None) if pictures is None else _display_image(pictures[i])
        if picture is not None:
            axes[i, 0].imshow(picture, cmap=picture_cmap, extent=extent, interpolation="nearest")
        for j in range(len(units)):
            ax = axes[i, first + j]
            if picture is not None and overlay:
                ax.imshow(picture, cmap=picture_cmap, extent=extent, interpolation="nearest")
            mappable = ax.imshow(values[i, j], cmap=cmap, vmin=vmin, vmax=vmax, extent=extent,
                                 alpha=alpha if picture is not None and overlay else 1.0, interpolation="nearest")
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("input" if j < first else f"unit {units[j - first]}", fontsize=9)
        axes[i, 0].set_ylabel(f"sample {i}", fontsize=9)
    label = {"minmax": "min-max normalised", "max": "max normalised", None: "attribution"}.get(
        normalization, str(normalization))
    height, width = values.shape[-2:]
    colorbar = dict(label=f"{label} ({height}x{width} map)")
    if plt_fig_axis is None:  # a fixed layout: constrained layout costs about a second on a grid this size
        colorbar["cax"] = _grid_layout(fig)
    else:
        colorbar["ax"] = axes.ravel().tolist()
    fig.colorbar(mappable, **colorbar)
    fig.suptitle(title if title is not None else f"Maps of {target_name} units on {source_name}")
    _finish(use_pyplot)
    return fig, axes


def _grid_layout(fig: Figure) -> Axes:
    """Margins in inches around a grid of small images (room for the titles, row labels and a colour bar on the
    right); returns the colour bar's axes."""
    width, height = fig.get_size_inches()
    top, bottom, left, right = 0.65, 0.1, 0.35, 1.2
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=0.08, hspace=0.15)
    return fig.add_axes((1 - 1.05 / width, bottom / height, 0.15 / width, 1 - (top + bottom) / height))


def _unit_maps(maps: ArrayLike, units: Sequence[int] | None, normalization: str | None, n_positions: int = 2
               ) -> tuple[np.ndarray, list[int]]:
    """``[N, len(units), *P]`` maps with ``n_positions`` position dimensions ``P`` to draw (normalised as asked)
    and the unit indices."""
    values = _to_numpy(maps, "maps")
    values = values[None] if values.ndim == n_positions + 1 else values
    if values.ndim != n_positions + 2:
        expected = "[K, H, W] or [N, K, H, W] (2-D maps" if n_positions == 2 else "[K, L] or [N, K, L] (1-D maps"
        other = "plot_position_maps" if n_positions == 2 else "plot_unit_maps"
        raise ValueError(f"maps must be {expected} per target unit); got shape {values.shape}. For other maps, "
                         f"use {other} or the layer-pair matrix.")
    n_units = values.shape[1]
    units = list(range(n_units)) if units is None else [int(u) for u in units]
    if not units or any(not 0 <= u < n_units for u in units):
        raise ValueError(f"units must be a non-empty list of indices in 0 .. {n_units - 1}; got {units}")
    values = values[:, units]
    if normalization is not None:
        check_choice("normalization", normalization, NORMALIZATIONS)
        values = normalize_maps(torch.from_numpy(values), normalization).numpy()
    return values, units


def plot_position_maps(
    maps: ArrayLike,
    units: Sequence[int] | None = None,
    normalization: str | None = "minmax",
    position_label: str = "position",
    source_name: str = "source",
    target_name: str = "target",
    title: str | None = None,
    cmap: str | None = None,
    fig_size: tuple[float, float] | None = None,
    plt_fig_axis: tuple[Figure, Any] | None = None,
    use_pyplot: bool = True,
) -> tuple[Figure, np.ndarray]:
    """Maps over one position dimension (sequence positions, tokens, features): one heatmap per sample, a row per
    target unit and a column per position.

    Parameters
    ----------
    maps:
        ``[K, L]`` (one sample) or ``[N, K, L]``, e.g. ``aggregate(A, over="channels")`` of a ``Conv1d`` source
        ``A [N, K, C, L]``, the same of a token source ``[N, L, D]`` with its features summed, or ``|A|`` of a flat
        source ``A [N, K, F]``.
    units:
        Which target units to show, top to bottom (default: all ``K``).
    normalization:
        ``"minmax"`` (default) or ``"max"`` per map (per sample and unit), or ``None`` for one shared scale.
    position_label:
        The x-axis label: ``"position"``, ``"token position"``, ``"source feature"``, ...
    source_name, target_name, title, cmap:
        As in ``plot_unit_maps``.
    fig_size, plt_fig_axis, use_pyplot:
        As in ``plot_layer_pair_matrix``; ``plt_fig_axis`` holds one axes per sample.

    Returns
    -------
    (fig, axes):
        The figure and an ``[N]`` array of axes; one colour bar serves all.
    """
    values, units = _unit_maps(maps, units, normalization, n_positions=1)
    n_samples, n_shown, length = values.shape
    signed = normalization is None and values.min() < 0
    vmax = float(np.abs(values).max()) if signed else float(values.max())
    vmin = -vmax if signed else (0.0 if normalization is not None else float(values.min()))
    height = 0.7 + 0.16 * n_shown
    fig, axes = _create_figure(plt_fig_axis, use_pyplot, fig_size or (min(4.0 + 0.04 * length, 12.0),
                                                                     height * n_samples + 0.6), n_samples, 1)
    axes = np.asarray(axes, dtype=object).reshape(n_samples)
    mappable = None
    step = max(1, n_shown // 16)
    for i, ax in enumerate(axes):
        mappable = ax.imshow(values[i], cmap=cmap or ("RdBu_r" if signed else "inferno"), vmin=vmin, vmax=vmax,
                             aspect="auto", interpolation="nearest" if length <= 512 else "antialiased")
        ax.set_yticks(range(0, n_shown, step), [str(u) for u in units[::step]], fontsize=7)
        ax.set_ylabel(f"sample {i}\nunit", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1].set_xlabel(f"{position_label} ({source_name})")
    label = {"minmax": "min-max normalised", "max": "max normalised", None: "attribution"}[normalization]
    fig.colorbar(mappable, ax=axes.tolist(), label=f"{label} ({length} positions)", fraction=0.03, pad=0.02)
    fig.suptitle(title if title is not None else f"Maps of {target_name} units over {position_label}s of "
                 f"{source_name}")
    _finish(use_pyplot)
    return fig, axes


def _mean_std(value: Any, name: str) -> tuple[float, float]:
    """Mean and standard deviation of a number, per-sample values, ``{"mean", "std"}`` or an object with both."""
    if isinstance(value, Mapping) and "mean" in value:
        return float(value["mean"]), float(value.get("std", 0.0))
    if hasattr(value, "mean") and hasattr(value, "std") and not isinstance(value, (torch.Tensor, np.ndarray)):
        return float(value.mean), float(value.std)
    values = _to_numpy(value, name).ravel()
    if values.size == 0:
        raise ValueError(f"{name} holds no values")
    return float(values.mean()), float(values.std())


def plot_scores(
    scores: Mapping[str, Mapping[str, Any]],
    title: str = "Latent scores",
    ylabel: str = "score",
    fig_size: tuple[float, float] | None = None,
    plt_fig_axis: tuple[Figure, Axes] | None = None,
    use_pyplot: bool = True,
) -> tuple[Figure, Axes]:
    """Grouped bars of scores (mean with a standard-deviation error bar) under several conditions.

    Parameters
    ----------
    scores:
        ``{group: {condition: value}}``, e.g. ``{"conv2 -> embed": {"trained model": I, "random model": I_r,
        "noise vs noise": I_0}}``. A value is a number, per-sample values (tensor, array, list), a mapping with
        ``"mean"`` (and ``"std"``) or an object with ``.mean`` and ``.std`` (a ``ScoreSummary``).
    title, ylabel, fig_size:
        Figure text and size.
    plt_fig_axis, use_pyplot:
        As in ``plot_layer_pair_matrix``.

    Returns
    -------
    (fig, ax)
    """
    if not scores or not all(isinstance(v, Mapping) and v for v in scores.values()):
        raise ValueError("scores must be a non-empty mapping {group: {condition: value}} with non-empty groups")
    groups = list(scores)
    conditions = list(dict.fromkeys(c for g in groups for c in scores[g]))
    fig, ax = _create_figure(plt_fig_axis, use_pyplot, fig_size or (max(4.5, 1.2 + 1.1 * len(groups)
                                                                         * (0.6 + 0.4 * len(conditions))), 3.6))
    width = 0.8 / len(conditions)
    for c, condition in enumerate(conditions):
        positions, means, stds = [], [], []
        for g, group in enumerate(groups):
            if condition in scores[group]:
                mean, std = _mean_std(scores[group][condition], f"scores[{group!r}][{condition!r}]")
                positions.append(g - 0.4 + (c + 0.5) * width)
                means.append(mean)
                stds.append(std)
        bars = ax.bar(positions, means, width=width * 0.95, yerr=stds, capsize=3, label=condition)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.legend(fontsize=8, loc="best")
    ax.margins(y=0.15)
    _finish(use_pyplot)
    return fig, ax


def plot_randomization(
    layer_names: Sequence[str],
    similarity: Mapping[str, ArrayLike],
    order: str | None = None,
    title: str = "Model-parameter randomisation",
    fig_size: tuple[float, float] | None = None,
    plt_fig_axis: tuple[Figure, Axes] | None = None,
    use_pyplot: bool = True,
) -> tuple[Figure, Axes]:
    """Similarity of the attribution to the original model's as layers are randomised (Adebayo et al. 2018).

    A method that explains the model falls clearly below 1 once the layers it depends on are randomised; a curve
    that stays near 1 marks a parameter-insensitive ("edge detector") explanation.

    Parameters
    ----------
    layer_names:
        The randomised layers in randomisation order (``ModelParameterRandomization`` result ``.layer_names``).
    similarity:
        ``{measure: values [len(layer_names)]}`` (the result's ``.similarity``).
    order:
        The randomisation order (``"cascading"``, ``"independent"``, ``"bottom_up"``), for the axis label.
    title, fig_size, plt_fig_axis, use_pyplot:
        As in ``plot_layer_pair_matrix``.

    Returns
    -------
    (fig, ax)
    """
    names = [str(n) for n in layer_names]
    if not names or not similarity:
        raise ValueError("plot_randomization needs at least one layer name and one similarity measure")
    fig, ax = _create_figure(plt_fig_axis, use_pyplot, fig_size or (max(6.0, 1.5 + 0.7 * len(names)), 3.8))
    for measure, values in similarity.items():
        curve = _to_numpy(values, f"similarity[{measure!r}]").ravel()
        if curve.size != len(names):
            raise ValueError(f"similarity[{measure!r}] has {curve.size} values for {len(names)} layers")
        ax.plot(range(len(names)), curve, marker="o", label=measure)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_xlabel("randomised layer" + (f" ({order})" if order else ""))
    ax.set_ylabel("similarity to original attribution")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    _finish(use_pyplot)
    return fig, ax
