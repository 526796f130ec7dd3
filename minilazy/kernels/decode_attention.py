"""Decode attention: one new query per sequence over its whole key list (flash-decoding).

The key axis is cut into splits; a grid over (sequence, kv head, split) lets
even a batch of one fill the GPU. Each program takes all query heads of one kv
group at once (rows of a tl.dot tile), so each K/V tile is read once per group,
and writes a partial (o, lse) for its split; a second small kernel merges the
splits by log-sum-exp. The same kernels also serve the lazy decode fast path:
the split kernel can store the scaled logits it computes (`logits_out`: an
anchor's), or read stored logits at its keys' cache slots instead of computing
q.k (a lazy layer's image keys, minilazy/kernels/lazy_decode_attention.py), and
the reduce can shift some splits' lse (the lazy layer's mass correction).
The torch reference is `attention_ref`'s math for one query.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from minilazy.kernels.aot import CompileCase, pointer
from minilazy.kernels.attention import GPU_HEAD_BLOCKS, attend, attention_logits, check_caches, check_lengths, head_block, listed_keys
from minilazy.kernels.backend import interpreting
from minilazy.kernels.online_softmax import LOG2_E, online_softmax_finish, online_softmax_step

# what the split kernel does with the logits buffer: nothing, write them at list positions, read them at slots
NO_LOGITS, WRITE_LOGITS, READ_LOGITS = 0, 1, 2
GPU_BLOCK_H = 16  # query heads per kv group one GPU program holds (compiled for exactly this)


@triton.jit(do_not_specialize=["split_base", "has_slots", "k_compact"])  # one compiled variant for all their values
def _decode_split_kernel(
    q_ptr, k_ptr, v_ptr, logits_ptr, kv_len_ptr, slots_ptr, part_o_ptr, part_lse_ptr,
    head_dim, group_size, keys_per_split, split_base, scale,
    stride_qb, stride_qh,
    stride_kb, stride_kn, stride_kg,
    stride_vb, stride_vn, stride_vg,
    stride_lb, stride_lh,
    stride_sb,
    stride_pb, stride_ph, stride_ps,
    has_slots, k_compact,
    LOGITS: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # has_slots / k_compact are runtime flags (0 or 1), not constexprs: one compiled kernel serves all key modes
    b = tl.program_id(0)
    g = tl.program_id(1)
    split = tl.program_id(2)
    b64 = b.to(tl.int64)
    kv_len = tl.load(kv_len_ptr + b)
    start = split * keys_per_split
    end = tl.minimum(start + keys_per_split, kv_len)

    rows = tl.arange(0, BLOCK_H)
    row_valid = rows < group_size
    head = g * group_size + rows
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < head_dim
    if LOGITS != 2:
        q = tl.load(q_ptr + b64 * stride_qb + head[:, None] * stride_qh + offs_d[None, :],
                    mask=row_valid[:, None] & d_valid[None, :], other=0.0)
        if UPCAST:
            q = q.to(tl.float32)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_valid = offs_n < end
        visible = row_valid[:, None] & key_valid[None, :]
        # flags are 0/1 integers: arithmetic selects the mode (a scalar bool cannot mask a load)
        gathered = tl.load(slots_ptr + b64 * stride_sb + offs_n, mask=offs_n < end * has_slots, other=0)
        key_slot = gathered + offs_n * (1 - has_slots)
        kv_mask = key_valid[:, None] & d_valid[None, :]
        # written at the key's list position, read at its cache slot (an anchor writes with no key_slots: the same)
        logit_cols = key_slot if LOGITS == 2 else offs_n
        logit_ptrs = logits_ptr + b64 * stride_lb + head[:, None] * stride_lh + logit_cols[None, :]
        if LOGITS == 2:
            s = tl.load(logit_ptrs, mask=visible, other=float("-inf"))
        else:
            k_rows = offs_n * k_compact + key_slot * (1 - k_compact)
            k = tl.load(k_ptr + b64 * stride_kb + k_rows[:, None] * stride_kn + g * stride_kg + offs_d[None, :],
                        mask=kv_mask, other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # [BLOCK_H, BLOCK_N]
            if LOGITS == 1:
                tl.store(logit_ptrs, s, mask=visible)
        s = tl.where(visible, s * LOG2_E, float("-inf"))  # base 2
        v = tl.load(v_ptr + b64 * stride_vb + key_slot[:, None] * stride_vn + g * stride_vg + offs_d[None, :],
                    mask=kv_mask, other=0.0)
        if UPCAST:
            v = v.to(tl.float32)
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc)

    o, lse = online_softmax_finish(m_i, l_i, acc)
    part = b64 * stride_pb + head * stride_ph + (split_base + split) * stride_ps  # [BLOCK_H] into [B, H, splits]
    tl.store(part_o_ptr + part[:, None] * head_dim + offs_d[None, :], o, mask=row_valid[:, None] & d_valid[None, :])
    tl.store(part_lse_ptr + part, lse, mask=row_valid)


@triton.jit(do_not_specialize=["n_shifted"])
def _decode_reduce_kernel(
    part_o_ptr, part_lse_ptr, o_ptr, lse_ptr, offset_ptr,
    head_dim, n_splits, n_shifted,
    stride_pb, stride_ph, stride_ps,
    stride_ob, stride_oh, stride_lb, stride_lh,
    HAS_OFFSET: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < head_dim
    # merge the splits one by one by log-sum-exp, in base e like the partial lse
    m = tl.full([], float("-inf"), tl.float32)
    total = tl.zeros([], tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for split in range(0, n_splits):
        part = b * stride_pb + h * stride_ph + split * stride_ps
        lse = tl.load(part_lse_ptr + part)
        if HAS_OFFSET:  # the first n_shifted splits' lse shifted by offset[h] (-inf stays -inf)
            lse += tl.where(split < n_shifted, tl.load(offset_ptr + h), 0.0)
        o = tl.load(part_o_ptr + part * head_dim + offs_d, mask=d_valid, other=0.0)
        m_new = tl.maximum(m, lse)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)
        weight = tl.exp(lse - m_safe)
        total = total * alpha + weight
        acc = acc * alpha + weight * o
        m = m_new
    has_key = total > 0.0
    out = acc / tl.where(has_key, total, 1.0)
    tl.store(o_ptr + b * stride_ob + h * stride_oh + offs_d, out.to(o_ptr.dtype.element_ty), mask=d_valid)
    tl.store(lse_ptr + b * stride_lb + h * stride_lh,
             tl.where(has_key, m + tl.log(tl.where(has_key, total, 1.0)), float("-inf")))


def decode_blocks(n_keys: int, n_programs: int, device) -> tuple[int, int]:
    """(BLOCK_N, keys_per_split): a few splits when interpreting, about two programs per SM on a GPU."""
    if interpreting():
        return 64, 64
    block_n = 64
    target_splits = triton.cdiv(2 * torch.cuda.get_device_properties(device).multi_processor_count, n_programs)
    keys_per_split = max(256, triton.cdiv(n_keys, target_splits))
    return block_n, triton.cdiv(keys_per_split, block_n) * block_n


class KeyPass(NamedTuple):
    """One key list for the split kernel; q and k_cache may be placeholders when the logits are read."""

    q: torch.Tensor
    k_cache: torch.Tensor
    logits: torch.Tensor
    kv_len: torch.Tensor
    key_slots: torch.Tensor | None
    k_compact: bool
    scale: float
    mode: int  # NO_LOGITS, WRITE_LOGITS or READ_LOGITS
    n_keys: int  # N: the key list's columns


def launch_decode_kernels(passes: list[KeyPass], v_cache, n_heads, out_dtype, offset=None):
    """Run the split kernel once per key pass (their values all in `v_cache`), then one reduce over every
    pass's splits: one softmax over the union of their key lists. `offset [H]` fp32 shifts the first
    pass's lse per head (a lazy layer's mass correction of its inherited part)."""
    batch, _, n_kv, head_dim = v_cache.shape
    group_size = n_heads // n_kv
    block_d = head_block(head_dim)
    block_h = max(16, triton.next_power_of_2(group_size)) if interpreting() else GPU_BLOCK_H
    if group_size > block_h:
        raise ValueError(f"decode attention supports at most {block_h} query heads per kv head, got {group_size}")
    blocks = [decode_blocks(p.n_keys, batch * n_kv, v_cache.device) for p in passes]  # (BLOCK_N, keys_per_split)
    splits = [max(1, triton.cdiv(p.n_keys, per_split)) for p, (_, per_split) in zip(passes, blocks)]
    part_o = torch.empty(batch, n_heads, sum(splits), head_dim, device=v_cache.device, dtype=torch.float32)
    part_lse = torch.empty(batch, n_heads, sum(splits), device=v_cache.device, dtype=torch.float32)
    upcast = interpreting() and v_cache.dtype == torch.bfloat16
    split_base = 0
    for p, (block_n, keys_per_split), n_splits in zip(passes, blocks, splits):
        slots = p.key_slots if p.key_slots is not None else p.kv_len  # a placeholder pointer when unused
        _decode_split_kernel[(batch, n_kv, n_splits)](
            p.q, p.k_cache, v_cache, p.logits, p.kv_len, slots, part_o, part_lse,
            head_dim, group_size, keys_per_split, split_base, float(p.scale),
            *p.q.stride()[:2], *p.k_cache.stride()[:3], *v_cache.stride()[:3], *p.logits.stride()[:2],
            slots.stride(0), *part_lse.stride(), int(p.key_slots is not None), int(bool(p.k_compact)),
            LOGITS=p.mode, UPCAST=upcast,
            BLOCK_H=block_h, BLOCK_N=block_n, BLOCK_D=block_d,
        )
        split_base += n_splits
    o = torch.empty(batch, n_heads, head_dim, device=v_cache.device, dtype=out_dtype)
    lse = torch.empty(batch, n_heads, device=v_cache.device, dtype=torch.float32)
    offsets = part_lse if offset is None else offset.contiguous()  # a placeholder pointer without offsets
    _decode_reduce_kernel[(batch, n_heads)](
        part_o, part_lse, o, lse, offsets, head_dim, sum(splits), splits[0], *part_lse.stride(), *o.stride()[:2],
        *lse.stride(), HAS_OFFSET=offset is not None, BLOCK_D=block_d,
    )
    return o, lse


def decode_attention(q, k_cache, v_cache, kv_len, *, scale, key_slots=None, k_compact=False, logits_out=None):
    """One query per sequence, q [B, H, d], over its kv_len[b] keys; returns (o [B, H, d], lse [B, H] fp32).

    logits_out [B, H, N] fp32 (N = key_slots.shape[1], or the cache length without key_slots) receives
    the scaled logits of the valid keys; entries past kv_len[b] are left as they were.
    """
    if q.dim() != 3 or q.stride(-1) != 1:
        raise ValueError(f"q must be [B, H, d] with a contiguous last dimension; got {tuple(q.shape)}")
    batch, n_heads, head_dim = q.shape
    check_caches(k_cache, v_cache, n_heads, head_dim, key_slots, batch)
    if k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"q, k_cache, v_cache must share a dtype; got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    check_lengths("kv_len", kv_len, batch)
    if k_compact and key_slots is None:
        raise ValueError("k_compact=True needs key_slots")
    n_keys = key_slots.shape[1] if key_slots is not None else k_cache.shape[1]
    if logits_out is not None:
        expected = (batch, n_heads, n_keys)
        if logits_out.shape != expected or logits_out.dtype != torch.float32 or logits_out.stride(-1) != 1:
            raise ValueError(f"logits_out must be fp32 [{batch}, {n_heads}, {n_keys}] with a contiguous last "
                             f"dimension; got {logits_out.dtype} {tuple(logits_out.shape)}")
    mode = NO_LOGITS if logits_out is None else WRITE_LOGITS
    logits = logits_out if logits_out is not None else placeholder(q)
    keys = KeyPass(q, k_cache, logits, kv_len, key_slots, k_compact, scale, mode, n_keys)
    return launch_decode_kernels([keys], v_cache, n_heads, q.dtype)


def placeholder(like):
    """A 3-D tensor standing in for an unused pointer argument (its strides are passed but never used)."""
    return torch.empty(1, 1, 1, device=like.device, dtype=like.dtype)


def decode_attention_ref(q, k_cache, v_cache, kv_len, *, scale, key_slots=None, k_compact=False, logits_out=None):
    """Torch reference of `decode_attention`: `attention_ref` of one query (fp32 math, differentiable)."""
    k, v, _, listed = listed_keys(k_cache, v_cache, kv_len, key_slots, k_compact)  # [B, N, G, d], [B, N]
    logits = attention_logits(q[:, None], k, scale)  # [B, H, 1, N]
    if logits_out is not None:  # the listed keys' logits, at their list positions
        written = logits_out[:, :, : logits.shape[3]]  # [B, H, N]
        written.copy_(torch.where(listed[:, None, :], logits[:, :, 0], written))
    o, lse = attend(logits, listed[:, None, :], v)  # [B, 1, H, d], [B, 1, H]
    return o[:, 0].to(q.dtype), lse[:, 0]


def _compile_cases():
    cases = []
    i32 = "i32"
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        ptr = pointer(dtype)
        for mode in (NO_LOGITS, WRITE_LOGITS, READ_LOGITS):
            signature = {
                "q_ptr": ptr, "k_ptr": ptr, "v_ptr": ptr,
                "logits_ptr": "*fp32" if mode != NO_LOGITS else ptr,
                "kv_len_ptr": "*i32", "slots_ptr": "*i32", "part_o_ptr": "*fp32", "part_lse_ptr": "*fp32",
                "head_dim": i32, "group_size": i32, "keys_per_split": i32, "split_base": i32, "scale": "fp32",
                "stride_qb": i32, "stride_qh": i32, "stride_kb": i32, "stride_kn": i32, "stride_kg": i32,
                "stride_vb": i32, "stride_vn": i32, "stride_vg": i32, "stride_lb": i32, "stride_lh": i32,
                "stride_sb": i32, "stride_pb": i32, "stride_ph": i32, "stride_ps": i32,
                "has_slots": i32, "k_compact": i32,
            }
            for block_d in GPU_HEAD_BLOCKS:
                cases.append(CompileCase(_decode_split_kernel, signature, dict(
                    LOGITS=mode, UPCAST=False, BLOCK_H=GPU_BLOCK_H, BLOCK_N=64, BLOCK_D=block_d)))
        reduce_signature = {
            "part_o_ptr": "*fp32", "part_lse_ptr": "*fp32", "o_ptr": ptr, "lse_ptr": "*fp32", "offset_ptr": "*fp32",
            "head_dim": i32, "n_splits": i32, "n_shifted": i32, "stride_pb": i32, "stride_ph": i32, "stride_ps": i32,
            "stride_ob": i32, "stride_oh": i32, "stride_lb": i32, "stride_lh": i32,
        }
        cases += [CompileCase(_decode_reduce_kernel, reduce_signature, dict(HAS_OFFSET=has_offset, BLOCK_D=d))
                  for d in GPU_HEAD_BLOCKS for has_offset in (False, True)]
    return cases


COMPILE_CASES = _compile_cases()
