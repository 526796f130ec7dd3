"""rms_norm: the Triton kernel (interpreted) against its reference, and the reference against a hand-written RMSNorm."""

import pytest
import torch

from minilazy.kernels import blocks, rms_norm as rms_norm_module
from minilazy.kernels.rms_norm import rms_norm, rms_norm_ref
from tests.helpers import TOLERANCES, assert_close

SHAPES = [(1, 40), (3, 113), (37, 96)]  # (rows, D)
EPS = 1e-6


@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES)
@pytest.mark.parametrize("rows,d", SHAPES)
def test_rms_norm_matches_reference(dtype, atol, rtol, rows, d):
    x = torch.randn(rows, d).to(dtype)
    weight = (1 + 0.5 * torch.randn(d)).to(dtype)
    y = rms_norm(x, weight, EPS)
    assert y.dtype == dtype
    assert_close(y, rms_norm_ref(x.float(), weight.float(), EPS), atol, rtol, "rms_norm")


@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES)
@pytest.mark.parametrize("rows,d", SHAPES)
def test_rms_norm_with_residual(dtype, atol, rtol, rows, d):
    x = torch.randn(rows, 1, d).to(dtype)  # [rows, 1, D]: leading dims are flattened
    residual = torch.randn(rows, 1, d).to(dtype)
    weight = (1 + 0.5 * torch.randn(d)).to(dtype)
    y, h = rms_norm(x, weight, EPS, residual)
    assert y.shape == x.shape and h.dtype == dtype
    assert_close(h, x.float() + residual.float(), atol, rtol, "residual sum")
    # The norm is compared on the kernel's own rounded h (the same rounded input).
    assert_close(y, rms_norm_ref(h.float(), weight.float(), EPS), atol, rtol, "rms_norm of h")


def test_rms_norm_in_chunks(monkeypatch):
    """Rows longer than one block (the GPU chunking) give the same result."""
    monkeypatch.setattr(rms_norm_module, "row_blocks", lambda d: blocks.RowBlocks(block=32, num_warps=4))
    x, residual, weight = torch.randn(3, 113), torch.randn(3, 113), torch.randn(113)
    y, h = rms_norm(x, weight, EPS, residual)
    y_ref, h_ref = rms_norm_ref(x, weight, EPS, residual)
    assert_close(h, h_ref, 1e-6, 1e-6, "chunked residual")
    assert_close(y, y_ref, 1e-5, 1e-5, "chunked rms_norm")


def test_rms_norm_strided_rows():
    wide = torch.randn(5, 80)
    x = wide[:, :40]  # [5, 40], rows strided by 80
    weight = torch.randn(40)
    assert_close(rms_norm(x, weight, EPS), rms_norm_ref(x, weight, EPS), 1e-5, 1e-5, "strided rms_norm")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_matches_hand_written_rms_norm(dtype):
    x = torch.randn(4, 40).to(dtype)
    weight = torch.randn(40).to(dtype)
    rms = x.double().pow(2).mean(-1, keepdim=True).add(EPS).sqrt()
    expected = weight.double() * (x.double() / rms).to(dtype).double()
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    assert_close(rms_norm_ref(x, weight, EPS).double(), expected, tol, tol, "reference")
    residual = torch.randn(4, 40).to(dtype)
    y, h = rms_norm_ref(x, weight, EPS, residual)
    assert torch.equal(h, x + residual)
    assert torch.equal(y, rms_norm_ref(x + residual, weight, EPS))


def test_rms_norm_rejects_bad_input():
    x = torch.randn(3, 40)
    with pytest.raises(ValueError, match="weight"):
        rms_norm(x, torch.randn(39), EPS)
    with pytest.raises(ValueError, match="residual"):
        rms_norm(x, torch.randn(40), EPS, torch.randn(3, 39))
    with pytest.raises(ValueError, match="contiguous"):
        rms_norm(torch.randn(40, 3).T, torch.randn(40), EPS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,d", SHAPES + [(5, 576)])
def test_reference_equals_transformers(dtype, rows, d):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(d, eps=EPS).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.5 * torch.randn(d))
        x = torch.randn(rows, d).to(dtype)
        assert torch.equal(rms_norm_ref(x, norm.weight, EPS), norm(x))
