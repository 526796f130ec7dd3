"""merge_attention: the kernel against its reference, and the reference against attention over the union of keys."""

import pytest
import torch

from minilazy.kernels.attention import attention_ref
from minilazy.kernels.merge_attention import merge_attention, merge_attention_ref
from tests.helpers import TOLERANCES, assert_close
from tests.kernels.test_attention import int32


def partial_pair(shape, head_dim, dtype):
    """Two random partials; some rows have one part empty, some both (lse = -inf, o = 0)."""
    o1, o2 = torch.randn(*shape, head_dim), torch.randn(*shape, head_dim)
    lse1, lse2 = 3 * torch.randn(shape), 3 * torch.randn(shape)
    lse1[..., 0] = float("-inf")
    lse2[..., 1] = float("-inf")
    lse1[..., 2] = lse2[..., 2] = float("-inf")
    for o, lse in ((o1, lse1), (o2, lse2)):
        o[torch.isinf(lse)] = 0.0
    return o1.to(dtype), lse1, o2.to(dtype), lse2


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("shape, head_dim", [((3, 37, 6), 32), ((2, 5), 24)])
def test_kernel_matches_reference(shape, head_dim, dtype, atol, rtol):
    o1, lse1, o2, lse2 = partial_pair(shape, head_dim, dtype)
    out = merge_attention(o1, lse1, o2, lse2)
    expected = merge_attention_ref(o1.float(), lse1, o2.float(), lse2)
    assert out.dtype == dtype
    assert_close(out, expected, atol, rtol, what="merged o")
    assert (out[..., 2, :] == 0).all(), "both parts empty gives 0"
    assert_close(out[..., 0, :], o2[..., 0, :], atol, rtol, what="only the second part")


def test_kernel_honours_strided_views():
    o1, lse1, o2, lse2 = partial_pair((2, 7, 4), 16, torch.float32)
    both = torch.cat([o1, o2], dim=-1)  # [B, T, H, 2d]: o1 and o2 as strided views of one tensor
    out = merge_attention(both[..., :16], lse1, both[..., 16:], lse2)
    assert_close(out, merge_attention_ref(o1, lse1, o2, lse2), 1e-5, 1e-5, what="merged o")


@pytest.mark.parametrize("causal", [True, False])
def test_reference_merges_to_attention_over_the_union(causal):
    batch, n_q, n_heads, n_kv, head_dim, n_slots = 2, 9, 6, 2, 16, 40
    q = torch.randn(batch, n_q, n_heads, head_dim)
    k_cache, v_cache = torch.randn(batch, n_slots, n_kv, head_dim), torch.randn(batch, n_slots, n_kv, head_dim)
    q_start, q_len, kv_len = int32([31, 20]), int32([9, 6]), int32([40, 26])
    # split the keys of each sequence into two interleaved slot sets, like image and text keys
    sets = [[[s for s in range(int(n)) if (s % 3 == 0) == part] for n in kv_len] for part in (True, False)]
    first, second = (torch.tensor([row + [-1] * (n_slots - len(row)) for row in rows], dtype=torch.int32)
                     for rows in sets)
    first_len, second_len = (int32([len(row) for row in rows]) for rows in sets)
    kwargs = dict(scale=head_dim**-0.5, causal=causal)
    o1, lse1 = attention_ref(q, k_cache, v_cache, q_start, q_len, first_len, key_slots=first, **kwargs)
    o2, lse2 = attention_ref(q, k_cache, v_cache, q_start, q_len, second_len, key_slots=second, **kwargs)
    o_all, _ = attention_ref(q, k_cache, v_cache, q_start, q_len, kv_len, **kwargs)
    assert_close(merge_attention_ref(o1, lse1, o2, lse2), o_all, 1e-5, 1e-5, what="merged o")
    assert_close(merge_attention(o1, lse1, o2, lse2), o_all, 1e-5, 1e-5, what="merged o (kernel)")


def test_reference_gradients_are_finite_on_empty_parts():
    o1, lse1, o2, lse2 = (t.requires_grad_() for t in partial_pair((3, 5), 8, torch.float32))
    out = merge_attention_ref(o1, lse1, o2, lse2)
    assert (out[..., 2, :] == 0).all() and out.isfinite().all()
    out.sum().backward()
    for name, tensor in (("o1", o1), ("lse1", lse1), ("o2", o2), ("lse2", lse2)):
        assert tensor.grad.isfinite().all(), f"non-finite gradient of {name}"


def test_rejects_mismatched_shapes():
    o1, lse1, o2, lse2 = partial_pair((2, 5), 8, torch.float32)
    with pytest.raises(ValueError, match="shape"):
        merge_attention(o1, lse1[:1], o2, lse2)


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
def test_kernel_shifts_part_one_by_its_head_offset(dtype, atol, rtol):
    o1, lse1, o2, lse2 = partial_pair((3, 11, 6), 24, dtype)
    offset = torch.randn(6)  # one per head, the last axis of lse
    out = merge_attention(o1, lse1, o2, lse2, offset)
    assert_close(out, merge_attention_ref(o1.float(), lse1 + offset, o2.float(), lse2), atol, rtol, what="merged o")
    assert (out[..., 2, :] == 0).all() and not out.isnan().any(), "an offset leaves empty parts empty"


def test_offset_must_have_one_value_per_head():
    o1, lse1, o2, lse2 = partial_pair((2, 5), 16, torch.float32)
    with pytest.raises(ValueError, match="one per head"):
        merge_attention(o1, lse1, o2, lse2, torch.zeros(4))
