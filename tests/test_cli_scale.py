"""The CLI report at modest scale (issue 16, case 3): bounded memory and progress that keeps moving.

Slow (about 12 CPU minutes): run with ``pytest -m slow tests/test_cli_scale.py``. The numbers come from
``benchmarks/cli_report_scale.py``, which this test runs.
"""
import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "cli_report_scale.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("cli_report_scale", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_case_3_report_stays_under_3_gb_and_its_progress_advances_every_10_s_of_work():
    result = _benchmark().run(n=32, n_steps=32, threads=1, extra=[])
    assert result["peak_rss_gb"] < 3.0, result
    assert result["longest_silence_s"] < 10.0, result


def test_the_benchmark_runs_in_quick_mode_with_a_small_footprint():
    result = _benchmark().run(n=2, n_steps=2, threads=1, extra=["--no-scores", "--no-randomization"])
    assert result["peak_rss_gb"] < 3.0 and "K = 64 units on [32, 32, 32]" in result["stdout"]
