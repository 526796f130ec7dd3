"""Timing minilazy's `generate`, peak memory, and the machine's copy bandwidth.

Every run generates exactly `new_tokens` tokens (no stop tokens) for `batch`
copies of one request. The image features are computed once and reused by
every run (and by transformers), so prefill figures are the decoder's; the
vision tower is timed once on its own. A configuration measured several
times (the bench's rounds) is reported by its median, with every run's speed
kept, so the spread between runs is on record next to the ratios.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from minilazy.generate import Request, generate, synchronize
from minilazy.models.fused import unfused
from minilazy.sampler import SamplingParams

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class PeakMemory:
    """Peak memory of a block: CUDA's allocator peak on a GPU, the process's peak RSS (VmHWM) on CPU.

    On CPU the peak is reset by writing 5 to /proc/self/clear_refs (Linux); `bytes` is None where
    that is not possible, rather than a figure that covers earlier work.
    """

    def __init__(self, device: torch.device):
        self.device, self.bytes = device, None

    def __enter__(self):
        self.resettable = True
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                _CLEAR_REFS.write_text("5")
            except OSError:
                self.resettable = False
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        elif self.resettable:
            self.bytes = _vm_hwm()
        return False


def _vm_hwm() -> int | None:
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    return None


def copy_bandwidth(device: torch.device, megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second moved by a large tensor copy (read + write counted), best of `repeats`."""
    src = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page faults are not bandwidth
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / best


def decoder_weight_bytes(model) -> int:
    """Bytes of weights one decode step reads: every decoder layer, the final norm and the output head."""
    decoder = model.decoder
    tensors = [t for layer in decoder.layers for t in unfused(layer)]  # each layer: a dict of weights
    tensors += [decoder.norm, decoder.lm_head]
    return sum(t.numel() * t.element_size() for t in tensors)


def with_cached_features(model, features: torch.Tensor):
    """Make `model.image_features` return `features` (computed once) instead of running the vision tower."""
    model.image_features = lambda pixel_values, image_grid=None: features
    return model


def run_minilazy(model, request: Request, batch: int, new_tokens: int, runtime_factory) -> dict:
    """One `generate` call on `batch` copies of `request`; every figure of it."""
    params = SamplingParams(max_new_tokens=new_tokens)
    with PeakMemory(model.device) as peak:
        out = generate(model, [request] * batch, params, stop_ids=(), decoder_setup=runtime_factory())
        synchronize(model.device)
    s = out.stats
    return {
        "batch": batch,
        "prompt_tokens": s.prompt_tokens,
        "new_tokens": new_tokens,
        "prefill_seconds": s.prefill_seconds,
        "decode_seconds": s.decode_seconds,
        "decode_steps": s.decode_steps,
        "prefill_tokens_per_s": s.prompt_tokens / s.prefill_seconds,
        "decode_tokens_per_s": s.decode_steps * batch / s.decode_seconds if s.decode_steps else None,
        "kv_cache_bytes": s.kv_cache_bytes,
        "kv_bytes_per_sequence": s.kv_cache_bytes // batch,
        "cache_slots": s.cache_slots,
        "peak_memory_bytes": peak.bytes,
        "first_tokens": out.tokens[0][:8],
    }


def combine_repeats(samples: list[dict]) -> dict:
    """One record from repeated runs of one configuration: median times and speeds, the largest peak memory,
    and every run's speed (`*_runs`) for the spread."""
    combined = dict(samples[0])
    for key in ("prefill_seconds", "decode_seconds", "prefill_tokens_per_s", "decode_tokens_per_s"):
        values = [s[key] for s in samples if s[key] is not None]
        combined[key] = statistics.median(values) if values else None
        if key.endswith("per_s"):
            combined[f"{key}_runs"] = values
    peaks = [s["peak_memory_bytes"] for s in samples if s["peak_memory_bytes"] is not None]
    combined["peak_memory_bytes"] = max(peaks) if peaks else None
    combined["repeats"] = len(samples)
    return combined


def spread(values: list[float]) -> float | None:
    """(largest - smallest) / median of repeated measurements; None for fewer than two."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else None
