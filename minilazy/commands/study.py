"""`python cli.py study`: KV cache saved versus accuracy for Lazy Attention, FastV, both, and VTW, in one command."""

from __future__ import annotations

import argparse

from minilazy.commands.evaluate import add_eval_arguments, check_eval_arguments
from minilazy.commands.options import (
    EXACT_IMAGE_ROWS, LAZY_METHOD_HELP, MASS_CORRECTION, add_model_arguments, command_line,
)
from minilazy.lazy.calibrate import METHODS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cli.py study",
                                description="Calibrate once on training scenes, then answer the same held-out "
                                "questions with full attention, Lazy Attention at lazy ratios 0.25-0.9 (visual "
                                "scope; scope 'all' at 0.25 and 0.5 as an ablation), FastV (K=2, R=0.5 and 0.75) "
                                "lazy 0.5 + FastV and VTW (from layers L/2, 3L/4 and L-1 on); write study.json, "
                                "study.md, study.png and heatmap.png (the Jensen-Shannon divergence with the anchors "
                                "of the lazy 0.5 plan).")
    add_model_arguments(p)
    add_eval_arguments(p, n_default=1000)
    p.add_argument("--lazy-method", choices=METHODS, default="js", help=LAZY_METHOD_HELP)
    p.add_argument("--mass-correction", action=argparse.BooleanOptionalAction, default=MASS_CORRECTION,
                   help=f"lazy visual layers with their per-head mass offsets (default: {MASS_CORRECTION})")
    p.add_argument("--exact-image-rows", action=argparse.BooleanOptionalAction, default=EXACT_IMAGE_ROWS,
                   help=f"lazy visual layers give image tokens their own attention in prefill (default: "
                        f"{EXACT_IMAGE_ROWS})")
    p.add_argument("--per-layer", action="store_true",
                   help="instead of the sweep, make each layer lazy alone (inheriting from the layer below) and "
                        "write per_layer.json and per_layer.png: which layers carry the cost (L evaluations)")
    p.add_argument("--out", default="study", metavar="DIR", help="output directory (default: ./study)")
    return p


def run(args) -> int:
    from minilazy.pipeline import Pipeline
    from minilazy.study import markdown_table, run_study, write_report

    check_eval_arguments(args)
    pipeline = Pipeline.load(args.model, args.dtype, args.backend)
    if args.per_layer:
        from minilazy.study.per_layer import run_per_layer, write_per_layer

        result = run_per_layer(pipeline, args.model, args.n, args.calib, args.seed_offset, args.batch_size,
                               args.max_new_tokens, args.mass_correction, args.exact_image_rows)
        result["command"] = command_line("study", args)
        for row in result["layers"]:
            print(f"layer {row['layer']:>2} lazy: {row['accuracy']:.1%} overall, description F1 "
                  f"{row['describe_f1']:.1%} (full attention {result['full']['accuracy']:.1%})")
        print("written: " + ", ".join(str(p) for p in write_per_layer(result, args.out)))
        print(f"reproduce with: {result['command']}")
        return 0
    study = run_study(pipeline, args.model, args.n, args.calib, args.seed_offset, args.batch_size,
                      args.max_new_tokens, method=args.lazy_method, mass_correction=args.mass_correction,
                      exact_image_rows=args.exact_image_rows)
    study["command"] = command_line("study", args)
    paths = write_report(study, args.out)
    print(markdown_table(study))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    print(f"reproduce with: {study['command']}")
    return 0
