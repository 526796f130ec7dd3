"""attention: the Triton kernel against its torch reference, and the reference against independent expressions."""

import pytest
import torch
import torch.nn.functional as F

from minilazy.kernels.attention import attention, attention_ref
from tests.helpers import TOLERANCES, assert_close


def int32(values):
    return torch.tensor(values, dtype=torch.int32)


def make_keys(batch, n_slots, n_kv, head_dim, mode, kv_len, n_keys=None, lowest_slot=0):
    """Caches and key_slots for one key mode: 'none' (rows 0..), 'gathered' or 'compact'.

    Gathered keys are sorted distinct slots >= lowest_slot; entries past kv_len are -1, which the
    contract allows to be anything since they are never read. Mode 'none' stores the caches
    token-major; the others head-major, as minilazy's KV cache does: the kernels take both.
    """
    if mode == "none":
        return torch.randn(batch, n_slots, n_kv, head_dim), torch.randn(batch, n_slots, n_kv, head_dim), None
    v_cache = head_major(torch.randn(batch, n_slots, n_kv, head_dim))
    key_slots = torch.full((batch, n_keys), -1, dtype=torch.int32)
    for b, length in enumerate(kv_len):
        chosen = lowest_slot + torch.randperm(n_slots - lowest_slot)[:length]
        key_slots[b, :length] = chosen.sort().values.int()
    rows = n_keys if mode == "compact" else n_slots
    return head_major(torch.randn(batch, rows, n_kv, head_dim)), v_cache, key_slots


def head_major(cache):
    """The same `[B, S, G, d]` values over `[B, G, S, d]` storage."""
    return cache.transpose(1, 2).contiguous().transpose(1, 2)  # [B, G, S, d] storage, [B, S, G, d] view


# name: (B, Tq, H, G, d, causal, mode, q_start, q_len, kv_len, n_slots, n_keys, lowest_slot)
CASES = {
    "causal_prefill_gqa": (3, 37, 6, 2, 32, True, "none", [0, 0, 0], [37, 20, 1], [37, 20, 1], 40, None, 0),
    "causal_continuation": (2, 7, 4, 4, 16, True, "none", [50, 123], [7, 3], [57, 126], 130, None, 0),
    "bidirectional_odd_d": (2, 50, 4, 4, 24, False, "none", [0, 0], [50, 33], [50, 33], 50, None, 0),
    "causal_gathered_empty_rows": (2, 7, 6, 2, 32, True, "gathered", [100, 0], [7, 7], [50, 20], 130, 50, 5),
    "causal_compact": (2, 37, 4, 2, 32, True, "compact", [150, 60], [37, 30], [130, 64], 200, 130, 0),
    "bidirectional_gathered_no_keys": (2, 1, 4, 1, 32, False, "gathered", [0, 0], [1, 1], [50, 0], 130, 50, 0),
    # slots naming most of their span: the CPU path reads the span in place and mask the others
    "causal_gathered_dense": (2, 5, 4, 2, 32, True, "gathered", [120, 0], [5, 5], [110, 70], 130, 110, 3),
}

# GPU-sized (SmolVLM-256M's 9 query and 3 key heads of 64): a 4,096-token prefill, and a lazy layer's anchor
# queries over 1,088 image keys of a 4,096-token prompt; only with --device cuda (tests/conftest.py)
GPU_CASES = {
    "gpu_causal_prefill_4096": (1, 4096, 9, 3, 64, True, "none", [0], [4096], [4096], 4096, None, 0),
    "gpu_causal_gathered_4096": (2, 4096, 9, 3, 64, True, "gathered", [0, 0], [4096, 3001], [1088, 700], 4096,
                                 1088, 0),
}


def make_case(name, dtype=torch.float32):
    spec = CASES[name] if name in CASES else GPU_CASES[name]
    batch, n_q, n_heads, n_kv, head_dim, causal, mode, q_start, q_len, kv_len, n_slots, n_keys, lowest = spec
    k_cache, v_cache, key_slots = make_keys(batch, n_slots, n_kv, head_dim, mode, kv_len, n_keys, lowest)
    q = torch.randn(batch, n_q, n_heads, head_dim)
    args = [t.to(dtype) for t in (q, k_cache, v_cache)] + [int32(q_start), int32(q_len), int32(kv_len)]
    kwargs = dict(scale=head_dim**-0.5, causal=causal, key_slots=key_slots, k_compact=mode == "compact")
    return args, kwargs


