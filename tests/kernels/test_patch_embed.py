"""patch_embed: unfold + the linear kernel (interpreted) against the conv reference, and the reference against unfold math."""

import pytest
import torch

from minilazy.kernels.patch_embed import patch_embed, patch_embed_ref
from tests.helpers import TOLERANCES, assert_close


@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES)
@pytest.mark.parametrize("has_bias", [True, False])
def test_patch_embed_matches_reference(dtype, atol, rtol, has_bias):
    pixels = torch.randn(2, 3, 28, 21).to(dtype)  # a 4x3 grid of 7x7 patches
    weight = (0.1 * torch.randn(40, 3, 7, 7)).to(dtype)
    bias = torch.randn(40).to(dtype) if has_bias else None
    out = patch_embed(pixels, weight, bias, 7)
    assert out.shape == (2, 12, 40) and out.dtype == dtype
    expected = patch_embed_ref(pixels.float(), weight.float(), None if bias is None else bias.float(), 7)
    assert_close(out, expected, atol, rtol, "patch_embed")


def test_reference_matches_unfold():
    pixels, weight, bias = torch.randn(1, 3, 8, 12).double(), torch.randn(5, 3, 4, 4).double(), torch.randn(5).double()
    columns = torch.nn.functional.unfold(pixels, kernel_size=4, stride=4)  # [N, C*p*p, L], patches row-major
    expected = columns.transpose(1, 2) @ weight.reshape(5, -1).T + bias  # [N, L, D]
    assert_close(patch_embed_ref(pixels, weight, bias, 4), expected, 1e-10, 1e-10, "reference")


def test_patch_embed_rejects_bad_input():
    weight = torch.randn(5, 3, 4, 4)
    with pytest.raises(ValueError, match="multiple of the patch"):
        patch_embed(torch.randn(1, 3, 10, 8), weight, None, 4)
    with pytest.raises(ValueError, match="weight must be"):
        patch_embed(torch.randn(1, 3, 8, 8), weight, None, 2)
