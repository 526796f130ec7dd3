"""decode_attention against its reference and against attention."""

import pytest
import torch

from minilazy.kernels.attention import attention, attention_ref
from minilazy.kernels.decode_attention import decode_attention, decode_attention_ref
from tests.helpers import TOLERANCES, assert_close
from tests.kernels.test_attention import int32, make_keys

# name: (B, H, G, d, mode, kv_len, n_slots, n_keys); kv 130 spans three splits when interpreting
CASES = {
    "gqa_ragged": (3, 6, 2, 32, "none", [130, 1, 50], 130, None),
    "mha_gathered_empty": (2, 4, 4, 16, "gathered", [50, 0], 130, 50),
    "one_kv_head_compact": (2, 8, 1, 24, "compact", [130, 7], 200, 130),
    "gqa_gathered_dense": (3, 6, 2, 32, "gathered", [120, 90, 1], 130, 120),  # read in place, masked
    "gqa_same_length": (3, 6, 2, 32, "none", [77, 77, 77], 130, None),  # reference: no mask, slots past 77 unread
}

# GPU-sized: a decode batch of 64 over 8,192 keys (ragged, and gathered image keys); only with --device cuda
GPU_CASES = {
    "gpu_batch64_8192": (64, 9, 3, 64, "none", [8192] * 60 + [1, 100, 4097, 8191], 8192, None),
    "gpu_batch64_gathered": (64, 9, 3, 64, "gathered", [4096] * 62 + [0, 1000], 8192, 4096),
}


def make_case(name, dtype=torch.float32):
    batch, n_heads, n_kv, head_dim, mode, kv_len, n_slots, n_keys = CASES[name] if name in CASES else GPU_CASES[name]
    k_cache, v_cache, key_slots = make_keys(batch, n_slots, n_kv, head_dim, mode, kv_len, n_keys)
    q = torch.randn(batch, n_heads, head_dim)
    args = [t.to(dtype) for t in (q, k_cache, v_cache)] + [int32(kv_len)]
    kwargs = dict(scale=head_dim**-0.5, key_slots=key_slots, k_compact=mode == "compact")
    return args, kwargs


def logits_buffer(args, kwargs):
    """A logits_out buffer filled with NaN, to see which entries get written."""
    q, k_cache = args[:2]
    n_keys = kwargs["key_slots"].shape[1] if kwargs["key_slots"] is not None else k_cache.shape[1]
    return torch.full((q.shape[0], q.shape[1], n_keys), float("nan"))


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_reference(name, dtype, atol, rtol):
    args, kwargs = make_case(name, dtype)
    logits = logits_buffer(args, kwargs)
    o, lse = decode_attention(*args, **kwargs, logits_out=logits)
    fp32_args = [t.float() for t in args[:3]] + args[3:]
    logits_ref = logits_buffer(args, kwargs)
    o_ref, lse_ref = decode_attention_ref(*fp32_args, **kwargs, logits_out=logits_ref)
    assert o.dtype == dtype and lse.dtype == torch.float32
    assert_close(o, o_ref, atol, rtol, what="o")
    assert_close(lse, lse_ref, atol, rtol, what="lse")
    assert_close(logits, logits_ref, atol, rtol, what="logits_out")  # NaN (unwritten) in the same places
    valid = torch.arange(logits.shape[2])[None, :] < args[3][:, None]  # [B, N]
    assert torch.isnan(logits).eq(~valid[:, None, :]).all(), "exactly the valid keys' logits are written"


@pytest.mark.gpu_sized
@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_kernel_matches_twin_gpu_sized(name, dtype, atol, rtol):
    test_kernel_matches_twin(name, dtype, atol, rtol)


@pytest.mark.parametrize("name", list(CASES))
def test_reference_matches_attention_with_one_query(name):
    args, kwargs = make_case(name)
    q, k_cache, v_cache, kv_len = args
    batch = q.shape[0]
    o, lse = decode_attention_ref(*args, **kwargs)
    ones, zeros = int32([1] * batch), int32([0] * batch)
    o_full, lse_full = attention_ref(q[:, None], k_cache, v_cache, zeros, ones, kv_len, causal=False, **kwargs)
    assert_close(o, o_full[:, 0], 1e-5, 1e-5, what="o")
    assert_close(lse, lse_full[:, 0], 1e-5, 1e-5, what="lse")


@pytest.mark.parametrize("keep_logits", [False, True], ids=["fused", "logits"])
def test_reference_gives_zero_and_finite_gradients_on_empty_rows(keep_logits):
    args, kwargs = make_case("mha_gathered_empty")  # the second sequence has no key
    q, v = args[0].clone().requires_grad_(), args[2].clone().requires_grad_()
    logits = logits_buffer(args, kwargs) if keep_logits else None
    o, lse = decode_attention_ref(q, args[1], v, args[3], **kwargs, logits_out=logits)
    assert (o[1] == 0).all() and torch.isneginf(lse[1]).all() and torch.isfinite(lse[0]).all()
    (o.sum() + lse.nan_to_num(neginf=0.0).sum()).backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(v.grad).all()
    assert q.grad[0].abs().sum() > 0 and (q.grad[1] == 0).all()


def test_kernel_matches_attention_kernel():
    args, kwargs = make_case("gqa_ragged", torch.float16)
    q, k_cache, v_cache, kv_len = args
    batch = q.shape[0]
    o, lse = decode_attention(*args, **kwargs)
    # the last query of a causal prefill sees every key, like a decode step
    q_start = kv_len - 1
    o_full, lse_full = attention(q[:, None], k_cache, v_cache, q_start, int32([1] * batch), kv_len,
                                 causal=True, **kwargs)
    assert_close(o, o_full[:, 0], 2e-3, 2e-3, what="o")
    assert_close(lse, lse_full[:, 0], 2e-3, 2e-3, what="lse")


def test_rejects_bad_logits_buffer():
    args, kwargs = make_case("gqa_ragged")
    with pytest.raises(ValueError, match="logits_out"):
        decode_attention(*args, **kwargs, logits_out=torch.zeros(3, 6, 7))
