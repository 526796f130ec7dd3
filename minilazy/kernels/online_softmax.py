"""The online softmax that both attention kernels run over their key blocks (device helpers, no kernel).

Attention walks the keys block by block and keeps, per query row, the running maximum `m`
of the base-2 logits, the running sum `l` of `exp2(s - m)` and the running weighted sum `acc`
of the values; each new block rescales both by `exp2(m_old - m_new)`. Rows that have seen no
visible key keep `m = -inf`, `l = 0` and finish with output 0 and log-sum-exp -inf.

Reference: Dao et al., FlashAttention-2 (2023), Algorithm 1.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2_E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * LOG2_E)
LN_2 = tl.constexpr(0.6931471805599453)  # ln(x) = log2(x) * LN_2


@triton.jit
def online_softmax_step(s, v, m_i, l_i, acc):
    """Fold base-2 logits `s [M, N]` (-inf where not visible) and values `v [N, D]` into (m, l, acc)."""
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    # rows with nothing visible yet keep m = -inf; subtract 0 instead so exp2 gives 0, not NaN
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    return m_new, l_i, acc


@triton.jit
def online_softmax_finish(m_i, l_i, acc):
    """The normalised output `[M, D]` and the natural-log log-sum-exp `[M]` of the folded blocks."""
    has_key = l_i > 0.0
    o = acc / tl.where(has_key, l_i, 1.0)[:, None]
    lse = tl.where(has_key, (m_i + tl.log2(tl.where(has_key, l_i, 1.0))) * LN_2, float("-inf"))
    return o, lse
