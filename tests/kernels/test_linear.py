"""linear: the Triton kernel (interpreted) against its torch reference, and the reference against plain math."""

import dataclasses
import math

import pytest
import torch

from minilazy.kernels import blocks, linear as linear_module
from minilazy.kernels.linear import ACTIVATIONS, linear, linear_ref
from tests.helpers import TOLERANCES, assert_close

SHAPES = [(1, 40, 113), (3, 96, 40), (37, 113, 96)]  # (rows M, in K, out N)


def _inputs(m, k, n, dtype, bias=True):
    x = torch.randn(m, k).to(dtype)
    weight = (torch.randn(n, k) / math.sqrt(k)).to(dtype)
    b = torch.randn(n).to(dtype) if bias else None
    return x, weight, b


def _fp32_reference(x, weight, bias, activation):
    """The reference in fp32 on the same rounded inputs."""
    return linear_ref(x.float(), weight.float(), None if bias is None else bias.float(), activation)


@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES)
@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_reference(dtype, atol, rtol, m, k, n, activation, bias):
    x, weight, b = _inputs(m, k, n, dtype, bias)
    y = linear(x, weight, b, activation)
    assert y.dtype == dtype
    assert_close(y, _fp32_reference(x, weight, b, activation), atol, rtol, f"linear {activation}")


@pytest.mark.parametrize("m", [1, 37])
def test_linear_gpu_tiles(monkeypatch, m):
    """The GPU tile configs (several programs, K steps and program groups) give the same result."""
    decode, prefill = blocks.linear_gpu_blocks(torch.float32)
    for config in (decode, prefill, dataclasses.replace(decode, group_m=2)):  # 37 rows: groups of 2 and 1 row tiles
        monkeypatch.setattr(linear_module, "linear_blocks", lambda *_, c=config: c)
        x, weight, b = _inputs(m, 300, 160, torch.float32)
        assert_close(linear(x, weight, b, "silu"), _fp32_reference(x, weight, b, "silu"), 1e-5, 1e-5, f"tiles {config}")


@pytest.mark.gpu_sized
@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES)
@pytest.mark.parametrize("m,k,n", [(4096, 576, 1536), (64, 576, 49280)])  # a prefill MLP; a batch-64 output head
def test_linear_gpu_sized(dtype, atol, rtol, m, k, n):
    x, weight, b = _inputs(m, k, n, dtype)
    assert_close(linear(x, weight, b, "silu"), _fp32_twin(x, weight, b, "silu"), atol, rtol, "linear")


def test_linear_strided_and_batched():
    wide = torch.randn(2, 5, 80)
    x = wide[..., 8:48]  # [2, 5, 40], rows strided by 80
    weight = torch.randn(24, 40) / math.sqrt(40)
    y = linear(x, weight, None, "gelu_tanh")
    assert y.shape == (2, 5, 24)
    assert_close(y, linear_ref(x, weight, None, "gelu_tanh"), 1e-5, 1e-5, "strided linear")


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_reference_matches_plain_math(activation):
    x, weight, b = (t.double() for t in _inputs(5, 40, 24, torch.float32))
    z = x @ weight.T + b
    expected = {
        None: z,
        "gelu": 0.5 * z * (1 + torch.erf(z / math.sqrt(2))),
        "gelu_tanh": 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3))),
        "quick_gelu": z / (1 + torch.exp(-1.702 * z)),
        "silu": z / (1 + torch.exp(-z)),
    }[activation]
    assert_close(linear_ref(x, weight, b, activation), expected, 1e-10, 1e-10, f"reference {activation}")


def test_reference_is_differentiable():
    x, weight, b = (t.requires_grad_() for t in _inputs(3, 40, 24, torch.float32))
    linear_ref(x, weight, b, "gelu").sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_linear_rejects_bad_input():
    x, weight, b = _inputs(3, 40, 24, torch.float32)
    with pytest.raises(ValueError, match="activation"):
        linear(x, weight, b, "relu6")
    with pytest.raises(ValueError, match="weight"):
        linear(x, weight[:, :39], b)
    with pytest.raises(ValueError, match="dtype"):
        linear(x, weight.half(), b)
    with pytest.raises(ValueError, match="contiguous"):
        linear(x, weight.T.contiguous().T, b)
