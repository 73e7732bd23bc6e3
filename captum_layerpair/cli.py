"""The ``captum-layerpair`` console script (also ``python -m captum_layerpair``): argument parsing only.

* ``demo --out DIR [--model {digits,sequence}]``: the report on an embedded default model and dataset.
* ``layers --model MODULE:FACTORY [--checkpoint PATH] [--input-shape C,H,W] [--input-dtype int64]``: layer names
  with output shapes.
* ``report --model MODULE:FACTORY [--checkpoint PATH] --inputs PATH.pt --source NAME [NAME ...] --target NAME
  --method NAME [--method-kwargs JSON] [--target-batch-size K] --out DIR``: the same report on your model and data
  (float inputs, or integer token ids).

The work lives in ``captum_layerpair.report`` (and ``demo``, ``_user_model``). A user mistake (bad argument,
unknown layer or method, unreadable file, shape mismatch, bad JSON, a model that fails or returns NaN) prints one
line on stderr and exits with 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import torch

from captum_layerpair import __version__
from captum_layerpair._user_model import (MAX_SAMPLE_ELEMENTS, UserInputError, describe_layers, load_inputs,
                                          load_model, one_line)

if TYPE_CHECKING:  # the report's imports (metrics, sanity, matplotlib) load only for the commands that need them
    from captum_layerpair.report import Report

# the report's defaults, repeated here so that --help does not import the report (they are checked to agree)
DEFAULT_BATCH_SIZE = 16
DEFAULT_TARGET_BATCH_SIZE = 8

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2
INPUT_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}
LAYOUTS = ("channels_first", "channels_last")


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,16,16 (one sample, without the "
                                         f"batch dimension); got {text!r}")
    n_elements = math.prod(shape)
    if n_elements > MAX_SAMPLE_ELEMENTS:
        raise argparse.ArgumentTypeError(f"a sample of shape {text} has {n_elements:,} elements; at most "
                                         f"{MAX_SAMPLE_ELEMENTS:,} are allowed")
    return shape


def _tuples(value: Any) -> Any:
    """JSON arrays as tuples (Captum wants tuples, e.g. ``sliding_window_shapes``), recursively."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _method_kwargs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at character {e.pos}): {text!r}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"n_steps\": 32}}'; got {text!r}")
    return _tuples(value)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``captum-layerpair`` and its three commands."""
    parser = _Parser(prog="captum-layerpair", description="Layer-pair attribution reports for Captum: explain a "
                     "model's learned representation by its inner layers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,layers,report}",
                                     parser_class=_Parser)

    demo = commands.add_parser("demo", help="report on an embedded default model and dataset; about a minute on a "
                               "CPU")
    demo.add_argument("--out", required=True, metavar="DIR", help="directory for the figures, scores.json and "
                      "report.html (created if missing)")
    demo.add_argument("--model", choices=("digits", "sequence"), default="digits", help="digits: a conv "
                      "autoencoder on scikit-learn digits (default); sequence: a sequence encoder on token ids")
    demo.add_argument("--n-inputs", type=_positive, metavar="N", help="held-out inputs to explain (default: the "
                      "demo's own, 64 digits)")
    demo.add_argument("--threads", type=_positive, default=1, metavar="T", help="torch CPU threads (default: 1; "
                      "the demo models are so small that more threads only add overhead)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    demo.set_defaults(run=_run_demo)

    layers = commands.add_parser("layers", help="list a model's layer names with their output shapes")
    _model_arguments(layers)
    layers.add_argument("--input-shape", type=_shape, metavar="C,H,W", help="shape of one input sample (without "
                        "the batch dimension), e.g. 1,16,16 (or 128 for 128 token ids); needed for output shapes")
    layers.add_argument("--input-dtype", choices=tuple(INPUT_DTYPES), default="float32", help="dtype of that "
                        "sample (zeros): float32 (default), float64, or int64 for token ids")
    layers.set_defaults(run=_run_layers)

    report = commands.add_parser("report", help="the report on your model and inputs")
    _model_arguments(report)
    report.add_argument("--inputs", required=True, metavar="PATH.pt", help="a tensor [N, ...] saved with "
                        "torch.save (or a dict with key 'inputs', or a tuple (inputs, labels)): floats, or integer "
                        "token ids")
    report.add_argument("--source", required=True, nargs="+", metavar="NAME", help="source layer name(s)")
    report.add_argument("--target", required=True, metavar="NAME", help="target layer name (e.g. the embedding)")
    report.add_argument("--method", required=True, metavar="NAME", help="a captum.attr class name, e.g. "
                        "IntegratedGradients, Saliency, Occlusion, LayerConductance, or paper_expected_gradients")
    report.add_argument("--method-kwargs", type=_method_kwargs, default={}, metavar="JSON", help="keyword "
                        "arguments of the attribution as a JSON object, e.g. '{\"n_steps\": 32, "
                        "\"input_baselines\": 0}'; arrays become tuples; input_baselines may be one number per "
                        "input channel, e.g. [0.485, 0.456, 0.406], broadcast over the other dimensions")
    report.add_argument("--target-reduction", choices=("sum", "mean", "none"), default="sum",
                        help="how each target unit is reduced to a scalar (default: sum)")
    for role in ("source", "target"):
        report.add_argument(f"--{role}-layout", choices=LAYOUTS, help=f"where the {role} layer's units are: "
                            "channels_first ([N, C, ...], default) or channels_last ([N, L, D] tokens)")
    report.add_argument("--max-inputs", type=_positive, metavar="N", help="use only the first N inputs")
    report.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE, metavar="B", help="inputs per "
                        f"batch (default: {DEFAULT_BATCH_SIZE}); with --target-batch-size it bounds the memory")
    report.add_argument("--target-batch-size", type=_positive, default=DEFAULT_TARGET_BATCH_SIZE, metavar="K",
                        help=f"target units attributed at a time (default: {DEFAULT_TARGET_BATCH_SIZE}); lower it "
                        "if memory runs out, raise it for speed on a large machine")
    report.add_argument("--no-scores", action="store_true", help="skip the latent scores and their baselines")
    report.add_argument("--no-randomization", action="store_true", help="skip the parameter-randomisation check")
    report.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    report.add_argument("--out", required=True, metavar="DIR", help="directory for the report")
    report.add_argument("--threads", type=_positive, metavar="T", help="torch CPU threads (default: torch's)")
    report.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    report.set_defaults(run=_run_report)
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="MODULE:FACTORY", help="module (or .py file) and a "
                        "function or class in it that builds the model without arguments, e.g. "
                        "captum_layerpair.demo:default_encoder")
    parser.add_argument("--checkpoint", metavar="PATH", help="state dict saved with torch.save (loaded with "
                        "weights_only=True)")


def _run_demo(args: argparse.Namespace) -> int:
    if args.model == "sequence":
        try:
            from captum_layerpair.demo_sequence import run_demo
        except ImportError as e:
            raise UserInputError(f"the sequence demo is not available in this installation ({one_line(e)})") from e
    else:
        from captum_layerpair.demo import run_demo

    torch.set_num_threads(args.threads)
    options = {} if args.n_inputs is None else {"n_inputs": args.n_inputs}
    report = run_demo(args.out, show_progress=not args.no_progress, **options)
    _print_written(report)
    return 0


def _run_layers(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.checkpoint)
    sample = None if args.input_shape is None else torch.zeros(1, *args.input_shape,
                                                               dtype=INPUT_DTYPES[args.input_dtype])
    rows = [("layer", "type", "output shape", "parameters")]
    for info in describe_layers(model, sample):
        if isinstance(info.output_shape, tuple):
            shape = "[N, " + ", ".join(map(str, info.output_shape[1:])) + "]"
        else:
            shape = info.output_shape or ("not run" if sample is not None else "-")
        rows.append((info.name, info.kind, shape, str(info.n_parameters)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if sample is None:
        print("(give --input-shape C,H,W to see output shapes)", file=sys.stderr)
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from captum_layerpair.report import build_report

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, args.checkpoint)
    inputs = load_inputs(args.inputs)[:args.max_inputs]
    report = build_report(
        model, inputs, sources=args.source, target=args.target, method=args.method,
        attribute_kwargs=args.method_kwargs, out_dir=args.out, target_reduction=args.target_reduction,
        source_layout=args.source_layout, target_layout=args.target_layout, scores=not args.no_scores,
        randomization=not args.no_randomization, batch_size=args.batch_size,
        target_batch_size=args.target_batch_size,
        model_description=args.model + (f" with {args.checkpoint}" if args.checkpoint else ""),
        inputs_description=args.inputs, seed=args.seed, show_progress=not args.no_progress,
    )
    _print_written(report)
    return 0


def _print_written(report: Report | Any) -> None:
    from captum_layerpair._report_figures import CONDITIONS, score_conditions
    from captum_layerpair.report import Report

    if not isinstance(report, Report):
        print(f"wrote the report to {getattr(report, 'out_dir', report)}")
        return
    print(f"wrote {len(report.figures)} figures, {report.scores_json.name} and {report.html.name} to "
          f"{report.out_dir}")
    for pair in report.pairs:
        scores = "; ".join(f"{name} " + ", ".join(f"{CONDITIONS[key]} {s.mean:.3f}" for key, s in
                                                  score_conditions(summary).items())
                           for name, summary in pair.scores.items())
        print(f"  {pair.label}: K = {pair.n_units} units on {list(pair.source_shape)}" + (f"; {scores}"
                                                                                          if scores else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``captum-layerpair`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserInputError as e:
        print(f"captum-layerpair {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
