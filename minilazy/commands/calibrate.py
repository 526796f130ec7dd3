"""`python cli.py calibrate`: choose lazy layers (by visual-attention similarity between layers, or by the
measured effect of inheriting on the model's answers) and write a layer plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from minilazy.commands.options import LAZY_METHOD_HELP, MASS_CORRECTION, add_model_arguments
from minilazy.demo.questions import DESCRIBE_QUESTION
from minilazy.errors import InputError
from minilazy.lazy.calibrate import (
    JS_NEW_TOKENS, METHODS, calibrate, divergence_matrix, plan_for_ratio, record_attention, walk,
)
from minilazy.lazy.effect import ANSWER_NEW_TOKENS
from minilazy.lazy.mass_correction import image_lse_means, with_mass_offsets
from minilazy.pipeline import Pipeline

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cli.py calibrate",
                                description="Choose lazy layers: run full attention on image+prompt samples, "
                                "measure the Jensen-Shannon divergence of every layer's attention over image keys "
                                "to every earlier layer's, and walk the layers to build a plan (--method js); or "
                                "score candidate plans by how much they change the full model's answers "
                                "(--method rank or greedy).")
    add_model_arguments(p)
    p.add_argument("--images", required=True, metavar="DIR_OR_N",
                   help="a directory of images, or a number N of generated demo scenes (training seeds)")
    p.add_argument("--prompt", default=DESCRIBE_QUESTION, help=f"prompt asked of every image (default: {DESCRIBE_QUESTION!r})")
    p.add_argument("--method", choices=METHODS, default="js", help=LAZY_METHOD_HELP)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--ratio", type=float, metavar="F", help="share of layers to make lazy, in [0, 1)")
    target.add_argument("--threshold", type=float, metavar="T",
                        help="with --method js: a layer is lazy when its divergence to an anchor is below T")
    p.add_argument("--scope", choices=["visual", "all"], default="visual",
                   help="inherit attention over image keys (default) or over every key (ablation)")
    p.add_argument("--depth", type=int, default=1, metavar="R",
                   help="Q Cache slots: a lazy layer may inherit from any of the last R active layers")
    p.add_argument("--max-new-tokens", type=int, metavar="N",
                   help=f"tokens generated per sample: with js their queries are measured too (default "
                        f"{JS_NEW_TOKENS}); with rank and greedy, the longest answer scored (default "
                        f"{ANSWER_NEW_TOKENS})")
    p.add_argument("--per-head", action="store_true",
                   help="with --method js: compare same-index heads and average over heads (what a lazy layer "
                        "inherits) instead of comparing head-averaged attention (the paper's criterion)")
    p.add_argument("--mass-correction", action=argparse.BooleanOptionalAction, default=MASS_CORRECTION,
                   help="store each lazy layer's per-head mass offsets in the plan (scope visual; applied when "
                        "the plan runs with --mass-correction); with --method rank or greedy, candidate plans are "
                        "also measured with them, and with exact image rows (as plans run by default) "
                        f"(default: {MASS_CORRECTION})")
    p.add_argument("--out", required=True, metavar="PLAN.json", help="where to write the plan")
    p.add_argument("--plot", metavar="PNG",
                   help="with --method js: also draw the divergence heatmap with the chosen anchors")
    return p


def calibration_images(spec: str, flag: str = "--images") -> list:
    """The images of a directory, or `spec` generated demo scenes; `flag` names the option in errors."""
    path = Path(spec)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"{spec}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return images
    if spec.isdigit() and int(spec) > 0:
        from minilazy.demo.scenes import make_scene, render

        return [render(make_scene(seed)) for seed in range(int(spec))]
    raise InputError(f"{flag} {spec!r} is neither a directory nor a positive number of demo scenes")


def run(args) -> int:
    if args.ratio is not None and not 0 <= args.ratio < 1:
        raise InputError(f"--ratio must be in [0, 1), got {args.ratio}")
    if args.method != "js":
        js_only = [flag for flag, given in (("--threshold", args.threshold is not None), ("--per-head", args.per_head),
                                            ("--plot", args.plot is not None)) if given]
        if js_only:
            raise InputError(f"{' and '.join(js_only)} only apply with --method js")
    pipeline = Pipeline.load(args.model, args.dtype, args.backend)
    samples = [(image, args.prompt) for image in calibration_images(args.images)]
    if args.method != "js":
        return write_effect_plan(args, pipeline, samples)
    records = record_attention(pipeline, samples, args.max_new_tokens or JS_NEW_TOKENS)
    num_layers = pipeline.config.text.num_hidden_layers
    js = divergence_matrix(records, num_layers, args.per_head)
    if args.ratio is not None:
        plan, threshold = plan_for_ratio(js, args.ratio, args.depth, args.scope)
    else:
        plan, threshold = walk(js, args.threshold, args.depth, args.scope), args.threshold
    if args.mass_correction:
        plan = with_mass_offsets(plan, image_lse_means(records, num_layers))
    plan.save(args.out, threshold=threshold, samples=len(samples), divergence=js.tolist())
    print(f"{len(plan.lazy_layers)} of {plan.num_layers} layers lazy (threshold {threshold:.4g}): {plan.inheritance()}")
    print(f"plan written to {args.out}")
    if args.plot:
        from minilazy.lazy.heatmap import plot_divergence

        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot_divergence(js, plan, args.plot)
        print(f"heatmap written to {args.plot}")
    return 0


def write_effect_plan(args, pipeline, samples) -> int:
    plan = calibrate(pipeline, samples, args.ratio, args.depth, args.scope, method=args.method,
                     max_new_tokens=args.max_new_tokens or ANSWER_NEW_TOKENS, mass_correction=args.mass_correction)
    plan.save(args.out, method=args.method, samples=len(samples))
    print(f"{len(plan.lazy_layers)} of {plan.num_layers} layers lazy ({args.method}): {plan.inheritance()}")
    print(f"plan written to {args.out}")
    return 0
