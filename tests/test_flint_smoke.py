"""FLINT end to end on scikit-learn digits: a fast smoke test, and a slow one-seed reproduction of the benchmark's
acceptance (the full five-seed table is benchmarks/flint_digits.py)."""
import pytest
import torch

from captum_layerpair.datasets import load_digits_images
from captum_layerpair.flint import (
    Interpreter,
    SmallLeNet,
    class_relevance,
    evaluate,
    fit,
    fit_predictor,
    global_interpretation,
)


def digits_split(seed=0):
    x, y = load_digits_images()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.75 * len(x))
    return (x[perm[:cut]], y[perm[:cut]]), (x[perm[cut:]], y[perm[cut:]])


def test_smoke_digits_joint_fit_reaches_high_fidelity():
    train, test = digits_split()
    interp = Interpreter(SmallLeNet(), "features", 25, train[0][:8])
    history = fit(interp, train, epochs=15)
    assert history.terms["total"][-1] < history.terms["total"][0]
    report = evaluate(interp, test)
    assert report.fidelity > 0.8 and report.acc_f > 0.8
    assert "fidelity" in str(report)
    R = class_relevance(interp, train)
    assert R.shape == (10, 25)
    assert global_interpretation(R, tau=2.0)


@pytest.mark.slow
def test_digits_one_seed_meets_the_benchmark_acceptance():
    train, test = digits_split(seed=0)
    base = SmallLeNet(seed=0)
    fit_predictor(base, train, 40)
    joint = Interpreter(SmallLeNet(seed=0), "features", 25, train[0][:8])
    fit(joint, train, 40)
    posthoc = Interpreter(base, "features", 25, train[0][:8], posthoc=True)
    fit(posthoc, train, 40)
    base_acc = evaluate(posthoc, test).acc_f
    joint_report = evaluate(joint, test)
    assert joint_report.acc_f - base_acc >= -0.01
    assert joint_report.fidelity >= 0.95
    assert evaluate(posthoc, test).fidelity >= 0.95
