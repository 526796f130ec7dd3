"""swiglu: the Triton kernel (interpreted) against its reference, and the reference against plain math."""

import pytest
import torch

from minilazy.kernels import blocks, swiglu as swiglu_module
from minilazy.kernels.swiglu import swiglu, swiglu_ref
from tests.helpers import TOLERANCES, assert_close

SHAPES = [(1, 40), (3, 113), (37, 96)]  # (rows, I)


@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES)
@pytest.mark.parametrize("rows,width", SHAPES)
def test_swiglu_on_fused_projection(dtype, atol, rtol, rows, width):
    fused = torch.randn(2, rows, 2 * width).to(dtype)  # [B, T, 2I]: gate then up
    gate, up = fused[..., :width], fused[..., width:]  # strided views [B, T, I]
    y = swiglu(gate, up)
    assert y.shape == gate.shape and y.dtype == dtype
    assert_close(y, swiglu_ref(gate.float(), up.float()), atol, rtol, "swiglu")


def test_swiglu_in_chunks(monkeypatch):
    """Rows wider than one block (several programs per row) give the same result."""
    monkeypatch.setattr(swiglu_module, "row_blocks", lambda d: blocks.RowBlocks(block=32, num_warps=4))
    gate, up = torch.randn(3, 113), torch.randn(3, 113)
    assert_close(swiglu(gate, up), swiglu_ref(gate, up), 1e-6, 1e-6, "chunked swiglu")


def test_reference_matches_plain_math():
    gate, up = torch.randn(4, 40).double(), torch.randn(4, 40).double()
    assert_close(swiglu_ref(gate, up), gate / (1 + torch.exp(-gate)) * up, 1e-12, 1e-12, "reference")


def test_swiglu_rejects_bad_input():
    with pytest.raises(ValueError, match="must match"):
        swiglu(torch.randn(3, 40), torch.randn(3, 41))
    with pytest.raises(ValueError, match="contiguous"):
        swiglu(torch.randn(40, 3).T, torch.randn(40, 3).T)
