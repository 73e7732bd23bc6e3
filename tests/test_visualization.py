"""Figures: each returns (fig, ax), draws the numbers it is given, labels its axes and has a colour bar or legend."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib import pyplot as plt
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from captum_layerpair.metrics import ScoreSummary
from captum_layerpair.visualization import (plot_layer_pair_matrix, plot_position_maps, plot_randomization,
                                            plot_scores, plot_unit_maps)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_layer_pair_matrix_shows_the_matrix_with_labelled_axes_and_colorbar():
    Q = torch.arange(15.0).view(3, 5)
    fig, ax = plot_layer_pair_matrix(Q, source_name="conv2", target_name="embed", use_pyplot=False)
    np.testing.assert_array_equal(ax.images[0].get_array(), Q.numpy())
    assert "conv2" in ax.get_xlabel() and "embed" in ax.get_ylabel()
    assert ax.get_title()
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "aggregated attribution"  # the colour bar
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3", "4"]


def test_layer_pair_matrix_averages_a_batch_of_matrices():
    Q = torch.rand(4, 3, 5)
    _, ax = plot_layer_pair_matrix(Q, use_pyplot=False)
    np.testing.assert_allclose(ax.images[0].get_array(), Q.double().mean(0).numpy(), rtol=1e-12)


def test_layer_pair_matrix_rejects_a_vector():
    with pytest.raises(ValueError, match=r"\[K, C\]"):
        plot_layer_pair_matrix(torch.rand(5), use_pyplot=False)


def test_figures_draw_into_the_given_axes():
    fig, ax = plt.subplots()
    out_fig, out_ax = plot_layer_pair_matrix(torch.rand(2, 3), plt_fig_axis=(fig, ax), use_pyplot=False)
    assert out_fig is fig and out_ax is ax and len(ax.images) == 1


def test_use_pyplot_false_leaves_pyplot_alone_and_true_registers_the_figure():
    before = plt.get_fignums()
    fig, _ = plot_layer_pair_matrix(torch.rand(2, 3), use_pyplot=False)
    assert plt.get_fignums() == before and type(fig) is Figure
    fig, _ = plot_layer_pair_matrix(torch.rand(2, 3), use_pyplot=True)
    assert fig.number in plt.get_fignums()


def test_unit_maps_grid_is_samples_by_units_and_each_map_is_min_max_normalised():
    maps = torch.rand(2, 3, 4, 4) * 5 + 1
    fig, axes = plot_unit_maps(maps, use_pyplot=False)
    assert axes.shape == (2, 3)
    for i in range(2):
        for k in range(3):
            shown = np.asarray(axes[i, k].images[0].get_array())
            m = maps[i, k].numpy()
            np.testing.assert_allclose(shown, (m - m.min()) / (m.max() - m.min()), rtol=1e-5, atol=1e-6)
    assert [ax.get_title() for ax in axes[0]] == ["unit 0", "unit 1", "unit 2"]
    assert axes[1, 0].get_ylabel() == "sample 1"
    assert "min-max" in fig.axes[-1].get_ylabel()  # one shared colour bar


def test_unit_maps_with_images_add_an_input_column_and_overlay_the_maps():
    maps, images = torch.rand(2, 4, 4, 4), torch.rand(2, 1, 8, 8)
    _, axes = plot_unit_maps(maps, images, units=[1, 3], use_pyplot=False)
    assert axes.shape == (2, 3)
    assert axes[0, 0].get_title() == "input" and [a.get_title() for a in axes[0, 1:]] == ["unit 1", "unit 3"]
    np.testing.assert_array_equal(axes[1, 0].images[0].get_array(), images[1, 0].numpy())
    assert all(len(ax.images) == 2 for ax in axes[:, 1:].ravel())  # image underneath, map on top
    assert axes[0, 1].images[1].get_alpha() == pytest.approx(0.6)
    _, axes = plot_unit_maps(maps, images, overlay=False, use_pyplot=False)
    assert all(len(ax.images) == 1 for ax in axes.ravel())


def test_unit_maps_of_one_sample_and_signed_maps_share_a_symmetric_scale():
    maps = torch.randn(3, 4, 4)
    _, axes = plot_unit_maps(maps, normalization=None, use_pyplot=False)
    assert axes.shape == (1, 3)
    limit = maps.abs().max().item()
    assert axes[0, 2].images[0].get_clim() == pytest.approx((-limit, limit))
    np.testing.assert_allclose(axes[0, 2].images[0].get_array(), maps[2].numpy(), rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(maps=torch.rand(2, 5)), "maps must be"),
    (dict(maps=torch.rand(2, 3, 4, 4), units=[3]), "units must be"),
    (dict(maps=torch.rand(2, 3, 4, 4), images=torch.rand(3, 1, 8, 8)), "3 samples"),
])
def test_unit_maps_reject_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_unit_maps(use_pyplot=False, **kwargs)


def test_unit_maps_accept_a_grid_of_given_axes():
    fig, axes = plt.subplots(1, 2)
    out_fig, out_axes = plot_unit_maps(torch.rand(2, 3, 3), plt_fig_axis=(fig, axes), use_pyplot=False)
    assert out_fig is fig and out_axes[0, 1] is axes[1]
    with pytest.raises(ValueError, match="needs 1 x 3"):
        plot_unit_maps(torch.rand(3, 3, 3), plt_fig_axis=(fig, axes), use_pyplot=False)


def test_scores_bars_are_means_with_std_error_bars_for_every_kind_of_value():
    values = torch.tensor([0.1, 0.3, 0.5])
    summary = ScoreSummary("informativeness", 0.2, 0.05, torch.tensor([0.15, 0.25]))
    scores = {"conv1": {"trained": values, "random": summary}, "conv2": {"trained": 0.4, "random": {"mean": 0.7,
                                                                                                   "std": 0.1}}}
    fig, ax = plot_scores(scores, ylabel="informativeness", use_pyplot=False)
    trained, random = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_height() for b in trained] == pytest.approx([values.mean().item(), 0.4])
    assert [b.get_height() for b in random] == pytest.approx([0.2, 0.7])
    assert trained[0].get_x() + trained[0].get_width() / 2 < random[0].get_x()  # side by side within a group
    error_bar = trained.errorbar.lines[2][0].get_segments()[0]
    assert error_bar[1, 1] - error_bar[0, 1] == pytest.approx(2 * values.numpy().std(), rel=1e-5)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["trained", "random"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "conv2"]
    assert ax.get_ylabel() == "informativeness"


def test_scores_reject_empty_groups():
    with pytest.raises(ValueError, match="non-empty"):
        plot_scores({"conv1": {}}, use_pyplot=False)


def test_randomization_curve_has_one_point_per_layer_and_measure():
    similarity = {"spearman_abs": torch.tensor([0.9, 0.5, 0.1]), "ssim": [0.8, 0.4, 0.3]}
    fig, ax = plot_randomization(["embed", "conv2", "conv1"], similarity, order="cascading", use_pyplot=False)
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    np.testing.assert_allclose(lines["spearman_abs"].get_ydata(), [0.9, 0.5, 0.1], rtol=1e-6)
    np.testing.assert_allclose(lines["ssim"].get_ydata(), [0.8, 0.4, 0.3])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["embed", "conv2", "conv1"]
    assert "cascading" in ax.get_xlabel() and "similarity" in ax.get_ylabel()
    assert ax.get_ylim()[1] == pytest.approx(1.05)


def test_randomization_rejects_curves_of_the_wrong_length():
    with pytest.raises(ValueError, match="2 values for 3 layers"):
        plot_randomization(["a", "b", "c"], {"ssim": [1.0, 0.5]}, use_pyplot=False)


def test_layer_pair_matrix_labels_its_columns_from_the_layout():
    _, ax = plot_layer_pair_matrix(torch.rand(2, 3), source_name="emb", column_label="token feature",
                                   use_pyplot=False)
    assert ax.get_xlabel() == "token feature (emb)"
    _, ax = plot_layer_pair_matrix(torch.rand(2, 3), source_name="conv2", use_pyplot=False)
    assert ax.get_xlabel() == "source channel (conv2)"  # the default, as before


def test_position_maps_show_one_heatmap_per_sample_with_a_row_per_unit():
    maps = torch.rand(2, 5, 30) * 3 + 1
    fig, axes = plot_position_maps(maps, units=[4, 0, 2], position_label="token position", source_name="emb",
                                   use_pyplot=False)
    assert axes.shape == (2,)
    for i in range(2):
        shown = np.asarray(axes[i].images[0].get_array())
        assert shown.shape == (3, 30)  # rows: the units asked for, in that order; columns: positions
        for row, unit in enumerate([4, 0, 2]):
            m = maps[i, unit].numpy()
            np.testing.assert_allclose(shown[row], (m - m.min()) / (m.max() - m.min()), rtol=1e-5, atol=1e-6)
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["4", "0", "2"]
    assert axes[-1].get_xlabel() == "token position (emb)" and axes[1].get_ylabel().startswith("sample 1")
    assert "min-max" in fig.axes[-1].get_ylabel()


def test_position_maps_of_one_sample_and_of_many_units():
    _, axes = plot_position_maps(torch.rand(64, 2048), normalization=None, use_pyplot=False)
    assert axes.shape == (1,) and np.asarray(axes[0].images[0].get_array()).shape == (64, 2048)
    assert len(axes[0].get_yticklabels()) == 16  # every 4th of 64 units labelled


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(maps=torch.rand(2, 3, 4, 4)), ValueError, r"\[K, L\] or \[N, K, L\]"),
    (dict(maps=torch.rand(3, 4), units=[5]), ValueError, "units must be"),
    (dict(maps=torch.rand(3, 4), normalization="zscore"), ValueError, "unknown normalization 'zscore'"),
])
def test_position_maps_reject_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_position_maps(use_pyplot=False, **kwargs)


def test_unit_maps_name_the_other_figure_for_one_dimensional_maps_and_check_the_normalization():
    with pytest.raises(ValueError, match="plot_position_maps"):
        plot_unit_maps(torch.rand(2, 5), use_pyplot=False)
    with pytest.raises(ValueError, match="unknown normalization 'l2'. Allowed: 'max', 'minmax'"):
        plot_unit_maps(torch.rand(2, 3, 3), normalization="l2", use_pyplot=False)
