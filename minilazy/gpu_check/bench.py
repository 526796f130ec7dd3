"""Part 4: speed and memory at SmolVLM-256M's shapes, the backend under test against the torch paths and
transformers, with the bench's own measuring code (minilazy/bench/).

The model is built on the spot with random weights (weights/build_bench_model.py over a random decoder
of SmolLM2-135M's shapes: values do not matter for speed). One request of 1,141 tokens (1,088 image
tokens from 17 tiles), 16 new tokens, batches 1, 16 and 64, bf16. Runs in order of importance, each
written to bench.json as it ends, so a run cut short by the time limit keeps every earlier figure:
the backend under test with full attention, lazy 0.5 and 0.8 (evenly spaced plans) and FastV; then
transformers (sdpa); then full attention on the `torch` and `reference` backends.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from minilazy.bench import measure, report, variants
from minilazy.commands.bench import DEFAULT_PROMPT, bench_image
from minilazy.generate import Request
from minilazy.gpu_check.setting import Setting, machine, write_json
from minilazy.model import Model
from minilazy.pipeline import Pipeline, load_tokenizer
from weights.build_bench_model import VisionShape, build_bench_model, random_text_model

SMOLLM2_135M = dict(  # SmolLM2-135M-Instruct's config.json, the decoder of SmolVLM-256M
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
    head_dim=64, hidden_act="silu", max_position_embeddings=8192, rms_norm_eps=1e-5, vocab_size=49152,
    rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, tie_word_embeddings=True,
    bos_token_id=1, eos_token_id=2, pad_token_id=2,
)
DRY_TEXT = dict(SMOLLM2_135M, hidden_size=32, intermediate_size=80, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, vocab_size=128)
DRY_VISION = VisionShape(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         patch_size=16, image_size=64, scale_factor=2)
BATCHES, DRY_BATCHES = [1, 16, 64], [1, 2]
NEW_TOKENS, DRY_NEW_TOKENS = 16, 3
RATIOS = (0.5, 0.8)
KV_BUDGET_BYTES = 8 * 10**9  # the capacity figure: sequences whose KV cache fits in 8 GB
RESERVE = 0.15  # share of the time limit left unstarted, for the summary


def build_model(tmp: Path, dry_run: bool) -> Path:
    from tests.runtime.tiny_models import tiny_tokenizer

    text = random_text_model(tmp / "text", DRY_TEXT if dry_run else SMOLLM2_135M, tiny_tokenizer(bos=False))
    return build_bench_model(tmp / "model", text, vision=DRY_VISION if dry_run else VisionShape())


def dtype_of(setting: Setting) -> torch.dtype:
    return torch.float32 if setting.dry_run else torch.bfloat16


def load(tmp: Path, setting: Setting) -> tuple[Path, Model, Request]:
    """The bench model built in `tmp`, loaded on the backend under test, and its one request (the bench's
    prompt and image); minilazy/gpu_check/serve.py serves the same."""
    model_dir = build_model(tmp, setting.dry_run)
    model = Model.from_pretrained(model_dir, dtype_of(setting), setting.subject, device=setting.device)
    request = Pipeline(model_dir, model, load_tokenizer(model_dir)).request(DEFAULT_PROMPT, bench_image(None))
    return model_dir, model, request


def plan_variants(layers: int) -> list[variants.Variant]:
    """Full attention, lazy 0.5 and 0.8, FastV (K = 2, R = 0.5)."""
    lazy = [variants.Variant(f"lazy-{r:g}", variants.even_plan(layers, r)) for r in RATIOS]
    return [variants.Variant("full"), *lazy, variants.Variant("fastv", fastv=variants.FASTV)]


class Runs:
    """Every run's record, kept in bench.json as it comes; stops starting runs near the time limit."""

    def __init__(self, out_dir: Path, data: dict, deadline: float):
        self.path, self.data, self.deadline = out_dir / "bench.json", data, deadline
        data["runs"] = []

    def measure(self, backend: str, variant: str, batch: int, run) -> dict | None:
        record = {"backend": backend, "variant": variant, "batch": batch}
        if time.perf_counter() > self.deadline:
            record["skipped"] = "time limit"
        else:
            try:
                record.update(run())
            except Exception as err:  # noqa: BLE001 - one failing run is reported, the others still run
                record["error"] = f"{type(err).__name__}: {err}"
        self.data["runs"].append(record)
        write_json(self.path, self.data)
        shown = {k: record.get(k) for k in ("prefill_tokens_per_s", "decode_tokens_per_s", "error", "skipped")}
        print(f"{backend} {variant} b{batch}: {shown}", file=sys.stderr, flush=True)
        return record if "prefill_tokens_per_s" in record else None


