"""layer_norm: the Triton kernel (interpreted) against its reference, and the reference against the LayerNorm formula."""

import pytest
import torch

from minilazy.kernels import blocks, layer_norm as layer_norm_module
from minilazy.kernels.layer_norm import layer_norm, layer_norm_ref
from tests.helpers import TOLERANCES, assert_close

SHAPES = [(1, 40), (3, 113), (37, 96)]  # (rows, D)
EPS = 1e-5


def _inputs(rows, d, dtype):
    # An offset mean checks that the variance is taken around the mean.
    x = (3 + torch.randn(rows, d)).to(dtype)
    return x, torch.randn(d).to(dtype), torch.randn(d).to(dtype)


@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES)
@pytest.mark.parametrize("rows,d", SHAPES)
@pytest.mark.parametrize("has_bias", [True, False])
def test_layer_norm_matches_reference(dtype, atol, rtol, rows, d, has_bias):
    x, weight, bias = _inputs(rows, d, dtype)
    bias = bias if has_bias else None
    y = layer_norm(x, weight, bias, EPS)
    assert y.dtype == dtype
    expected = layer_norm_ref(x.float(), weight.float(), None if bias is None else bias.float(), EPS)
    assert_close(y, expected, atol, rtol, "layer_norm")


def test_layer_norm_in_chunks(monkeypatch):
    """Rows longer than one block (the GPU chunking) give the same result."""
    monkeypatch.setattr(layer_norm_module, "row_blocks", lambda d: blocks.RowBlocks(block=32, num_warps=4))
    x, weight, bias = _inputs(2, 113, torch.float32)
    x = x.view(2, 1, 113)  # [2, 1, D]: leading dims are flattened
    assert_close(layer_norm(x, weight, bias, EPS), layer_norm_ref(x, weight, bias, EPS), 1e-5, 1e-5, "chunked")


def test_reference_matches_formula():
    x, weight, bias = (t.double() for t in _inputs(4, 40, torch.float32))
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + EPS) * weight + bias
    assert_close(layer_norm_ref(x, weight, bias, EPS), expected, 1e-10, 1e-10, "reference")


def test_layer_norm_rejects_bad_input():
    x, weight, bias = _inputs(3, 40, torch.float32)
    with pytest.raises(ValueError, match="bias"):
        layer_norm(x, weight, bias[:39], EPS)
    with pytest.raises(ValueError, match="weight"):
        layer_norm(x, weight.half(), bias, EPS)
