"""What a parameter-randomisation check found, and its figure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["RandomizationResult", "ORDERS", "POSITIONS"]

# The randomisation orders, with the words the figure's axis label uses for them.
ORDERS = {"cascading": "cumulative, from the top", "independent": "one at a time",
          "bottom_up": "cumulative, from the bottom"}
# Where a randomised module sits relative to the layer pair: it runs after the target has been computed (it cannot
# change the attribution), between source and target (target included: it changes g_x), or up to the source
# (source included: it changes the source activation a itself).
POSITIONS = ("after_target", "between", "up_to_source")
_SHADED = {"after_target": ("0.85", "after the target"), "up_to_source": ("#fde0c5", "source and before")}


@dataclass
class RandomizationResult:
    """What ``ModelParameterRandomization`` found.

    Attributes
    ----------
    layer_names:
        Dotted names of the randomised modules, in randomisation order (``n_layers`` of them).
    similarity:
        Per measure, ``[n_layers]``: the mean over samples of the similarity between the attribution after each
        step and the original model's attribution (summed in dataset-index order, so it does not depend on the
        batching or the number of processes).
    per_sample:
        Per measure, ``[n_layers, N]``: the same per sample, columns in the order of ``indices``.
    positions:
        For each randomised module, ``"after_target"``, ``"between"`` or ``"up_to_source"`` (see ``POSITIONS``).
    order, method:
        The randomisation order and the attribution method's name.
    indices:
        ``[N]`` (int64): the samples' dataset indices, ascending (``0 .. N-1`` for one input tensor).
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
    indices: torch.Tensor | None = None
    original: torch.Tensor | None = None
    randomized: list[torch.Tensor] | None = None

    def plot(self, ax: Axes | None = None) -> Figure:
        """Similarity against randomised module (``visualization.plot_randomization``), with a band of +-1
        standard deviation over samples; modules after the target are shaded grey, the source and the modules
        before it orange."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

        from captum_layerpair.visualization import plot_randomization

        n = len(self.layer_names)
        if ax is None:
            _, ax = plt.subplots(figsize=(max(4.5, 0.55 * n + 2.5), 3.8), layout="constrained")
        plot_randomization(self.layer_names, self.similarity, order=ORDERS[self.order],
                           title=f"{self.method}: {self.order.replace('_', '-')} parameter randomisation",
                           plt_fig_axis=(ax.figure, ax), use_pyplot=False)
        for line, (measure, mean) in zip(ax.get_lines(), self.similarity.items()):
            spread = self.per_sample[measure].std(1, correction=0)
            ax.fill_between(range(n), (mean - spread).numpy(), (mean + spread).numpy(), color=line.get_color(),
                            alpha=0.15, lw=0)
        handles, _ = ax.get_legend_handles_labels()
        for region, (colour, label) in _SHADED.items():
            shaded = [i for i, position in enumerate(self.positions) if position == region]
            for i in shaded:
                ax.axvspan(i - 0.5, i + 0.5, color=colour, zorder=0, lw=0)
            if shaded:
                handles.append(Patch(color=colour, label=label))
        ax.set_xlim(-0.5, n - 0.5)
        ax.legend(handles=handles, fontsize="small")
        return ax.figure
