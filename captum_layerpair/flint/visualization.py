"""FLINT figures in the package's Captum style: each returns ``(fig, ax)`` (``(fig, axes)`` for grids), draws into
``plt_fig_axis=(fig, ax)`` when given, and with ``use_pyplot=False`` builds a bare ``Figure``.

* :func:`plot_class_attribute_relevance`: the ``[C, J]`` global relevance as a heat map (the authors' ``plot_rel``);
* :func:`plot_local_interpretation`: an input, the relevance of its top attributes as bars, and their AM+PI images
  (the authors' local view);
* :func:`plot_attribute_examples`: maximally activating samples next to their AM+PI images (the global view).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from captum_layerpair.visualization import ArrayLike, _create_figure, _display_image, _finish, _to_numpy

__all__ = ["plot_class_attribute_relevance", "plot_local_interpretation", "plot_attribute_examples"]


def plot_class_attribute_relevance(
    relevance: ArrayLike,
    class_names: Sequence[str] | None = None,
    tau: float | None = 2.0,
    title: str = "FLINT: class-attribute relevance",
    cmap: str = "RdBu_r",
    fig_size: tuple[float, float] | None = None,
    plt_fig_axis: tuple[Figure, Axes] | None = None,
    use_pyplot: bool = True,
) -> tuple[Figure, Axes]:
    """Heat map of the global relevance ``r_{j,c}`` (rows: classes, columns: attributes), centred at 0.

    Parameters
    ----------
    relevance:
        ``[C, J]``, e.g. ``class_relevance(interp, data)`` (NaN rows are left blank).
    class_names:
        Row labels (default: class indices).
    tau:
        Outline the cells of the global interpretation, ``r_{j,c} > 1/tau`` (``None``: no outline).
    title, cmap, fig_size, plt_fig_axis, use_pyplot:
        As in ``captum_layerpair.visualization.plot_layer_pair_matrix``.

    Returns
    -------
    (fig, ax)
    """
    values = _to_numpy(relevance, "relevance")
    if values.ndim != 2:
        raise ValueError(f"relevance must be [C, J], got shape {values.shape}")
    n_classes, n_attributes = values.shape
    names = [str(c) for c in range(n_classes)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n_classes:
        raise ValueError(f"class_names has {len(names)} names for {n_classes} classes")
    fig, ax = _create_figure(plt_fig_axis, use_pyplot, fig_size or (min(2.5 + 0.32 * n_attributes, 14.0),
                                                                     min(1.6 + 0.32 * n_classes, 10.0)))
    image = ax.imshow(values, cmap=cmap, vmin=-1.0, vmax=1.0, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="relevance r(j, c)")
    if tau is not None:
        for c, j in zip(*np.nonzero(np.nan_to_num(values, nan=-np.inf) > 1.0 / tau)):
            ax.add_patch(_cell(j, c))
    ax.set_xticks(range(n_attributes))
    ax.set_yticks(range(n_classes), names)
    ax.set_xlabel("attribute j")
    ax.set_ylabel("class c")
    ax.set_title(title)
    _finish(use_pyplot)
    return fig, ax


def _cell(j: int, c: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, c - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.2)


def plot_local_interpretation(
    image: ArrayLike,
    relevance: ArrayLike,
    am_images: ArrayLike | None = None,
    top: int = 3,
    title: str | None = None,
    fig_size: tuple[float, float] | None = None,
    plt_fig_axis: tuple[Figure, Any] | None = None,
    use_pyplot: bool = True,
) -> tuple[Figure, np.ndarray]:
    """One sample's interpretation: the input, bars of its ``top`` relevances, and each one's AM+PI image.

    Parameters
    ----------
    image:
        ``[C, H, W]`` or ``[H, W]``.
    relevance:
        ``[J]``, the sample's local relevance ``r_{j,x}``.
    am_images:
        Optional ``[top, C, H, W]``: AM+PI images of the ``top`` attributes, in decreasing relevance.
    top:
        How many attributes to show.

    Returns
    -------
    (fig, axes): ``[2 + top]`` axes with ``am_images`` (input, bars, one per AM image), else ``[2]``.
    """
    r = _to_numpy(relevance, "relevance").ravel()
    order = np.argsort(-r)[:top]
    pictures = None if am_images is None else _to_numpy(am_images, "am_images")
    if pictures is not None and len(pictures) != len(order):
        raise ValueError(f"am_images holds {len(pictures)} images for the top {len(order)} attributes")
    cols = 2 + (0 if pictures is None else len(order))
    fig, axes = _create_figure(plt_fig_axis, use_pyplot, fig_size or (2.2 * cols + 0.5, 2.6), 1, cols)
    axes = np.asarray(axes, dtype=object).ravel()
    shown, cmap = _display_image(_to_numpy(image, "image"))
    axes[0].imshow(shown, cmap=cmap, interpolation="nearest")
    axes[0].set_title("input", fontsize=9)
    axes[0].set_axis_off()
    bottom_up = order[::-1]  # the most relevant attribute on top
    axes[1].barh(range(len(order)), r[bottom_up], color=["tab:red" if v > 0 else "tab:blue" for v in r[bottom_up]])
    axes[1].set_yticks(range(len(order)), [f"phi {j}" for j in bottom_up])
    axes[1].set_xlim(-1.05, 1.05)
    axes[1].set_xlabel("relevance r(j, x)")
    for i, j in enumerate(order if pictures is not None else []):
        shown, cmap = _display_image(pictures[i])
        axes[2 + i].imshow(shown, cmap=cmap, interpolation="nearest")
        axes[2 + i].set_title(f"AM+PI phi {j}", fontsize=9)
        axes[2 + i].set_axis_off()
    fig.suptitle(title if title is not None else "FLINT: local interpretation")
    _finish(use_pyplot)
    return fig, axes


def plot_attribute_examples(
    mas_images: ArrayLike,
    am_images: ArrayLike | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    fig_size: tuple[float, float] | None = None,
    plt_fig_axis: tuple[Figure, Any] | None = None,
    use_pyplot: bool = True,
) -> tuple[Figure, np.ndarray]:
    """Rows of maximally activating samples (MAS), each next to its AM+PI image (the authors' global view).

    Parameters
    ----------
    mas_images:
        ``[R, l, C, H, W]`` (or ``[l, C, H, W]`` for one row): ``l`` samples per row (one row per
        class-attribute pair).
    am_images:
        Optional ``[R, l, C, H, W]`` / ``[l, C, H, W]``: the AM+PI output started from each sample.
    labels:
        Row labels, e.g. ``"class 3, phi 7"``.

    Returns
    -------
    (fig, axes): ``[R, l]`` axes, ``[R, 2 l]`` with ``am_images`` (each sample then its AM+PI image).
    """
    mas = _to_numpy(mas_images, "mas_images")
    mas = mas[None] if mas.ndim == 4 else mas
    if mas.ndim != 5:
        raise ValueError(f"mas_images must be [R, l, C, H, W] or [l, C, H, W], got shape {mas.shape}")
    am = None if am_images is None else _to_numpy(am_images, "am_images").reshape(mas.shape)
    rows, per_row = mas.shape[:2]
    if labels is not None and len(labels) != rows:
        raise ValueError(f"labels has {len(labels)} entries for {rows} rows")
    step = 1 if am is None else 2
    cols = step * per_row
    fig, axes = _create_figure(plt_fig_axis, use_pyplot, fig_size or (1.3 * cols + 0.8, 1.4 * rows + 0.6), rows,
                               cols)
    axes = np.asarray(axes, dtype=object).reshape(rows, cols)
    for r in range(rows):
        for i in range(per_row):
            panels = [(mas[r, i], "MAS")] + ([] if am is None else [(am[r, i], "AM+PI")])
            for p, (picture, name) in enumerate(panels):
                ax = axes[r, step * i + p]
                shown, cmap = _display_image(picture)
                ax.imshow(shown, cmap=cmap, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(name, fontsize=8)
        if labels is not None:
            axes[r, 0].set_ylabel(labels[r], fontsize=8)
    fig.suptitle(title if title is not None else "FLINT: maximally activating samples and AM+PI")
    _finish(use_pyplot)
    return fig, axes
