"""The CPU path's row-wise ops (minilazy/kernels/cpu/pointwise.py) against the references, and the RoPE angle memo."""

import pytest
import torch

from minilazy.kernels.cpu import CpuOps, pointwise
from minilazy.kernels.kv_write import kv_write_ref
from minilazy.kernels.merge_attention import merge_attention_ref
from minilazy.kernels.rms_norm import rms_norm_ref
from minilazy.kernels.rope import rope_ref
from tests.helpers import TOLERANCES, assert_close
from tests.kernels.test_kv_write import _slots
from tests.kernels.test_merge_attention import partial_pair


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("shape", [(1, 1, 3, 16), (2, 37, 5, 24)])
def test_rope_matches_reference(shape, dtype, atol, rtol):
    x = torch.randn(shape).to(dtype)
    positions = torch.randint(0, 4000, shape[:2])
    out = torch.empty_like(x)
    assert CpuOps().rope(x, positions, 10000.0, out) is out
    assert torch.equal(out, rope_ref(x, positions, 10000.0))


@pytest.mark.parametrize("sections,axial", [((2, 3, 3), False), ((4, 4), True)])
def test_rope_on_several_axes_matches_reference(sections, axial):
    x = torch.randn(2, 9, 3, 16)
    positions = torch.randint(0, 4000, (2, 9, len(sections)))
    got = CpuOps().rope(x, positions, 10000.0, sections=sections, axial=axial)
    assert torch.equal(got, rope_ref(x, positions, 10000.0, sections=sections, axial=axial))


def test_rope_reuses_angles_only_for_the_same_unchanged_positions():
    ops = CpuOps()
    x = torch.randn(2, 5, 3, 8)
    positions = torch.arange(10).view(2, 5)
    first = ops.rope(x, positions, 10000.0)
    positions += 7  # in place: the cached angles must not be reused
    moved = ops.rope(x, positions, 10000.0)
    assert torch.equal(moved, rope_ref(x, positions, 10000.0)) and not torch.allclose(first, moved)
    assert torch.equal(ops.rope(x, positions, 500.0), rope_ref(x, positions, 500.0))  # theta is in the key
    on_axes = positions[..., None].expand(2, 5, 2).contiguous()  # the layout is in the key too
    assert torch.equal(ops.rope(x, on_axes, 500.0, sections=(2, 2), axial=True),
                       rope_ref(x, on_axes, 500.0, sections=(2, 2), axial=True))


def test_rope_computes_angles_once_per_positions_tensor_when_two_alternate(monkeypatch):
    misses = []
    cos_sin = pointwise.cos_sin
    monkeypatch.setattr(pointwise, "cos_sin", lambda *args: misses.append(args) or cos_sin(*args))
    ops = CpuOps()
    x = torch.randn(1, 1, 3, 8)
    step, text = torch.tensor([[5]]), torch.tensor([[9]])
    for _ in range(3):  # a lazy layer's pattern: queries at the step's positions, text keys at their own
        ops.rope(x, step, 1234.0)
        ops.rope(x, text, 1234.0)
    assert len(misses) == 2


@pytest.mark.parametrize("padding", [False, True])
def test_kv_write_matches_reference_and_checks_slots(padding):
    ops = CpuOps()
    B, T, S, G, d = 3, 5, 11, 2, 24
    new, slots = torch.randn(B, T, G, d), _slots(B, T, S, padding)
    cache = torch.randn(B, S, G, d)
    expected = cache.clone()
    assert ops.kv_write(cache, new, slots) is cache
    assert torch.equal(cache, kv_write_ref(expected, new, slots))
    slots[1, 0] = S  # in place: the remembered rows are not reused, the slot is checked
    with pytest.raises(ValueError, match="past the cache"):
        ops.kv_write(cache, new, slots)


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("residual", [False, True])
def test_rms_norm_matches_reference(dtype, atol, rtol, residual):
    x, weight = torch.randn(7, 97).to(dtype), torch.randn(97).to(dtype)
    r = torch.randn(7, 97).to(dtype) if residual else None
    got, expected = CpuOps().rms_norm(x, weight, 1e-6, r), rms_norm_ref(x, weight, 1e-6, r)
    for a, b in zip(got, expected) if residual else [(got, expected)]:
        assert a.dtype == dtype
        assert_close(a, b, atol, rtol, "rms_norm")


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("with_offset", [False, True])
def test_merge_attention_matches_reference(dtype, atol, rtol, with_offset):
    o1, lse1, o2, lse2 = partial_pair((3, 5), 24, dtype)
    offset = torch.randn(5) if with_offset else None  # one per head
    out = CpuOps().merge_attention(o1, lse1, o2, lse2, offset)
    assert out.dtype == dtype
    assert_close(out, merge_attention_ref(o1, lse1, o2, lse2, offset), atol, rtol, "merged o")
