"""Shared test settings: one torch thread per process (pytest-xdist runs one process per core), seeded torch."""
import os
import warnings

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)
settings.register_profile("default", max_examples=15, deadline=None)
settings.register_profile("deep", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("LAYERPAIR_HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _seed_and_quiet():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        warnings.filterwarnings("ignore", message="You are providing multiple inputs for Lime")
        yield
