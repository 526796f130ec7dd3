"""Flash attention of a block of queries over a key/value cache.

One contract (docs/kernels.md, "Attention over a cache") covers prefill,
continuation of a cached prefix, bidirectional vision attention and both passes
of a lazy layer: ragged batches (`q_start`, `q_len`, `kv_len` per sequence),
grouped-query heads, causal or not, and keys gathered through `key_slots`.

The kernel keeps no score matrix: each program owns one key/value head of one
sequence and a block of rows, a row being one (query, query head of that group)
pair, so K/V tiles are loaded once for the whole group. It walks the keys in
blocks with an online softmax in base 2 (exp2, scale folded with log2(e)) and
fp32 accumulators. The torch reference `attention_ref` computes the same with masks
and a softmax over the gathered keys; it is differentiable and handles rows with
no visible key. Its helpers serve the decode references as well.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minilazy.kernels.aot import CompileCase, pointer
from minilazy.kernels.backend import interpreting
from minilazy.kernels.online_softmax import LOG2_E, online_softmax_finish, online_softmax_step

GPU_HEAD_BLOCKS = (64, 128)  # the padded head sizes compiled for GPUs (see COMPILE_CASES)


def head_block(head_dim: int) -> int:
    """Padded head dimension. On a GPU one of GPU_HEAD_BLOCKS, so that every launch is a
    configuration the compile test covers; when interpreting, the next power of two (>= 16)."""
    limit = 256 if interpreting() else GPU_HEAD_BLOCKS[-1]
    if head_dim > limit:
        raise ValueError(f"head_dim {head_dim} is not supported; expected at most {limit}")
    if interpreting():
        return max(16, triton.next_power_of_2(head_dim))
    return next(b for b in GPU_HEAD_BLOCKS if head_dim <= b)


def gpu_attention_blocks(block_d: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) on a GPU: K/V tiles of at most 64 x 256 bytes fit sm_80 shared memory."""
    row_bytes = block_d * dtype.itemsize
    return 64, (64 if row_bytes <= 256 else 32), 4


