"""`python cli.py eval`: accuracy of the demo model on held-out questions, optionally lazy and/or with FastV."""

from __future__ import annotations

import argparse

from minilazy.commands.options import add_lazy_arguments, add_model_arguments, lazy_runtime
from minilazy.config import write_json
from minilazy.errors import InputError


def add_eval_arguments(p: argparse.ArgumentParser, n_default: int | None, n_help: str | None = None) -> None:
    """Flags shared by `eval` and `study`: which questions, how they are batched, how long the answers.
    `--n` is required unless it has a default, or `n_help` (the command then gives it its meaning when absent)."""
    p.add_argument("--n", type=int, default=n_default, required=n_default is None and n_help is None, metavar="N",
                   help=n_help or "number of held-out questions (families in rotation)"
                   + (f"; default {n_default}" if n_default else ""))
    p.add_argument("--seed-offset", type=int, default=0, metavar="S",
                   help="start at this held-out scene (0: the first scene after the training seeds)")
    p.add_argument("--batch-size", type=int, default=50, metavar="B", help="questions generated together")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="longest answer generated")
    p.add_argument("--calib", type=int, default=64, metavar="N",
                   help="training scenes that lazy plans are calibrated on (default 64)")


def check_eval_arguments(args) -> None:
    for flag, value in (("--n", args.n), ("--batch-size", args.batch_size), ("--max-new-tokens", args.max_new_tokens),
                        ("--calib", args.calib)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be a positive number, got {value}")
    if args.seed_offset < 0:
        raise InputError(f"--seed-offset must be 0 or more, got {args.seed_offset}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cli.py eval",
                                description="Score the demo model on held-out generated scenes: accuracy per "
                                "question family, overall, object-level F1 of descriptions, and the KV cache used.")
    add_model_arguments(p)
    add_eval_arguments(p, n_default=None)
    p.add_argument("--json", metavar="OUT.json", help="also write the figures (and the settings) to this file")
    add_lazy_arguments(p)
    return p


def kv_lines(result: dict) -> str:
    return (f"KV cache: {result['kv_cache_bytes']:,} bytes (full attention: {result['kv_cache_bytes_full']:,}), "
            f"saved {result['kv_saved']:.1%}")


def run(args) -> int:
    from minilazy.demo.evaluate import evaluate, format_table
    from minilazy.pipeline import Pipeline
    from minilazy.study import calibration_samples

    check_eval_arguments(args)
    pipeline = Pipeline.load(args.model, args.dtype, args.backend)
    calibrates = args.lazy_ratio is not None or args.vtw_layer == "auto"
    samples = calibration_samples(args.calib) if calibrates else []
    runtime = lazy_runtime(args, pipeline, samples)
    result = evaluate(args.model, args.n, args.seed_offset, args.batch_size, args.max_new_tokens,
                      backend=args.backend, dtype=args.dtype, decoder_setup=runtime, pipeline=pipeline,
                      progress=True)
    plan = runtime.plan if runtime else None
    result["settings"] = {
        "lazy_plan": None if plan is None else plan.to_dict(),
        "fast_decode": not args.no_fast_decode, "calib": args.calib if calibrates else None,
        "fastv": None if args.fastv_layer is None else {"layer": args.fastv_layer, "ratio": args.fastv_ratio},
        "vtw_layer": None if args.vtw_layer is None else runtime.fastv.layer,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "backend": args.backend,
        "dtype": args.dtype,
    }
    print(format_table(result))
    print(kv_lines(result))
    if plan is not None:
        print(f"lazy layers: {len(plan.lazy_layers)} of {plan.num_layers} (scope {plan.scope}): {plan.inheritance()}")
    if args.vtw_layer is not None:
        print(f"VTW: no image tokens from layer {runtime.fastv.layer} on")
    print(f"{result['seconds']:.1f} s")
    if args.json:
        write_json(args.json, result)
        print(f"written to {args.json}")
    return 0
