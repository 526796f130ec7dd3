"""A memo for the CPU path: values derived from the last few argument tensors its ops were called with.

Every layer of a forward step calls the same ops with the same step-level tensors (the step's
positions, slots and lengths, an image's key slots). What an op derives from those alone (RoPE
angles, index tensors, masks, host-side checks) is the same for every layer, and on the CPU a
decode step's time goes as much to the number of small ops as to their work. `Recent` computes
such a value once per step instead of once per layer. Each `CpuOps` (minilazy/kernels/cpu/ops.py) owns its
memos, so they go with the model that made them.

An entry holds the tensors themselves, so their ids cannot be reused, and their version counters,
so an in-place change misses. Inference tensors have no version counter: callers key on tensors
the runtime never changes in place, or add one that is new every step (a length) next to one that
grows in place (a table of text slots).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def version(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None or tensor.is_inference() else tensor._version


class Recent:
    """The last `size` values computed per `key` from a tuple of tensors (None allowed in the tuple)."""

    def __init__(self, size: int = 4):
        self.size, self.entries = size, {}

    def get(self, tensors: tuple, key: tuple, compute: Callable[[], T]) -> T:
        """The value for `tensors` under `key`: a remembered one, or `compute()` remembered."""
        key = (*key, torch.is_inference_mode_enabled())  # inference tensors must not reach autograd
        versions = tuple(version(t) for t in tensors)
        recent = self.entries.get(key, [])
        for held, held_versions, value in recent:
            if held_versions == versions and all(a is b for a, b in zip(held, tensors)):
                return value
        value = compute()
        self.entries[key] = [(tensors, versions, value)] + recent[: self.size - 1]
        return value
