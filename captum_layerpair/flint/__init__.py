"""FLINT: learning an interpreter from a classifier's hidden layers (Parekh et al., NeurIPS 2021).

Training follows the authors' code, the metrics follow the paper; each module's docstring names the differences.

>>> from captum_layerpair.flint import Interpreter, FLINTLoss, fit, evaluate
>>> interp = Interpreter(net, "features", n_attributes=25, example_inputs=x[:8])
>>> fit(interp, (x, y), epochs=40)
>>> print(evaluate(interp, (x_test, y_test)))
"""
from captum_layerpair.flint.activation_maximization import (
    activation_maximization,
    maximally_activating_samples,
    total_variation,
)
from captum_layerpair.flint.evaluation import TAUS, FLINTMetrics, FLINTReport, conciseness, evaluate, fidelity
from captum_layerpair.flint.interpreter import AttributeDictionary, Interpreter, InterpreterOutput
from captum_layerpair.flint.losses import (
    FLINTLoss,
    LossTerms,
    attribute_l1,
    conciseness_diversity_loss,
    input_fidelity_loss,
    output_fidelity_loss,
)
from captum_layerpair.flint.predictor import SmallLeNet, fit_predictor
from captum_layerpair.flint.relevance import (
    AttributeRelevance,
    attribute_contributions,
    class_relevance,
    global_interpretation,
    local_interpretation,
    local_relevance,
)
from captum_layerpair.flint.training import FitHistory, constant_schedule, fit, paper_schedule, train_step

__all__ = [
    "Interpreter", "InterpreterOutput", "AttributeDictionary",
    "FLINTLoss", "LossTerms", "output_fidelity_loss", "input_fidelity_loss", "conciseness_diversity_loss",
    "attribute_l1",
    "fit", "train_step", "paper_schedule", "constant_schedule", "FitHistory",
    "attribute_contributions", "local_relevance", "AttributeRelevance", "class_relevance", "global_interpretation",
    "local_interpretation",
    "evaluate", "fidelity", "conciseness", "FLINTMetrics", "FLINTReport", "TAUS",
    "activation_maximization", "maximally_activating_samples", "total_variation",
    "SmallLeNet", "fit_predictor",
]
