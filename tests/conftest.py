"""Shared test setup: the Triton interpreter on CPU, seeded RNG, allclose helper."""

import os

# Must be set before any @triton.jit decorator runs (kernels are imported lazily).
if not os.environ.get("CUDA_VISIBLE_DEVICES") and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
