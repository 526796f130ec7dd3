"""How a demo training stage runs: its clock, its learning-rate schedule and its precision.

A stage stops at a step count or a time budget, whichever comes first; the schedule follows the
larger of the two progress fractions, so a run cut short by its budget still ends annealed.
"""

from __future__ import annotations

import math
import time

import torch


class Clock:
    """Progress of a stage in [0, 1]: the larger of steps done and time used."""

    def __init__(self, steps: int, minutes: float):
        self.steps, self.seconds, self.start = steps, minutes * 60, time.time()

    def progress(self, step: int) -> float:
        return min(1.0, max(step / self.steps, (time.time() - self.start) / self.seconds))


def lr_factor(progress: float, step: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    return min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def resolve_precision(precision: str) -> str:
    """`auto` is bf16 where oneDNN multiplies bf16 matrices natively on this CPU (AVX512-BF16 or AMX),
    else fp32: without those units bf16 products fall back to a reference loop, far slower than fp32."""
    if precision != "auto":
        return precision
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast(precision: str):
    """The context the forward passes run in: bf16 autocast, or plain fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
