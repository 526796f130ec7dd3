"""The CPU path's attention ops (minilazy/kernels/cpu/) against the references, in every key mode, and its memos."""

import pytest
import torch

from minilazy.kernels.attention import attention_ref
from minilazy.kernels.cpu import CpuOps
from minilazy.kernels.cpu.key_list import key_list
from minilazy.kernels.cpu.memo import Recent
from minilazy.kernels.decode_attention import decode_attention_ref
from tests.helpers import assert_close
from tests.kernels import test_attention, test_decode_attention
from tests.kernels.test_attention import int32
from tests.kernels.test_decode_attention import logits_buffer


@pytest.mark.parametrize("name", list(test_attention.CASES))
def test_attention_matches_reference(name):
    args, kwargs = test_attention.make_case(name)
    o, lse = CpuOps().attention(*args, **kwargs)
    o_ref, lse_ref = attention_ref(*args, **kwargs)
    # torch's fused CPU attention accumulates in blocks of a size its kernel picks at run time (seen up to
    # 9e-5 apart from the reference's one softmax on unit-scale values, in some runs and not others)
    assert_close(o, o_ref, 1e-4, 1e-4, what="o")
    assert_close(lse, lse_ref, 1e-5, 1e-5, what="lse")


@pytest.mark.parametrize("name", list(test_decode_attention.CASES))
@pytest.mark.parametrize("keep_logits", [False, True], ids=["fused", "logits"])
def test_decode_matches_reference(name, keep_logits):
    """Both modes of decode attention."""
    args, kwargs = test_decode_attention.make_case(name)
    ops = CpuOps()
    logits, logits_ref = (logits_buffer(args, kwargs) if keep_logits else None for _ in range(2))
    o, lse = ops.decode_attention(*args, **kwargs, logits_out=logits)
    o_ref, lse_ref = decode_attention_ref(*args, **kwargs, logits_out=logits_ref)
    assert_close(o, o_ref, 1e-5, 1e-5, what="o")
    assert_close(lse, lse_ref, 1e-5, 1e-5, what="lse")
    if keep_logits:
        assert_close(logits, logits_ref, 1e-5, 1e-5, what="logits_out")  # NaN (unwritten) in the same places


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_keeps_the_dtype(dtype):
    args, kwargs = test_decode_attention.make_case("gqa_ragged", dtype)
    o, lse = CpuOps().decode_attention(*args, **kwargs)
    o_ref, lse_ref = decode_attention_ref(*args, **kwargs)
    assert o.dtype == dtype and lse.dtype == torch.float32
    assert_close(o, o_ref, 2e-2, 2e-2, what="o")
    assert_close(lse, lse_ref, 1e-4, 1e-4, what="lse")


@pytest.mark.parametrize("keep_logits", [False, True], ids=["fused", "logits"])
def test_decode_gives_zero_and_finite_gradients_on_empty_rows(keep_logits):
    args, kwargs = test_decode_attention.make_case("mha_gathered_empty")  # the second sequence has no key
    q, v = args[0].clone().requires_grad_(), args[2].clone().requires_grad_()
    logits = logits_buffer(args, kwargs) if keep_logits else None
    o, lse = CpuOps().decode_attention(q, args[1], v, args[3], **kwargs, logits_out=logits)
    assert (o[1] == 0).all() and torch.isneginf(lse[1]).all() and torch.isfinite(lse[0]).all()
    (o.sum() + lse.nan_to_num(neginf=0.0).sum()).backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(v.grad).all()
    assert q.grad[0].abs().sum() > 0 and (q.grad[1] == 0).all()


def test_attention_gradients_are_finite_with_empty_rows():
    args, kwargs = test_attention.make_case("causal_gathered_empty_rows")
    q, v = args[0].clone().requires_grad_(), args[2].clone().requires_grad_()
    o, lse = CpuOps().attention(q, args[1], v, *args[3:], **kwargs)
    (o.sum() + lse.nan_to_num(neginf=0.0).sum()).backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(v.grad).all()
    assert q.grad.abs().sum() > 0


@pytest.mark.parametrize("name, by_slot", [("causal_gathered_dense", True), ("causal_gathered_empty_rows", False)])
def test_dense_key_lists_are_read_in_place(name, by_slot):
    args, kwargs = test_attention.make_case(name)
    keys = key_list(Recent(), args[1], args[2], kwargs["key_slots"], False, args[5])
    assert keys.layout.by_slot == by_slot
    if by_slot:  # views of the caches, no copies
        assert keys.k.data_ptr() == args[1].data_ptr() and keys.v.data_ptr() == args[2].data_ptr()
        assert keys.layout.listed.sum(1).tolist() == args[5].tolist()


def test_decode_reads_no_slot_past_an_equal_length():
    """Sequences of one length take the unmasked path: NaN in every slot past it changes nothing."""
    (q, k_cache, v_cache, kv_len), kwargs = test_decode_attention.make_case("gqa_same_length")
    poisoned = [c.clone() for c in (k_cache, v_cache)]
    for c in poisoned:
        c[:, 77:] = float("nan")
    o, lse = CpuOps().decode_attention(q, *poisoned, kv_len, **kwargs)
    o_ref, lse_ref = attention_ref(q[:, None], k_cache[:, :77], v_cache[:, :77], int32([0] * 3), int32([1] * 3),
                                   kv_len, causal=False, **kwargs)
    assert_close(o, o_ref[:, 0], 1e-5, 1e-5, what="o")
    assert_close(lse, lse_ref[:, 0], 1e-5, 1e-5, what="lse")


def test_key_layouts_are_remembered_per_step_tensors():
    """Layers that share key_slots and kv_len share one layout; new step tensors get a new one."""
    args, kwargs = test_attention.make_case("causal_gathered_empty_rows")
    layouts, (k_cache, v_cache), slots, kv_len = Recent(), args[1:3], kwargs["key_slots"], args[5]
    first = key_list(layouts, k_cache, v_cache, slots, False, kv_len).layout
    assert key_list(layouts, k_cache, v_cache, slots, False, kv_len).layout is first
    assert key_list(layouts, k_cache, v_cache, slots, False, kv_len.clone()).layout is not first
