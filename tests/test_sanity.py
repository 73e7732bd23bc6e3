"""Model-parameter randomisation and similarity measures: behaviour, direction of the effect, model hygiene."""
from __future__ import annotations

import random

import matplotlib
import numpy as np
import copy
import warnings

import pytest
import torch
from scipy import stats
from captum.attr import GradientShap, GuidedBackprop, InputXGradient, Saliency
from torch import nn

from captum_layerpair import LayerPairAttribution
from captum_layerpair._random import seeded
from captum_layerpair.datasets import load_digits_images
from captum_layerpair.models import ConvEncoder
from captum_layerpair.sanity import ModelParameterRandomization
from captum_layerpair.sanity.similarity import (cosine, pearson, resolve_similarities, spatial_spearman, spearman,
                                                spearman_abs, ssim)

matplotlib.use("Agg")


def encoder_with_head(seed: int = 0) -> nn.Sequential:
    """``ConvEncoder`` (8x8 input, 4-d embedding) followed by a 10-class head, so modules run after the embedding."""
    model = nn.Sequential()
    model.add_module("encoder", ConvEncoder(1, embed_dim=4, image_size=8, seed=seed))
    with seeded(seed):
        model.add_module("head", nn.Linear(4, 10))
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_images()
    return images, labels


@pytest.fixture(scope="module")
def trained(digits):
    """The encoder-with-head trained for three seeded epochs on the digits (about 87% training accuracy)."""
    images, labels = digits
    model = encoder_with_head(seed=2)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(2)
    model.train()
    for _ in range(3):
        perm = torch.randperm(len(images), generator=order)
        for start in range(0, len(images), 64):
            batch = perm[start:start + 64]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        assert (model(images).argmax(1) == labels).float().mean() > 0.7
    return model


def mpr(model, method, source="encoder.act1", target="encoder.embed", **kwargs):
    kwargs.setdefault("show_progress", False)
    return ModelParameterRandomization(LayerPairAttribution(model, source, target, method=method), **kwargs)


# ---------------------------------------------------------------- similarity measures