def attention_blocks(block_d: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """Block sizes to launch with: big tiles when interpreting (few programs), GPU tiles else."""
    return (128, 128, 4) if interpreting() else gpu_attention_blocks(block_d, dtype)


@triton.jit(do_not_specialize=["has_slots", "k_compact"])  # one compiled variant for both values
def _attention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    q_start_ptr, q_len_ptr, kv_len_ptr, slots_ptr,
    Tq, head_dim, group_size, scale,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kn, stride_kg,
    stride_vb, stride_vn, stride_vg,
    stride_ob, stride_ot, stride_oh,
    stride_lb, stride_lt, stride_lh,
    stride_sb, has_slots, k_compact,
    CAUSAL: tl.constexpr, UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # has_slots / k_compact are runtime flags (0 or 1), not constexprs: one compiled kernel serves all key modes
    row_block = tl.program_id(0)
    b = tl.program_id(1)
    g = tl.program_id(2)
    b64 = b.to(tl.int64)
    q_start = tl.load(q_start_ptr + b)
    q_len = tl.load(q_len_ptr + b)
    kv_len = tl.load(kv_len_ptr + b)

    # row r of this (sequence, kv head) is query r // group_size, head g * group_size + r % group_size
    rows = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    query = rows // group_size
    head = g * group_size + rows % group_size
    row_valid = query < q_len
    query_slot = q_start + query
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < head_dim

    q_ptrs = q_ptr + b64 * stride_qb + query[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_valid[:, None] & d_valid[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    qk_scale = scale * LOG2_E  # logits in base 2

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_keys = kv_len
    if CAUSAL:
        # without slots key j sits at slot j, so keys past the last query's slot are never visible
        last_slot = q_start + tl.minimum(q_len, (row_block * BLOCK_M + BLOCK_M - 1) // group_size + 1) - 1
        n_keys = kv_len * has_slots + tl.minimum(kv_len, last_slot + 1) * (1 - has_slots)
    for start_n in range(0, n_keys, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_valid = offs_n < n_keys
        # flags are 0/1 integers: arithmetic selects the mode (a scalar bool cannot mask a load)
        gathered = tl.load(slots_ptr + b64 * stride_sb + offs_n, mask=offs_n < n_keys * has_slots, other=0)
        key_slot = gathered + offs_n * (1 - has_slots)
        k_rows = offs_n * k_compact + key_slot * (1 - k_compact)
        kv_mask = key_valid[:, None] & d_valid[None, :]
        k = tl.load(k_ptr + b64 * stride_kb + k_rows[:, None] * stride_kn + g * stride_kg + offs_d[None, :],
                    mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + b64 * stride_vb + key_slot[:, None] * stride_vn + g * stride_vg + offs_d[None, :],
                    mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale  # [BLOCK_M, BLOCK_N]
        visible = row_valid[:, None] & key_valid[None, :]
        if CAUSAL:
            visible = visible & (key_slot[None, :] <= query_slot[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc)

    o, lse = online_softmax_finish(m_i, l_i, acc)
    in_bounds = query < Tq
    o_ptrs = o_ptr + b64 * stride_ob + query[:, None] * stride_ot + head[:, None] * stride_oh + offs_d[None, :]
    tl.store(o_ptrs, o.to(o_ptr.dtype.element_ty), mask=in_bounds[:, None] & d_valid[None, :])
    tl.store(lse_ptr + b64 * stride_lb + query * stride_lt + head * stride_lh, lse, mask=in_bounds)


def check_lengths(name: str, t: torch.Tensor, batch: int) -> None:
    """A per-sequence int32 vector [B] on the device of the caches."""
    if t.dtype != torch.int32 or t.shape != (batch,):
        raise ValueError(f"{name} must be an int32 tensor of shape [{batch}]; got {t.dtype} {tuple(t.shape)}")


def check_caches(k_cache, v_cache, n_heads, head_dim, key_slots, batch):
    """Shapes shared by attention and decode_attention; returns the kv head count G."""
    if k_cache.dim() != 4 or v_cache.dim() != 4:
        raise ValueError(f"k_cache and v_cache must be [B, S, G, d]; got {tuple(k_cache.shape)}, "
                         f"{tuple(v_cache.shape)}")
    if k_cache.shape[0] != batch or v_cache.shape[0] != batch:
        raise ValueError(f"caches hold {k_cache.shape[0]}/{v_cache.shape[0]} sequences; expected {batch}")
    n_kv = k_cache.shape[2]
    if v_cache.shape[2] != n_kv or k_cache.shape[3] != head_dim or v_cache.shape[3] != head_dim:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} disagree "
                         f"with head_dim {head_dim}")
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads are not a multiple of {n_kv} key/value heads")
    slots_ok = key_slots is None or (key_slots.dtype == torch.int32 and key_slots.dim() == 2
                                     and key_slots.shape[0] == batch)
    if not slots_ok:
        raise ValueError(f"key_slots must be int32 [{batch}, N]; got {key_slots.dtype} {tuple(key_slots.shape)}")
    for t in (k_cache, v_cache):
        if t.stride(-1) != 1:
            raise ValueError("the last dimension of k_cache and v_cache must be contiguous")
    return n_kv


def attention(q, k_cache, v_cache, q_start, q_len, kv_len, *, scale, causal, key_slots=None, k_compact=False):
    """Flash attention over a cache; returns (o [B, Tq, H, d] in q's dtype, lse [B, Tq, H] fp32)."""
    if q.dim() != 4 or q.stride(-1) != 1:
        raise ValueError(f"q must be [B, Tq, H, d] with a contiguous last dimension; got {tuple(q.shape)}")
    batch, n_queries, n_heads, head_dim = q.shape
    n_kv = check_caches(k_cache, v_cache, n_heads, head_dim, key_slots, batch)
    if k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"q, k_cache, v_cache must share a dtype; got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    for name, t in (("q_start", q_start), ("q_len", q_len), ("kv_len", kv_len)):
        check_lengths(name, t, batch)
    if k_compact and key_slots is None:
        raise ValueError("k_compact=True needs key_slots")
    group_size = n_heads // n_kv
    o = torch.empty_like(q)
    lse = torch.empty(batch, n_queries, n_heads, device=q.device, dtype=torch.float32)
    block_d = head_block(head_dim)
    block_m, block_n, num_warps = attention_blocks(block_d, q.dtype)
    slots = key_slots if key_slots is not None else kv_len  # a placeholder pointer when unused
    grid = (triton.cdiv(n_queries * group_size, block_m), batch, n_kv)
    _attention_kernel[grid](
        q, k_cache, v_cache, o, lse, q_start, q_len, kv_len, slots,
        n_queries, head_dim, group_size, float(scale),
        *q.stride()[:3], *k_cache.stride()[:3], *v_cache.stride()[:3], *o.stride()[:3], *lse.stride(),
        slots.stride(0), int(key_slots is not None), int(bool(k_compact)),
        CAUSAL=bool(causal), UPCAST=interpreting() and q.dtype == torch.bfloat16,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps,
    )
    return o, lse


def listed_keys(k_cache, v_cache, kv_len, key_slots=None, k_compact=False):
    """Every sequence's key list, padded to the longest (at least one key).

    Returns k, v `[B, N, G, d]` fp32 (zero past kv_len[b]), the cache slot of each key `[B, N]`
    int64 and whether it is one of the first kv_len[b] keys, `listed [B, N]`.
    """
    n = max(1, int(kv_len.max()) if len(kv_len) else 0)
    index = torch.arange(n, device=kv_len.device)  # [N]
    listed = index[None, :] < kv_len[:, None]  # [B, N]
    if key_slots is None:
        slot = index.expand(len(kv_len), n)  # key j is at slot j
    else:
        slot = torch.where(listed, key_slots[:, :n], 0).long()  # entries past kv_len may be anything
    k_row = index.expand_as(slot) if k_compact else slot
    batch = torch.arange(len(kv_len), device=kv_len.device)[:, None]  # [B, 1]
    keep = listed[:, :, None, None]  # [B, N, 1, 1]
    k = torch.where(keep, k_cache[batch, k_row].float(), 0.0)  # [B, N, G, d]
    v = torch.where(keep, v_cache[batch, slot].float(), 0.0)  # [B, N, G, d]
    return k, v, slot, listed


def attention_logits(q, k, scale):
    """`scale * q.k` of q `[B, T, H, d]` and k `[B, N, G, d]`: `[B, H, T, N]` fp32 (head h reads kv head h // (H / G))."""
    k = k.float().repeat_interleave(q.shape[2] // k.shape[2], dim=2)  # [B, N, H, d]
    return torch.einsum("bthd,bnhd->bhtn", q.float(), k) * scale


def attend(logits, visible, v):
    """Softmax of logits `[B, H, T, N]` over the keys where `visible [B, T, N]`, times the values v `[B, N, G, d]`.

    Returns o `[B, T, H, d]` and lse `[B, T, H]`, fp32. A row with no visible key gets o = 0 and
    lse = -inf; the peak subtracted is only a stabiliser, so gradients stay finite on such rows.
    """
    visible = visible[:, None]  # [B, 1, T, N]
    logits = logits.masked_fill(~visible, float("-inf"))
    has_key = visible.any(-1, keepdim=True)  # [B, 1, T, 1]
    peak = torch.where(has_key, logits.detach().amax(-1, keepdim=True), 0.0)  # [B, H, T, 1]
    weights = torch.exp(logits - peak)  # [B, H, T, N], 0 where not visible
    total = torch.where(has_key, weights.sum(-1, keepdim=True), 1.0)  # [B, H, T, 1]
    lse = torch.where(has_key, peak + total.log(), float("-inf"))  # [B, H, T, 1]
    v = v.float().repeat_interleave(logits.shape[1] // v.shape[2], dim=2)  # [B, N, H, d]
    o = torch.einsum("bhtn,bnhd->bthd", weights / total, v)  # [B, T, H, d]
    return o, lse[..., 0].transpose(1, 2)  # lse [B, H, T] -> [B, T, H]


def attention_ref(q, k_cache, v_cache, q_start, q_len, kv_len, *, scale, causal, key_slots=None, k_compact=False):
    """Torch reference of `attention`: the contract's masks over the gathered keys and a softmax, fp32, differentiable."""
    k, v, slot, listed = listed_keys(k_cache, v_cache, kv_len, key_slots, k_compact)  # [B, N, G, d], [B, N]
    query = torch.arange(q.shape[1], device=q.device)  # [T]
    visible = (query[None, :, None] < q_len[:, None, None]) & listed[:, None, :]  # [B, T, N]
    if causal:
        query_slot = q_start[:, None].long() + query[None, :]  # [B, T]
        visible = visible & (slot[:, None, :] <= query_slot[:, :, None])  # [B, T, N]
    o, lse = attend(attention_logits(q, k, scale), visible, v)
    return o.to(q.dtype), lse


def _compile_cases():
    cases = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        ptr = pointer(dtype)
        signature = {
            "q_ptr": ptr, "k_ptr": ptr, "v_ptr": ptr, "o_ptr": ptr, "lse_ptr": "*fp32",
            "q_start_ptr": "*i32", "q_len_ptr": "*i32", "kv_len_ptr": "*i32", "slots_ptr": "*i32",
            "Tq": "i32", "head_dim": "i32", "group_size": "i32", "scale": "fp32",
            **{f"stride_{t}{s}": "i32"
               for t, dims in (("q", "bth"), ("k", "bng"), ("v", "bng"), ("o", "bth"), ("l", "bth")) for s in dims},
            "stride_sb": "i32", "has_slots": "i32", "k_compact": "i32",
        }
        for block_d in GPU_HEAD_BLOCKS:
            block_m, block_n, num_warps = gpu_attention_blocks(block_d, dtype)
            for causal in (False, True):
                cases.append(CompileCase(_attention_kernel, signature, dict(
                    CAUSAL=causal, UPCAST=False, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d),
                    num_warps=num_warps))
    return cases


COMPILE_CASES = _compile_cases()
