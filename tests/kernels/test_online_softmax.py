"""The online-softmax helpers, run block by block in a kernel of the test's own, against torch.

The attention kernels call these helpers (their compile cases compile them for sm_80/sm_90);
here they are checked alone under the interpreter: logits folded one key block at a time give
softmax(s) @ v and the log-sum-exp, and a row with no visible key gives 0 and -inf.
"""

import pytest
import torch
import triton
import triton.language as tl

from minilazy.kernels.online_softmax import LOG2_E, online_softmax_finish, online_softmax_step
from tests.helpers import assert_close


@triton.jit
def _fold_kernel(s_ptr, v_ptr, o_ptr, lse_ptr, n_keys, head_dim,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, n_keys, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        key_valid = offs_n < n_keys
        s = tl.load(s_ptr + rows[:, None] * n_keys + offs_n[None, :], mask=key_valid[None, :], other=float("-inf"))
        v = tl.load(v_ptr + offs_n[:, None] * head_dim + offs_d[None, :],
                    mask=key_valid[:, None] & (offs_d[None, :] < head_dim), other=0.0)
        m_i, l_i, acc = online_softmax_step(s * LOG2_E, v, m_i, l_i, acc)
    o, lse = online_softmax_finish(m_i, l_i, acc)
    tl.store(o_ptr + rows[:, None] * head_dim + offs_d[None, :], o, mask=offs_d[None, :] < head_dim)
    tl.store(lse_ptr + rows, lse)


@pytest.mark.parametrize("n_keys", [1, 37, 70])  # one block, a ragged last block, three blocks
def test_blocks_fold_into_softmax_and_log_sum_exp(n_keys):
    rows, head_dim = 16, 24
    s = torch.randn(rows, n_keys) * 3
    s[3, : n_keys // 2] = float("-inf")  # a row whose first block may be all masked
    s[5] = float("-inf")  # a row with no visible key
    v = torch.randn(n_keys, head_dim)
    o = torch.empty(rows, head_dim)
    lse = torch.empty(rows)
    _fold_kernel[(1,)](s, v, o, lse, n_keys, head_dim, BLOCK_M=rows, BLOCK_N=32, BLOCK_D=32)

    visible = torch.isfinite(s).any(1)
    expected_o = torch.where(visible[:, None], torch.softmax(s, 1) @ v, 0.0)  # [rows, d]; NaN rows -> 0
    expected_lse = torch.logsumexp(s, 1)  # -inf for the empty row
    assert_close(o, expected_o, 1e-5, 1e-5, what="o")
    assert_close(lse[visible], expected_lse[visible], 1e-5, 1e-5, what="lse")
    assert torch.equal(o[5], torch.zeros(head_dim)) and lse[5] == float("-inf")
