"""FLINT figures: Captum style ((fig, ax), plt_fig_axis=, use_pyplot=) and they draw the numbers they are given."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from captum_layerpair.flint.visualization import (
    plot_attribute_examples,
    plot_class_attribute_relevance,
    plot_local_interpretation,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_class_attribute_relevance_heat_map_outlines_the_global_interpretation():
    R = torch.tensor([[0.9, 0.1, -0.3], [0.2, 0.6, float("nan")]])
    fig, ax = plot_class_attribute_relevance(R, class_names=["a", "b"], tau=2.0, use_pyplot=False)
    assert isinstance(fig, Figure)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), R.double().numpy())
    outlined = sorted((round(p.get_x() + 0.5), round(p.get_y() + 0.5)) for p in ax.patches)
    assert outlined == [(0, 0), (1, 1)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    with pytest.raises(ValueError, match="class_names"):
        plot_class_attribute_relevance(R, class_names=["a"], use_pyplot=False)


def test_class_attribute_relevance_draws_into_given_axes():
    fig = Figure()
    ax = fig.subplots()
    got_fig, got_ax = plot_class_attribute_relevance(torch.rand(3, 4), plt_fig_axis=(fig, ax), use_pyplot=False)
    assert got_fig is fig and got_ax is ax


def test_local_interpretation_shows_the_top_relevances_and_am_images():
    r = torch.tensor([0.1, 1.0, -0.4, 0.6, 0.0])
    fig, axes = plot_local_interpretation(torch.rand(1, 8, 8), r, am_images=torch.rand(3, 1, 8, 8), top=3,
                                          use_pyplot=False)
    assert len(axes) == 5
    widths = [bar.get_width() for bar in axes[1].patches]
    assert widths == pytest.approx([0.1, 0.6, 1.0])  # bottom up: the most relevant on top
    assert [t.get_text() for t in axes[1].get_yticklabels()] == ["phi 0", "phi 3", "phi 1"]
    assert axes[2].get_title() == "AM+PI phi 1"
    _, axes = plot_local_interpretation(torch.rand(8, 8), r, use_pyplot=False)
    assert len(axes) == 2
    with pytest.raises(ValueError, match="top 3"):
        plot_local_interpretation(torch.rand(8, 8), r, am_images=torch.rand(2, 1, 8, 8), use_pyplot=False)


def test_attribute_examples_grid_pairs_each_sample_with_its_am_image():
    mas, am = torch.rand(2, 3, 1, 8, 8), torch.rand(2, 3, 1, 8, 8)
    fig, axes = plot_attribute_examples(mas, am, labels=["c0 phi1", "c1 phi4"], use_pyplot=False)
    assert axes.shape == (2, 6)
    np.testing.assert_allclose(axes[1, 3].images[0].get_array(), am[1, 1, 0].double().numpy(), rtol=1e-6)
    assert axes[1, 0].get_ylabel() == "c1 phi4"
    _, axes = plot_attribute_examples(mas[0], use_pyplot=False)
    assert axes.shape == (1, 3)
    with pytest.raises(ValueError, match=r"\[R, l, C, H, W\]"):
        plot_attribute_examples(torch.rand(8, 8), use_pyplot=False)
