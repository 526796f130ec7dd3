"""The CPU path's per-step memo: a value is reused only for the very same, unchanged tensors."""

import torch

from minilazy.kernels.cpu.memo import Recent


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return calls, compute


def test_same_tensors_reuse_the_value():
    memo, slots, lengths = Recent(), torch.arange(6).view(2, 3), torch.tensor([3, 2])
    calls, compute = counting("layout")
    assert memo.get((slots, lengths), ("k",), compute) == "layout"
    assert memo.get((slots, lengths), ("k",), compute) == "layout"
    assert len(calls) == 1


def test_other_tensor_key_or_in_place_change_recomputes():
    memo, slots = Recent(), torch.arange(6)
    calls, compute = counting(0)
    memo.get((slots,), ("k",), compute)
    memo.get((slots.clone(),), ("k",), compute)  # equal values, another tensor
    memo.get((slots,), ("other key",), compute)
    slots.add_(1)  # a version counter moves
    memo.get((slots,), ("k",), compute)
    assert len(calls) == 4


def test_none_is_a_key_and_old_entries_are_dropped():
    memo = Recent(size=2)
    tensors = [torch.zeros(1) for _ in range(3)]
    calls, compute = counting(1)
    for t in tensors:
        memo.get((None, t), (), compute)
    memo.get((None, tensors[2]), (), compute)  # still held
    memo.get((None, tensors[0]), (), compute)  # pushed out by the two after it
    assert len(calls) == 4