def test_rank_measures_ignore_monotone_transforms_and_spearman_abs_ignores_sign():
    a = torch.randn(3, 2, 4, 5, 5)
    cube = a ** 3
    torch.testing.assert_close(spearman(a, cube), torch.ones(3, dtype=torch.float64))
    assert (pearson(a, cube) < 0.99).all()
    torch.testing.assert_close(spearman_abs(a, -2 * a), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(spearman(a, -2 * a), -torch.ones(3, dtype=torch.float64))


def test_measures_are_per_sample():
    a = torch.randn(2, 3, 2, 4, 4)
    b = torch.stack([a[0], -a[1]])
    torch.testing.assert_close(spearman(a, b), torch.tensor([1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(cosine(a, b), torch.tensor([1.0, -1.0], dtype=torch.float64))


def test_pearson_ignores_offsets_and_cosine_does_not():
    a = torch.randn(2, 1, 50)
    torch.testing.assert_close(pearson(a, a + 10), torch.ones(2, dtype=torch.float64))
    assert (cosine(a, a + 10) < 0.9).all()


def test_ssim_compares_channel_aggregated_normalised_maps():
    a = torch.randn(2, 3, 4, 8, 8)
    permuted = a[:, :, torch.tensor([2, 0, 3, 1])]  # the same |A| summed over channels, different channels
    torch.testing.assert_close(ssim(a, permuted), torch.ones(2, dtype=torch.float64))
    assert (spearman_abs(a, permuted) < 0.5).all()
    torch.testing.assert_close(ssim(a, 3 * a), torch.ones(2, dtype=torch.float64))  # min-max normalised
    assert (ssim(a, a.flip(-1)) < 0.8).all()


def test_identical_maps_score_one_and_constant_maps_score_zero_against_others():
    zeros, noise = torch.zeros(2, 2, 3, 5, 5), torch.randn(2, 2, 3, 5, 5)
    for measure in (spearman_abs, spearman, pearson, cosine, ssim):
        assert torch.equal(measure(zeros, zeros), torch.ones(2, dtype=torch.float64)), measure.__name__
        assert torch.equal(measure(noise, noise), torch.ones(2, dtype=torch.float64)), measure.__name__
    for measure in (spearman_abs, spearman, pearson, cosine):
        assert torch.equal(measure(zeros, noise), torch.zeros(2, dtype=torch.float64)), measure.__name__


def test_similarity_errors_say_what_was_given():
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3, 4\) and \(2, 3, 5\)"):
        spearman(torch.randn(2, 3, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="spatial dimensions; got shape \\(2, 3, 4\\)"):
        ssim(torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="at least 3 wide; these are 2x2"):
        ssim(torch.randn(1, 1, 2, 2, 2), torch.randn(1, 1, 2, 2, 2))
    with pytest.raises(ValueError, match="unknown similarity measure 'kendall'. Allowed: 'cosine', 'pearson', "
                                         "'spatial_spearman', 'spearman', 'spearman_abs', 'ssim'"):
        resolve_similarities(["spearman", "kendall"])
    with pytest.raises(ValueError, match="given twice"):
        resolve_similarities(["ssim", "ssim"])


def test_callables_and_dicts_name_the_measures():
    def overlap(a, b):
        return torch.ones(a.shape[0])

    assert list(resolve_similarities(["cosine", overlap])) == ["cosine", "overlap"]
    assert list(resolve_similarities({"mine": overlap})) == ["mine"]
    lp = LayerPairAttribution(encoder_with_head(), "encoder.act1", "encoder.embed", method=Saliency)
    result = ModelParameterRandomization(lp, similarity=overlap, show_progress=False).evaluate(torch.rand(2, 1, 8, 8))
    assert torch.equal(result.similarity["overlap"], torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"'pooled' must return one value per sample, shape \[N\] = \[2\]; it "
                                         r"returned shape \(\)"):
        ModelParameterRandomization(lp, similarity={"pooled": lambda a, b: 1.0}, show_progress=False).evaluate(
            torch.rand(2, 1, 8, 8))


# ---------------------------------------------------------------- which modules, in which order, where

class Reordered(nn.Module):
    """Registered ``embed, conv, unused`` but run ``conv -> act -> embed``; ``unused`` never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(2 * 4 * 4, 3)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.embed(self.act(self.conv(x)).flatten(1))


@pytest.mark.parametrize("order, names", [("cascading", ["embed", "conv"]), ("independent", ["embed", "conv"]),
                                          ("bottom_up", ["conv", "embed"])])
def test_modules_are_randomised_in_forward_order_not_registration_order(order, names):
    lp = LayerPairAttribution(Reordered().eval(), "act", "embed", method=Saliency)
    result = ModelParameterRandomization(lp, order=order, similarity="cosine", show_progress=False).evaluate(
        torch.randn(2, 1, 4, 4))
    assert result.layer_names == names
    assert result.similarity["cosine"].shape == (2,) and result.per_sample["cosine"].shape == (2, 2)


def test_positions_relative_to_the_layer_pair():
    model, x = encoder_with_head(), torch.rand(2, 1, 8, 8)
    result = mpr(model, Saliency, source="encoder.conv2", similarity="cosine").evaluate(x)
    assert result.layer_names == ["head", "encoder.embed", "encoder.conv3", "encoder.conv2", "encoder.conv1"]
    assert result.positions == ["after_target", "between", "between", "up_to_source", "up_to_source"]
    # Attributing to the source's input makes the source's own weights part of the sub-network.
    result = mpr(model, Saliency, source="encoder.conv2", similarity="cosine").evaluate(
        x, attribute_to_source_input=True)
    assert result.positions == ["after_target", "between", "between", "between", "up_to_source"]


def test_layers_restrict_the_randomised_modules():
    model = encoder_with_head()
    result = mpr(model, Saliency, layers=[model.encoder.conv3, "encoder.embed"], similarity="cosine").evaluate(
        torch.rand(2, 1, 8, 8))
    assert result.layer_names == ["encoder.embed", "encoder.conv3"]


def test_layer_and_argument_errors():
    model = encoder_with_head()
    lp = LayerPairAttribution(model, "encoder.act1", "encoder.embed", method=Saliency)
    with pytest.raises(ValueError, match="unknown randomised layer 'encoder.conv9'.*encoder.conv"):
        ModelParameterRandomization(lp, layers=["encoder.conv9"])
    with pytest.raises(ValueError, match="'encoder.act1' \\(ReLU\\) has no parameters.*encoder.conv1"):
        ModelParameterRandomization(lp, layers=["encoder.act1"])
    with pytest.raises(ValueError, match="unknown order 'top_down'. Allowed: 'bottom_up', 'cascading', 'independent'"):
        ModelParameterRandomization(lp, order="top_down")
    with pytest.raises(TypeError, match="must be a LayerPairAttribution; got Saliency"):
        ModelParameterRandomization(Saliency(model))
    with pytest.raises(TypeError, match="forward_func must be an nn.Module; got function"):
        ModelParameterRandomization(LayerPairAttribution(lambda x: model(x), model.encoder.act1, model.encoder.embed,
                                                         method=Saliency))
    with pytest.raises(ValueError, match="return_convergence_delta"):
        ModelParameterRandomization(lp).evaluate(torch.rand(2, 1, 8, 8), return_convergence_delta=True)
    unused = LayerPairAttribution(Reordered(), "act", "embed", method=Saliency)
    with pytest.raises(ValueError, match=r"\['unused'\] do not run in the forward pass"):
        ModelParameterRandomization(unused, layers=["unused"]).evaluate(torch.randn(2, 1, 4, 4))


# ---------------------------------------------------------------- re-initialisation

def test_cascading_accumulates_and_independent_restores_the_other_modules():
    model, x = encoder_with_head(), torch.rand(3, 1, 8, 8)
    runs = {order: mpr(model, InputXGradient, order=order, similarity="cosine").evaluate(x, keep_attributions=True)
            for order in ("cascading", "bottom_up", "independent")}
    # Each module gets the same new values in every order, so both cumulative orders end at the same model ...
    torch.testing.assert_close(runs["cascading"].randomized[-1], runs["bottom_up"].randomized[-1])
    # ... and the first step re-initialises the same single module in cascading and independent order.
    assert torch.equal(runs["cascading"].randomized[1], runs["independent"].randomized[1])
    # Independent order re-initialises one module at a time: its last step differs from the fully random model.
    assert not torch.allclose(runs["independent"].randomized[-1], runs["cascading"].randomized[-1])
    assert torch.equal(runs["independent"].original, runs["cascading"].original)


def test_same_seed_reproduces_and_another_seed_differs():
    model, x = encoder_with_head(), torch.rand(3, 1, 8, 8)
    first, again, other = (mpr(model, Saliency, seed=seed, similarity="spearman").evaluate(x)
                           for seed in (0, 0, 1))
    assert torch.equal(first.per_sample["spearman"], again.per_sample["spearman"])
    assert not torch.equal(first.per_sample["spearman"][1:], other.per_sample["spearman"][1:])


def test_stochastic_method_is_compared_on_identical_draws():
    model, x = encoder_with_head(), torch.rand(3, 1, 8, 8)
    check = mpr(model, GradientShap, similarity=("spearman", "cosine"))
    kwargs = dict(input_baselines=torch.zeros(4, 1, 8, 8), n_samples=4, stdevs=0.1)
    result = check.evaluate(x, **kwargs)
    assert result.positions[0] == "after_target"
    for values in result.similarity.values():
        assert values[0] == 1.0  # randomising the head changes nothing, noise draws included
        assert values[1] < 1.0
    np.random.seed(123)  # Captum's GradientShap draws its interpolation points from NumPy's global RNG
    torch.manual_seed(123)
    again = check.evaluate(x, **kwargs)
    assert torch.equal(again.per_sample["spearman"], result.per_sample["spearman"])


class Scale(nn.Module):
    """A module with a raw parameter and no ``reset_parameters``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, channels)[:, None, None])

    def forward(self, x):
        return self.gain * x


def test_modules_without_reset_parameters_get_a_seeded_normal_draw():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), Scale(3), nn.Flatten(), nn.Linear(48, 2)).eval()
    x = torch.rand(2, 1, 4, 4)
    lp = LayerPairAttribution(model, "1", "4", method=InputXGradient)
    runs = [ModelParameterRandomization(lp, layers=["2"], similarity="cosine", show_progress=False).evaluate(
        x, keep_attributions=True) for _ in range(2)]
    assert torch.equal(runs[0].randomized[0], runs[1].randomized[0])
    assert runs[0].similarity["cosine"][0] < 0.99


