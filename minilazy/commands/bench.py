"""`python cli.py bench`: prefill and decode speed, KV bytes and peak memory of every attention variant,
against full attention and against transformers' `generate`, in one run on the same inputs."""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from minilazy.bench import measure, profile, report, variants
from minilazy.commands.options import add_model_arguments, command_line
from minilazy.config import write_json
from minilazy.errors import InputError
from minilazy.pipeline import DTYPES, Pipeline

DEFAULT_PROMPT = "Describe this image in detail."


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cli.py bench", description=__doc__)
    add_model_arguments(p)
    p.add_argument("--image", help="image file (default: a generated 1024x1024 picture; SmolVLM splits it into "
                                   "4x4 tiles + a global image, about 1,100 prompt tokens)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the question asked about the image")
    p.add_argument("--no-split", action="store_true", help="one image tile instead of the tile grid (short prompts)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16], metavar="B",
                   help="decode batch sizes: each runs B copies of the request together (default: 1 4 16)")
    p.add_argument("--new-tokens", type=int, default=32, metavar="N",
                   help="tokens generated per sequence (default: 32)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.8], metavar="F",
                   help="lazy-layer ratios (default: 0.5 0.8)")
    p.add_argument("--plans", choices=variants.PLAN_KINDS, default="calibrated",
                   help="calibrate the lazy plans on the bench image, or space active layers evenly")
    p.add_argument("--vtw-layer", type=int, metavar="K",
                   help="also run VTW: from layer K on, no image tokens at all (Visual Token Withdrawal)")
    p.add_argument("--budget-gb", type=float, default=2.0,
                   help="KV memory budget in GB for the capacity figure: how many sequences fit (default: 2)")
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="measure every variant and batch size N times, in N interleaved rounds (so a slow spell of the "
                        "machine hits all variants alike), and report the medians and the spread (default: 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-transformers", action="store_true", help="skip the transformers reference")
    p.add_argument("--profile", type=int, nargs="+", metavar="B",
                   help=f"also profile {profile.STEPS} decode steps of every variant at each batch size B (torch.profiler, "
                        "CPU only) and print where a step's time goes: weight matmuls, attention, and the small ops")
    p.add_argument("--out", default="out/bench", metavar="DIR", help="where bench.json and bench.png go")
    p.add_argument("--quick", action="store_true",
                   help="a short run: one image tile, 8 new tokens, evenly spaced plans, a smaller copy test")
    return p