@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_reference(name, dtype, atol, rtol):
    args, kwargs = make_case(name, dtype)
    o, lse = attention(*args, **kwargs)
    fp32_args = [t.float() for t in args[:3]] + args[3:]
    o_ref, lse_ref = attention_ref(*fp32_args, **kwargs)
    assert o.dtype == dtype and lse.dtype == torch.float32
    assert_close(o, o_ref, atol, rtol, what="o")
    assert_close(lse, lse_ref, atol, rtol, what="lse")


@pytest.mark.gpu_sized
@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_kernel_matches_twin_gpu_sized(name, dtype, atol, rtol):
    test_kernel_matches_twin(name, dtype, atol, rtol)


def brute_force(q, k_cache, v_cache, q_start, q_len, kv_len, *, scale, causal, key_slots=None, k_compact=False):
    """One query and one head at a time, straight from the contract's wording."""
    batch, n_q, n_heads, head_dim = q.shape
    group_size = n_heads // k_cache.shape[2]
    o = torch.zeros(batch, n_q, n_heads, head_dim)
    lse = torch.full((batch, n_q, n_heads), float("-inf"))
    for b in range(batch):
        for i in range(int(q_len[b])):
            for h in range(n_heads):
                logits, values = [], []
                for j in range(int(kv_len[b])):
                    slot = int(key_slots[b, j]) if key_slots is not None else j
                    if causal and slot > int(q_start[b]) + i:
                        continue
                    key = k_cache[b, j if k_compact else slot, h // group_size]
                    logits.append(scale * torch.dot(q[b, i, h], key))
                    values.append(v_cache[b, slot, h // group_size])
                if logits:
                    weights = torch.softmax(torch.stack(logits), 0)
                    o[b, i, h] = weights @ torch.stack(values)
                    lse[b, i, h] = torch.logsumexp(torch.stack(logits), 0)
    return o, lse


@pytest.mark.parametrize("name", ["causal_gathered_empty_rows", "causal_compact", "bidirectional_gathered_no_keys",
                                  "causal_continuation"])
def test_reference_matches_brute_force(name):
    args, kwargs = make_case(name)
    o_ref, lse_ref = attention_ref(*args, **kwargs)
    o_bf, lse_bf = brute_force(*args, **kwargs)
    assert_close(o_ref, o_bf, 1e-5, 1e-5, what="o")
    assert_close(lse_ref, lse_bf, 1e-5, 1e-5, what="lse")
    assert torch.isinf(lse_bf).any(), "the case should contain queries that see no key"


@pytest.mark.parametrize("name", ["causal_prefill_gqa", "causal_continuation", "bidirectional_odd_d"])
def test_reference_matches_sdpa(name):
    args, kwargs = make_case(name)
    q, k_cache, v_cache, q_start, q_len, kv_len = args
    o_ref, lse_ref = attention_ref(*args, **kwargs)
    for b in range(q.shape[0]):
        n_q, n_k, start = int(q_len[b]), int(kv_len[b]), int(q_start[b])
        qb = q[b, :n_q].transpose(0, 1)  # [H, Tq, d]
        kb, vb = k_cache[b, :n_k].transpose(0, 1), v_cache[b, :n_k].transpose(0, 1)  # [G, N, d]
        mask = torch.arange(n_k)[None, :] <= start + torch.arange(n_q)[:, None] if kwargs["causal"] else None
        expected = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=kwargs["scale"], enable_gqa=True)
        assert_close(o_ref[b, :n_q], expected.transpose(0, 1), 1e-5, 1e-5, what=f"o of sequence {b}")
        assert (o_ref[b, n_q:] == 0).all() and torch.isneginf(lse_ref[b, n_q:]).all(), "padding queries"


def test_reference_gradients_are_finite_with_empty_rows():
    args, kwargs = make_case("causal_gathered_empty_rows")
    q = args[0].clone().requires_grad_()
    v = args[2].clone().requires_grad_()
    o, lse = attention_ref(q, args[1], v, *args[3:], **kwargs)
    (o.sum() + lse.nan_to_num(neginf=0.0).sum()).backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(v.grad).all()
    assert q.grad.abs().sum() > 0


def test_rejects_bad_shapes():
    args, kwargs = make_case("causal_prefill_gqa")
    with pytest.raises(ValueError, match="q_len"):
        attention(*args[:4], args[4].long(), args[5], **kwargs)
    with pytest.raises(ValueError, match="multiple"):
        attention(args[0][:, :, :5], *args[1:], **kwargs)