def test_a_step_that_leaves_the_parameters_unchanged_warns():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.GroupNorm(1, 2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(32, 2)).eval()  # the GroupNorm is still at its defaults and has no statistics
    lp = LayerPairAttribution(model, "0", "4", method=Saliency)
    with pytest.warns(UserWarning, match="re-initialising '1' \\(GroupNorm\\) left its parameters unchanged"):
        ModelParameterRandomization(lp, layers=["1"], similarity="cosine", show_progress=False).evaluate(
            torch.rand(2, 1, 4, 4))


def test_batchnorm_at_default_parameters_does_not_warn_because_its_statistics_are_reset():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(32, 2))
    with torch.no_grad():
        model(torch.rand(8, 1, 4, 4) * 3 + 1)  # train-mode forward: running statistics move away from (0, 1)
    model.eval()
    lp = LayerPairAttribution(model, "0", "4", method=Saliency)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ModelParameterRandomization(lp, layers=["1"], similarity="cosine", show_progress=False).evaluate(
            torch.rand(2, 1, 4, 4))
    assert result.similarity["cosine"][0] < 1 - 1e-6  # resetting the statistics did change the attribution


def test_progress_bar_counts_the_randomised_modules(capsys):
    mpr(encoder_with_head(), Saliency, similarity="cosine", show_progress=True).evaluate(torch.rand(2, 1, 8, 8))
    err = capsys.readouterr().err
    assert "cascading randomisation: 100%" in err and "5/5" in err


