"""The `--stats` report: timings, throughput, KV-cache bytes and what lazy layers saved."""

from __future__ import annotations

import sys


def print_stats(stats, pipeline, request, runtime, file=None) -> None:
    file = file or sys.stderr  # looked up per call: the stream may be replaced after import

    def line(label, value):
        print(f"{label:<28}{value}", file=file)

    prefill_tps = stats.prompt_tokens / stats.prefill_seconds if stats.prefill_seconds else float("nan")
    decode_tps = stats.decode_steps / stats.decode_seconds if stats.decode_seconds else float("nan")
    print("--- stats ---", file=file)
    line("backend / dtype", f"{pipeline.model.ops.backend} / {str(pipeline.model.dtype).removeprefix('torch.')}")
    line("prompt tokens", f"{stats.prompt_tokens} ({sum(1 for t in request.input_ids if t == pipeline.config.image_token_id)} image)")
    line("prefill", f"{stats.prefill_seconds * 1000:.1f} ms ({prefill_tps:.1f} tokens/s)")
    line("decode", f"{stats.decode_steps} steps in {stats.decode_seconds * 1000:.1f} ms ({decode_tps:.1f} tokens/s)")
    line("KV cache", f"{stats.kv_cache_bytes:,} bytes")
    if runtime is None:
        return
    plan = runtime.plan
    if plan is not None:
        line("lazy layers", f"{len(plan.lazy_layers)} of {plan.num_layers} (scope {plan.scope}, "
                            f"Q Cache depth {plan.depth})")
        line("  anchors", plan.inheritance())
    if runtime.fastv is not None:
        fastv, kept = runtime.fastv, runtime.pruning.kept_slots
        if kept is None:  # K is the number of layers: no layer sees the withdrawn sequence
            line(type(fastv).__name__, f"layer {fastv.layer} = the number of layers: nothing withdrawn")
        else:
            setting = f"ratio {fastv.ratio}" if fastv.scores_tokens else "every image token withdrawn"
            line(type(fastv).__name__, f"layer {fastv.layer}, {setting}: {int((kept >= 0).sum())} of "
                                       f"{stats.prompt_tokens} prompt tokens kept from layer {fastv.layer} on")
    line("KV cache, full attention", f"{stats.full_attention_kv_bytes:,} bytes")
    line("KV cache saved", f"{stats.kv_saved:.1%}")
    rows = runtime.projection_rows()
    total = (stats.prompt_tokens + stats.decode_steps * stats.batch) * pipeline.config.text.num_hidden_layers
    line("Wq matmul rows skipped", f"{rows['wq_skipped']:,} of {total:,} (tokens x layers)")
    line("Wk matmul rows skipped", f"{rows['wk_skipped']:,} of {total:,} (tokens x layers)")
    q_cache = runtime.state.q_cache
    line("Q Cache", f"{q_cache.numel() * q_cache.element_size():,} bytes, shape {list(q_cache.shape)}")