def bench_minilazy(runs: Runs, model: Model, request, backend: str, chosen, batches, new_tokens) -> dict:
    """{variant: {batch: record}} of one backend; each configuration warmed up (Triton compiles) first."""
    out = {}
    for variant in chosen:
        for b in batches:
            def run(v=variant, b=b):
                measure.run_minilazy(model, request, b, 2, v.runtime)  # warm-up
                return measure.run_minilazy(model, request, b, new_tokens, v.runtime)
            record = runs.measure(backend, variant.name, b, run)
            if record is not None:
                out.setdefault(variant.name, {})[b] = record
    return out


def run(out_dir: Path, setting: Setting) -> tuple[bool, list[str]]:
    start = time.perf_counter()
    device, dry = setting.device, setting.dry_run
    batches, new_tokens = (DRY_BATCHES, DRY_NEW_TOKENS) if dry else (BATCHES, NEW_TOKENS)
    dtype = dtype_of(setting)
    data = {"machine": machine(), "device": device.type, "dtype": str(dtype), "subject": setting.subject,
            "batches": batches, "new_tokens": new_tokens, "kv_budget_bytes": KV_BUDGET_BYTES}
    runs = Runs(out_dir, data, start + (1 - RESERVE) * setting.budget_s)
    rows = {}  # report's rows: {name: {batch: record}}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, model, request = load(Path(tmp), setting)
        features = model.image_features(request.pixel_values)
        measure.with_cached_features(model, features)
        layers, image_token = model.config.text.num_hidden_layers, model.config.image_token_id
        data["inputs"] = {"prompt_tokens": len(request.input_ids), "tiles": request.pixel_values.shape[0],
                          "image_tokens": features.shape[0], "layers": layers}
        data["copy_bandwidth_bytes_per_s"] = measure.copy_bandwidth(device, 16 if dry else 512)
        data["decode_weight_bytes"] = measure.decoder_weight_bytes(model)
        chosen = plan_variants(layers)
        data["variants"] = {v.name: v.describe() for v in chosen}
        rows.update(bench_minilazy(runs, model, request, setting.subject, chosen, batches, new_tokens))
        del model

        from minilazy.bench.hf import load_transformers_model, run_transformers

        hf = load_transformers_model(model_dir, dtype, device)
        data["transformers_attention"] = hf.config._attn_implementation
        for b in batches:
            record = runs.measure(report.HF, "full", b, lambda b=b: run_transformers(
                hf, request.input_ids, features, image_token, b, new_tokens))
            if record is not None:
                rows.setdefault(report.HF, {})[b] = record
        del hf
        for backend in ("torch", "reference"):
            if backend == setting.subject:
                continue
            other = measure.with_cached_features(Model.from_pretrained(model_dir, dtype, backend, device=device),
                                                 features)
            full = bench_minilazy(runs, other, request, backend, chosen[:1], batches, new_tokens)
            rows.update({f"full ({backend})": by_batch for by_batch in full.values()})
            del other
    complete = {name: by_batch for name, by_batch in rows.items() if set(by_batch) == set(batches)}
    lines = [f"   {setting.subject} on {device.type}, {dtype}, prompt {data['inputs']['prompt_tokens']} tokens, "
             f"{new_tokens} new tokens; rows: variants of {setting.subject}, transformers, other backends"]
    if report.FULL in complete:
        data["summary"] = report.summarise(complete, batches, KV_BUDGET_BYTES, data["copy_bandwidth_bytes_per_s"],
                                           data["decode_weight_bytes"])
        lines += ["   " + line for line in report.table(data["summary"], batches).splitlines()]
    problems = [r for r in data["runs"] if "error" in r or "skipped" in r]
    lines += [f"   {r['backend']} {r['variant']} b{r['batch']}: {r.get('error') or 'skipped: ' + r['skipped']}"[:160]
              for r in problems[:6]]
    data["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out_dir / "bench.json", data)
    return not problems, lines