def test_int_target_gives_one_unit():
    model = encoder_with_head()
    result = mpr(model, Saliency, similarity=("spearman_abs", "ssim")).evaluate(torch.rand(3, 1, 8, 8), target=1)
    assert result.per_sample["ssim"].shape == (5, 3)


# ---------------------------------------------------------------- the direction of the effect

def test_activation_weighted_method_stays_similar_while_gradient_methods_decay(trained, digits):
    """In the layer-pair setting the source activation plays the role of the input image: gradient x activation
    keeps the activation's support and structure (spearman_abs stays high) after every weight between source and
    target is random, and only falls once the source's own layer is randomised; the plain and the guided gradient
    do not carry the activation and decay. (GuidedBackprop's input-space edge-detector effect comes from the input
    itself; between two layers it behaves like the gradient.)"""
    x = digits[0][:8]
    results = {method: mpr(trained, method, similarity="spearman_abs").evaluate(x)
               for method in (InputXGradient, Saliency, GuidedBackprop)}
    positions = results[Saliency].positions
    assert positions == ["after_target", "between", "between", "between", "up_to_source"]
    last_between = positions.index("up_to_source") - 1  # every module the sub-network depends on is random
    similarity = {method: result.similarity["spearman_abs"] for method, result in results.items()}
    assert similarity[InputXGradient][last_between] > 0.6
    assert similarity[Saliency][last_between] < 0.3
    assert similarity[GuidedBackprop][last_between] < 0.35
    assert similarity[InputXGradient][-1] < 0.3  # the source layer itself: the activation changes too


# ---------------------------------------------------------------- the user's model is never touched

def snapshot(model):
    return ({key: value.clone() for key, value in model.state_dict().items()},
            [p.requires_grad for p in model.parameters()], [m.training for m in model.modules()],
            [(dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks)) for m in model.modules()])


