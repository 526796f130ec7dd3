"""Part 3: the serving engine (minilazy/serve/) on the backend under test, driven directly (no HTTP).

Exactness: the demo model and the five requests of tests/serve/ (one text-only) through an `Engine` of
three rows, under full attention, a lazy plan, and lazy layers with FastV (tests/serve/test_lazy_engine.py's
settings). They join at different steps, beside different neighbours, and prompts are prefilled in chunks
between decode steps; each request must get the greedy tokens `generate()` gives it alone with the same
runtime and chunk, and be priced at the bytes of its cache there.

Throughput: the bench model (bench.py), N copies of the bench's request submitted at once to an engine
whose KV budget holds FULL_FIT of them at full attention's price, under full attention, lazy 0.8 and
lazy 0.8 + FastV (evenly spaced plans). Per variant, from the engine's own stats: the most sequences that
ran at once, the tokens generated, and over the wall time of the whole run, output tokens per second.
Each must run every request to its length, and each lazy variant more sequences at once than full
attention. Each engine is warmed up first on two requests (Triton compiles outside the timing).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from minilazy.bench import variants
from minilazy.generate import Request, generate
from minilazy.gpu_check import bench
from minilazy.gpu_check.setting import Setting, machine, write_json
from minilazy.model import Model
from minilazy.pipeline import Pipeline
from minilazy.sampler import SamplingParams
from minilazy.serve import Engine

MAX_NEW, DRY_MAX_NEW = 12, 4  # greedy tokens per request of the exactness runs
CHUNK = 32  # prefill chunk of the exactness runs: the demo prompts (about 90 tokens) take three
EXACT_ROWS = 3
LARGE_BUDGET = 1 << 30  # KV bytes: more than all the exactness runs' requests need, or one bench request
REQUESTS, DRY_REQUESTS = 32, 8  # throughput: requests submitted at once
FULL_FIT, DRY_FULL_FIT = 8, 4  # requests the throughput budget holds at full attention
NEW_TOKENS, DRY_NEW_TOKENS = 16, 3
RESERVE = 0.15  # share of the time limit in which no new throughput run starts


def exactness(setting: Setting, data: dict) -> bool:
    """Every request's tokens and price in the engine against `generate()` alone, per runtime."""
    from tests.serve.conftest import MODEL_DIR, QUESTIONS
    from tests.serve.test_lazy_engine import VARIANTS

    pipeline = Pipeline.load(MODEL_DIR, backend=setting.subject)
    requests = [pipeline.request(question, image) for image, question in QUESTIONS]
    params = SamplingParams(DRY_MAX_NEW if setting.dry_run else MAX_NEW)
    runtimes = {"full": lambda: None, "lazy": VARIANTS["lazy"], "lazy + fastv": VARIANTS["lazy + fastv"]}
    results = data["exactness"] = {"model": "demo", "dtype": "fp32", "max_new_tokens": params.max_new_tokens,
                                   "prefill_chunk": CHUNK, "rows": EXACT_ROWS, "variants": {}}
    for name, make in runtimes.items():
        expected = [generate(pipeline.model, [r], params, stop_ids=pipeline.stop_ids, prefill_chunk=CHUNK,
                             decoder_setup=make()) for r in requests]
        engine = Engine(pipeline.model, LARGE_BUDGET, EXACT_ROWS, stop_ids=pipeline.stop_ids, prefill_chunk=CHUNK,
                        runtime=make())
        seqs = []
        for request in requests:  # each joins two steps after the one before it
            seqs.append(engine.submit(request, params))
            engine.step()
            engine.step()
        engine.run_until_idle()
        stats = engine.stats()
        record = {"tokens_equal": [s.tokens for s in seqs] == [e.tokens[0] for e in expected],
                  "kv_bytes_equal": [s.kv_bytes for s in seqs] == [e.stats.kv_cache_bytes for e in expected],
                  "running_peak": stats.running_peak, "kv_bytes_used_after": stats.kv_bytes_used,
                  "tokens": [s.tokens for s in seqs], "expected_tokens": [e.tokens[0] for e in expected]}
        record["passed"] = (record["tokens_equal"] and record["kv_bytes_equal"] and stats.running_peak >= 2
                            and stats.kv_bytes_used == 0)
        results["variants"][name] = record
        print(f"exactness {name}: {record}", file=sys.stderr, flush=True)
    return all(r["passed"] for r in results["variants"].values())


def throughput_variants(layers: int) -> list[variants.Variant]:
    """Full attention, lazy 0.8, lazy 0.8 + FastV (K = 2, R = 0.5)."""
    return [variants.Variant("full"), variants.Variant("lazy-0.8", variants.even_plan(layers, 0.8)),
            variants.Variant("lazy-0.8+fastv", variants.even_plan(layers, 0.8, variants.FASTV.layer),
                             fastv=variants.FASTV)]