def bench_image(path: str | None) -> Image.Image:
    """The given picture, or a deterministic 1024x1024 test pattern."""
    if path is not None:
        from minilazy.images import load_image

        return load_image(path)
    y, x = np.mgrid[0:1024, 0:1024]
    pixels = np.stack([x % 256, y % 256, (x // 4 + y // 4) % 256], axis=-1).astype(np.uint8)  # [H, W, 3]
    return Image.fromarray(pixels)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def check(args) -> None:
    if args.quick:
        args.no_split, args.new_tokens, args.plans = True, min(args.new_tokens, 8), "even"
    if args.new_tokens < 2:
        raise InputError(f"--new-tokens must be at least 2 (one prefill token and one decode step), got {args.new_tokens}")
    if args.repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {args.repeats}")
    if any(b < 1 for b in args.batch_sizes):
        raise InputError(f"--batch-sizes must be positive, got {args.batch_sizes}")
    if any(not 0 < r < 1 for r in args.ratios):
        raise InputError(f"--ratios must be in (0, 1), got {args.ratios}")
    if args.profile is not None and any(b < 1 for b in args.profile):
        raise InputError(f"--profile takes positive batch sizes, got {args.profile}")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)


def run(args) -> int:
    command = command_line("bench", args)  # as typed, before --quick fills in what it implies
    check(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    batches = sorted(set(args.batch_sizes))
    progress(f"loading {args.model} ({args.dtype})")
    pipeline = Pipeline.load(args.model, args.dtype, args.backend)
    model, device = pipeline.model, pipeline.model.device
    if args.profile is not None and device.type != "cpu":
        raise InputError("--profile measures CPU time and runs on the CPU only")
    if args.no_split and pipeline.processor is not None and hasattr(pipeline.processor, "do_image_splitting"):
        pipeline.processor = dataclasses.replace(pipeline.processor, do_image_splitting=False)
    image = bench_image(args.image) if model.vision is not None else None
    request = pipeline.request(args.prompt, image)
    n_image = sum(1 for t in request.input_ids if t == model.config.image_token_id)
    progress(f"prompt: {len(request.input_ids)} tokens ({n_image} image)")

    progress("copy bandwidth")
    bandwidth = measure.copy_bandwidth(device, 64 if args.quick else 512)
    features, vision_seconds = None, None
    if request.pixel_values is not None:
        start = time.perf_counter()
        features = model.image_features(request.pixel_values, request.image_grid)
        measure.synchronize(device)
        vision_seconds = time.perf_counter() - start
        progress(f"vision tower: {request.pixel_values.shape[0]} {'patches' if request.image_grid is not None else 'tiles'}"
                 f" in {vision_seconds:.1f} s")
        measure.with_cached_features(model, features)

    layers = model.config.text.num_hidden_layers
    divergence = None
    if args.plans == "calibrated" and image is None:
        progress("no image to calibrate on: lazy plans evenly spaced (--plans even)")
        args.plans = "even"
    if args.plans == "calibrated":
        from minilazy.lazy.calibrate import measure_divergence

        progress("calibrating lazy plans on the bench image")
        divergence = measure_divergence(pipeline, [(image, args.prompt)], max_new_tokens=4, progress=False)
    plans = variants.build_plans(args.plans, args.ratios, layers, divergence)
    chosen = variants.variants(plans, args.ratios, args.vtw_layer)

    progress("warm-up")  # first-call costs (allocator, lazy imports) stay out of the first variant's figures
    measure.run_minilazy(model, request, 1, 2, chosen[0].runtime)
    hf_model = None
    if not args.no_transformers:
        from minilazy.bench.hf import load_transformers_model, run_transformers

        progress("transformers: loading")
        hf_model = load_transformers_model(args.model, DTYPES[args.dtype], device, with_vision=model.vision is not None)
    names = [v.name for v in chosen] + ([report.HF] if hf_model is not None else [])
    samples = {name: {b: [] for b in batches} for name in names}  # [variant][batch] -> one record per round
    for round_index in range(args.repeats):
        label = f"round {round_index + 1}/{args.repeats}: " if args.repeats > 1 else ""
        for variant in chosen:
            for b in batches:
                progress(f"{label}{variant.name}, batch {b}")
                samples[variant.name][b].append(
                    measure.run_minilazy(model, request, b, args.new_tokens, variant.runtime))
        if hf_model is None:
            continue
        for b in batches:
            progress(f"{label}transformers, batch {b}")
            samples[report.HF][b].append(run_transformers(hf_model, request.input_ids, features,
                                                          model.config.image_token_id, b, args.new_tokens))
    del hf_model
    profiles = None
    if args.profile is not None:
        profiles = {b: {} for b in sorted(set(args.profile))}  # [batch][variant]
        for b, by_variant in profiles.items():
            for variant in chosen:
                progress(f"profiling {variant.name}, batch {b}")
                by_variant[variant.name] = profile.profile_decode(model, request, b, variant.runtime)
    runs = {name: {b: measure.combine_repeats(s) for b, s in by_batch.items()} for name, by_batch in samples.items()}
    # the lazy plans without FastV, for the ceiling of their decode speed-up (minilazy/bench/profile.py)
    lazy_shares = {v.name: len(v.plan.lazy_layers) / layers for v in chosen if v.plan and not v.fastv}
    ceilings = {b: {name: profile.lazy_ceiling(p["full"], share) for name, share in lazy_shares.items()}
                for b, p in (profiles or {}).items()}  # [batch][variant]

    weight_bytes = measure.decoder_weight_bytes(model)
    summary = report.summarise(runs, batches, int(args.budget_gb * 1e9), bandwidth, weight_bytes)
    data = {
        "command": command,
        "machine": {"platform": platform.platform(), "device": str(device), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "copy_bandwidth_bytes_per_s": bandwidth},
        "model": {"dir": str(args.model), "dtype": args.dtype, "backend": model.ops.backend, "layers": layers,
                  "decode_weight_bytes": weight_bytes},
        "inputs": {"prompt_tokens": len(request.input_ids), "image_tokens": n_image, "new_tokens": args.new_tokens,
                   "batch_sizes": batches, "split_image": not args.no_split,
                   "tiles": None if request.pixel_values is None else request.pixel_values.shape[0]},
        "vision_seconds": vision_seconds,
        "plans": {"kind": args.plans, "ratios": args.ratios},
        "repeats": args.repeats,
        "variants": {v.name: v.describe() for v in chosen},
        "kv_budget_bytes": int(args.budget_gb * 1e9),
        "runs": {name: {str(b): r for b, r in by_batch.items()} for name, by_batch in runs.items()},
        "summary": summary,
        "profile": None if profiles is None else {str(b): p for b, p in profiles.items()},
        "lazy_ceiling": None if profiles is None else {str(b): c for b, c in ceilings.items()},
    }
    write_json(out_dir / "bench.json", data)
    from minilazy.bench.plot import plot_bench

    plot_bench(summary, batches, args.budget_gb, out_dir / "bench.png")
    print(f"command: {command}")
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; prompt {len(request.input_ids)} tokens ({n_image} image); "
          f"{args.new_tokens} new tokens; plans: {args.plans}; "
          + (f"medians of {args.repeats} interleaved rounds" if args.repeats > 1 else "one round"))
    print(report.table(summary, batches))
    for b, by_variant in (profiles or {}).items():
        print(f"\nwhere a decode step's time goes at batch {b} (torch.profiler, self CPU ms per step; "
              "the profiler's cost per op inflates 'other'):")
        print(profile.table(by_variant))
        print("\n".join(profile.ceiling_lines(ceilings[b])))
    print(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.png'}")
    return 0