def assert_untouched(model, before):
    state, flags, modes, hooks = snapshot(model)
    assert state.keys() == before[0].keys() and all(torch.equal(state[k], before[0][k]) for k in state)
    assert flags == before[1] and modes == before[2] and hooks == before[3]


def rng_states():
    return torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def assert_rng_unchanged(before):
    after = rng_states()
    assert torch.equal(after[0], before[0]) and np.array_equal(after[1], before[1]) and after[2] == before[2]


@pytest.fixture()
def user_model():
    """A model in mixed modes (BatchNorm in train mode updates statistics), with frozen weights and a user hook."""
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)).train()
    model[3].eval()
    model[0].weight.requires_grad_(False)
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
    calls = []
    model[6].register_forward_hook(lambda *_: calls.append(1))
    return model, calls


@pytest.mark.parametrize("order", ["cascading", "independent", "bottom_up"])
def test_user_model_layer_pair_and_rng_untouched(user_model, order):
    model, _ = user_model
    lp = LayerPairAttribution(model, "2", "6", method=GradientShap)
    x = torch.rand(3, 1, 4, 4)
    before, rng, source = snapshot(model), rng_states(), lp.source
    result = ModelParameterRandomization(lp, order=order, similarity=("spearman", "ssim"), show_progress=False
                                         ).evaluate(x, input_baselines=torch.zeros(2, 1, 4, 4))
    assert torch.isfinite(result.similarity["ssim"]).all()
    assert_untouched(model, before)
    assert_rng_unchanged(rng)
    assert lp.forward_func is model and lp.source is source and lp.source.module is model[2]


def test_user_model_untouched_after_an_exception_midway(user_model):
    model, _ = user_model
    lp = LayerPairAttribution(model, "2", "6", method=Saliency)
    x = torch.rand(3, 1, 4, 4)
    before, rng = snapshot(model), rng_states()
    calls = []

    def fails_on_third_step(a, b):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return torch.zeros(a.shape[0])

    with pytest.raises(RuntimeError, match="boom"):
        ModelParameterRandomization(lp, similarity=fails_on_third_step, show_progress=False).evaluate(x)
    assert_untouched(model, before)
    assert_rng_unchanged(rng)
    with pytest.raises(TypeError):  # an error inside the attribution on the copy
        ModelParameterRandomization(lp, show_progress=False).evaluate(x, no_such_argument=1)
    assert_untouched(model, before)
    assert_rng_unchanged(rng)


# ---------------------------------------------------------------- the figure

def test_plot_has_a_line_per_measure_labelled_axes_and_shaded_regions():
    model = encoder_with_head()
    result = mpr(model, Saliency, source="encoder.conv2", similarity=("spearman_abs", "ssim")).evaluate(
        torch.rand(3, 1, 8, 8))
    fig = result.plot()
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()[:2]] == ["spearman_abs", "ssim"]
    assert ax.get_xlabel() and ax.get_ylabel() and "Saliency" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == result.layer_names
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["spearman_abs", "ssim", "after the target", "source and before"]
    matplotlib.pyplot.close(fig)


def test_random_model_baseline_and_randomisation_draw_the_same_parameters_for_a_module_and_seed():
    from captum_layerpair._reinit import module_seed, reinitialize
    from captum_layerpair.metrics import random_model_pair as randomized_copy

    model = encoder_with_head()
    lp = LayerPairAttribution(model, "encoder.conv2", "encoder.embed", method=Saliency)
    baseline = randomized_copy(lp, seed=3).forward_func
    for name, module in baseline.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        twin = copy.deepcopy(model.get_submodule(name))
        reinitialize(twin, module_seed(3, name))  # what ModelParameterRandomization(seed=3) does to that module
        for p, q in zip(own, twin.parameters(recurse=False)):
            assert torch.equal(p, q), name
        assert not all(torch.equal(p, q) for p, q in zip(own, model.get_submodule(name).parameters(recurse=False)))