def serve_all(model: Model, request: Request, variant: variants.Variant, budget: int, n: int, new_tokens: int) -> dict:
    """`n` copies of `request` submitted at once to a fresh engine; its stats after it has served them all."""
    params = SamplingParams(new_tokens)
    warm = Engine(model, budget, max_batch=2, runtime=variant.runtime())
    for _ in range(2):
        warm.submit(request, SamplingParams(2))
    warm.run_until_idle()
    del warm
    engine = Engine(model, budget, max_batch=n, max_queue=n, runtime=variant.runtime(),
                    max_len=len(request.input_ids) + new_tokens)  # rows as long as a request, not the context
    seqs = [engine.submit(request, params) for _ in range(n)]
    start = time.perf_counter()
    engine.run_until_idle()  # every step ends by sampling on the CPU: the GPU is done when it returns
    seconds = time.perf_counter() - start
    stats = engine.stats()
    record = {"running_peak": stats.running_peak, "output_tokens": stats.tokens_generated,
              "seconds": round(seconds, 3), "output_tokens_per_s": round(stats.tokens_generated / seconds, 1),
              "kv_bytes_per_request": seqs[0].kv_bytes, "finished": stats.finished,
              "kv_storage_bytes": stats.kv_storage_bytes}
    record["all_served"] = stats.finished == {"length": n} and all(len(s.tokens) == new_tokens for s in seqs)
    return record


def throughput(setting: Setting, data: dict, deadline: float, path: Path) -> bool:
    """Full attention and the lazy variants on one KV budget; a lazy variant must run more sequences at once."""
    dry = setting.dry_run
    n, fit = (DRY_REQUESTS, DRY_FULL_FIT) if dry else (REQUESTS, FULL_FIT)
    new_tokens = DRY_NEW_TOKENS if dry else NEW_TOKENS
    with tempfile.TemporaryDirectory() as tmp:
        _, model, request = bench.load(Path(tmp), setting)
        need = Engine(model, LARGE_BUDGET, max_batch=1).check(request, SamplingParams(new_tokens))
        budget = fit * need + need // 2  # `fit` requests at full attention, not one more
        results = data["throughput"] = {
            "model": "bench", "dtype": str(model.dtype), "prompt_tokens": len(request.input_ids),
            "new_tokens": new_tokens, "requests": n, "kv_budget_bytes": budget, "full_attention_fit": fit,
            "variants": {}}
        for variant in throughput_variants(model.config.text.num_hidden_layers):
            if time.perf_counter() > deadline:
                record = {"skipped": "time limit", "passed": False}
            else:
                record = serve_all(model, request, variant, budget, n, new_tokens)
                peak = record["running_peak"]  # full attention: exactly `fit`; a lazy variant: more
                record["passed"] = record["all_served"] and (peak > fit if variant.plan else peak == fit)
            results["variants"][variant.name] = {"runtime": variant.describe(), **record}
            print(f"throughput {variant.name}: {record}", file=sys.stderr, flush=True)
            write_json(path, data)
    return all(r["passed"] for r in results["variants"].values())


def run(out_dir: Path, setting: Setting) -> tuple[bool, list[str]]:
    start = time.perf_counter()
    path = out_dir / "serve.json"
    data = {"machine": machine(), "device": setting.device.type, "subject": setting.subject}
    exact_ok = exactness(setting, data)
    write_json(path, data)
    fast_ok = throughput(setting, data, start + (1 - RESERVE) * setting.budget_s, path)
    data["passed"], data["seconds"] = exact_ok and fast_ok, round(time.perf_counter() - start, 1)
    write_json(path, data)
    exact, fast = data["exactness"], data["throughput"]
    lines = [f"   {setting.subject} on {setting.device.type}: engine against generate() alone, demo model, "
             f"{exact['max_new_tokens']} greedy tokens, prefill chunk {CHUNK}"]
    lines += [f"   {name:<15} tokens {'equal' if r['tokens_equal'] else 'DIFFER'}, bytes "
              f"{'equal' if r['kv_bytes_equal'] else 'DIFFER'}, peak {r['running_peak']} running"
              for name, r in exact["variants"].items()]
    lines.append(f"   throughput: {fast['requests']} requests of {fast['prompt_tokens']} + {fast['new_tokens']} "
                 f"tokens, {fast['dtype']}, a KV budget of {fast['kv_budget_bytes'] / 2**20:.1f} MiB "
                 f"({fast['full_attention_fit']} at full attention)")
    lines += [f"   {name:<15} " + (f"peak {r['running_peak']:3d} running, {r['output_tokens_per_s']:9.1f} "
                                   f"output tok/s, {r['seconds']:7.2f} s" if "skipped" not in r else "skipped")
              + ("" if r["passed"] else "; FAILED") for name, r in fast["variants"].items()]
    return data["passed"], lines
