"""kv_write: the kernel against its reference, the reference against a python loop."""

import pytest
import torch

from minilazy.kernels.kv_write import kv_write, kv_write_ref
from tests.helpers import TOLERANCES

DTYPES = [dtype for dtype, _, _ in TOLERANCES]


def _slots(B, T, S, padding=True):
    """Distinct slots per sequence, with the last tokens of sequence 0 marked as padding (-1)."""
    slots = torch.stack([torch.randperm(S)[:T] for _ in range(B)])  # [B, T]
    if padding and T > 1:
        slots[0, T // 2 :] = -1
    return slots


def _loop_write(cache, new, slots):
    expected = cache.clone()
    for b in range(new.shape[0]):
        for t in range(new.shape[1]):
            if slots[b, t] >= 0:
                expected[b, slots[b, t]] = new[b, t]
    return expected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,T,S,G,d", [(1, 1, 4, 3, 16), (2, 5, 9, 3, 64), (2, 37, 40, 9, 16)])
@pytest.mark.parametrize("slots_dtype", [torch.int32, torch.int64])
def test_kv_write_kernel_matches_reference(B, T, S, G, d, dtype, slots_dtype):
    cache = torch.randn(B, S, G, d).to(dtype)
    new = torch.randn(B, T, G, d).to(dtype)
    slots = _slots(B, T, S).to(slots_dtype)
    expected = kv_write_ref(cache.clone(), new, slots)
    assert kv_write(cache, new, slots) is cache
    assert torch.equal(cache, expected)  # a copy: exact


def test_kv_write_kernel_honours_strides():
    # cache: one layer's half of a [B, S, 2, G, d] buffer; new: k out of a fused qkv output.
    B, T, S, G, d = 2, 5, 9, 3, 16
    kv = torch.zeros(B, S, 2, G, d)
    cache = kv[:, :, 0]  # [B, S, G, d], strided
    qkv = torch.randn(B, T, 3 * G * d)
    new = qkv[..., G * d : 2 * G * d].view(B, T, G, d)  # [B, T, G, d], row stride 3Gd
    slots = _slots(B, T, S)
    kv_write(cache, new, slots)
    assert torch.equal(cache, _loop_write(torch.zeros(B, S, G, d), new, slots))
    assert not kv[:, :, 1].any(), "kv_write wrote outside its cache view"


def test_kv_write_reference_matches_python_loop_and_is_differentiable():
    B, T, S, G, d = 2, 5, 9, 3, 16
    cache = torch.randn(B, S, G, d)
    new = torch.randn(B, T, G, d, requires_grad=True)
    slots = _slots(B, T, S)
    expected = _loop_write(cache, new.detach(), slots)
    out = kv_write_ref(cache, new, slots)
    assert out is cache
    assert torch.equal(cache.detach(), expected)
    weights = torch.randn(B, S, G, d)
    (cache * weights).sum().backward()
    keep = (slots >= 0)[..., None, None]  # [B, T, 1, 1]
    gathered = torch.stack([weights[b, slots[b].clamp(min=0)] for b in range(B)])  # [B, T, G, d]
    assert torch.equal(new.grad, torch.where(keep, gathered, 0.0))


def test_kv_write_skips_all_padding():
    cache = torch.randn(1, 4, 3, 16)
    before = cache.clone()
    for fn in (kv_write, kv_write_ref):
        fn(cache, torch.randn(1, 2, 3, 16), torch.full((1, 2), -1))
        assert torch.equal(cache, before)


@pytest.mark.parametrize(
    "new_shape,slots,message",
    [
        ((1, 2, 3, 16), torch.tensor([[0, 4]]), "past the cache's 4 slots"),
        ((1, 2, 3, 8), torch.tensor([[0, 1]]), "does not match"),
        ((1, 2, 3, 16), torch.tensor([[0.0, 1.0]]), "slots must be"),
        ((1, 2, 3, 16), torch.tensor([0, 1]), "slots must be"),
    ],
)
def test_kv_write_rejects_bad_input(new_shape, slots, message):
    for fn in (kv_write, kv_write_ref):
        with pytest.raises(ValueError, match=message):
            fn(torch.zeros(1, 4, 3, 16), torch.zeros(new_shape), slots)