def test_a_measure_that_cannot_compare_the_source_fails_before_any_attribution(monkeypatch):
    """"ssim" on a 1-D source (an MLP's hidden layer) fails at the first update with one line, before the first
    attribution is computed (it used to fail only after every step's attribution)."""
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.Linear(3, 2)).eval()
    lp = LayerPairAttribution(model, "1", "2", method=Saliency)

    def never(*args, **kwargs):
        raise AssertionError("an attribution was computed before the measures were checked")

    monkeypatch.setattr(LayerPairAttribution, "attribute", never)
    check = ModelParameterRandomization(lp, similarity=("spearman_abs", "ssim"))
    with pytest.raises(ValueError, match=r"^similarity measure 'ssim' compares spatial maps, so it needs a source "
                                         r"with spatial dimensions; got source shape \(5,\) per sample"):
        check.evaluate(torch.rand(4, 6))
    with pytest.raises(ValueError, match="'spatial_spearman' compares spatial maps"):
        ModelParameterRandomization(lp, similarity="spatial_spearman").update(torch.rand(4, 6))


def test_batchnorm_whose_reset_changes_nothing_warns_that_statistics_did_not_change_either():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(32, 2)).eval()  # statistics still (0, 1), affine parameters still (1, 0)
    lp = LayerPairAttribution(model, "0", "4", method=Saliency)
    with pytest.warns(UserWarning, match=r"'1' \(BatchNorm2d\) left its parameters unchanged \(running statistics "
                                         r"included\), so this step cannot change"):
        result = ModelParameterRandomization(lp, layers=["1"], similarity="cosine").evaluate(torch.rand(2, 1, 4, 4))
    assert result.similarity["cosine"][0] == 1.0  # the warning told the truth


def test_spatial_spearman_ignores_which_unit_and_channel_a_map_belongs_to():
    a = torch.rand(3, 4, 5, 6, 6)
    shuffled = a[:, torch.randperm(4)][:, :, torch.randperm(5)]
    torch.testing.assert_close(spatial_spearman(a, shuffled), torch.ones(3, dtype=torch.float64))
    assert (spearman_abs(a, shuffled) < 0.5).all()
    maps, flipped = a.abs().sum((1, 2)).flatten(1).numpy(), a.flip(-1).abs().sum((1, 2)).flatten(1).numpy()
    expected = [stats.spearmanr(m, f).statistic for m, f in zip(maps, flipped)]  # Spearman of sum_k sum_c |A|
    torch.testing.assert_close(spatial_spearman(a, a.flip(-1)), torch.tensor(expected, dtype=torch.float64))


def test_activation_map_is_the_source_activation_and_explains_attributions_of_a_uniform_linear_pair():
    """Between ``act`` and the target every weight is the same positive number, so the gradient is constant:
    InputXGradient = w * a and IntegratedGradients from a black image = w * (a - a(black)), which the activation
    maps match exactly in rank."""
    from captum.attr import IntegratedGradients

    from captum_layerpair.sanity.references import activation_map

    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 1)).eval()
    with torch.no_grad():
        model[2].weight.fill_(0.5)
    x = torch.rand(4, 1, 5, 5)
    with torch.no_grad():
        a, a_black = model[1](model[0](x)), model[1](model[0](torch.zeros(1, 1, 5, 5)))
    lp = LayerPairAttribution(model, "1", "2", method=InputXGradient)
    plain, shifted = activation_map(lp, x, 2), activation_map(lp, x, 2, input_baselines=0.0)
    assert plain.shape == (4, 2, 3, 5, 5)
    torch.testing.assert_close(plain, a.abs()[:, None].expand(4, 2, 3, 5, 5))
    torch.testing.assert_close(shifted, (a - a_black).abs()[:, None].expand(4, 2, 3, 5, 5))
    ones = torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(spearman_abs(lp.attribute(x), plain), ones)
    ig = LayerPairAttribution(model, "1", "2", method=IntegratedGradients).attribute(
        x, input_baselines=torch.zeros(1, 1, 5, 5), n_steps=4)
    torch.testing.assert_close(spearman_abs(ig, shifted), ones)
    assert (spearman_abs(ig, plain) < 0.99).all()
