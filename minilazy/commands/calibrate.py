"""`python cli.py calibrate`: measure visual-attention similarity between layers and write a layer plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from minilazy.commands.options import add_model_arguments
from minilazy.demo.questions import DESCRIBE_QUESTION
from minilazy.errors import InputError
from minilazy.lazy.calibrate import divergence_matrix, plan_for_ratio, record_attention, walk
from minilazy.lazy.mass_correction import image_lse_means, with_mass_offsets
from minilazy.pipeline import Pipeline

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cli.py calibrate",
                                description="Choose lazy layers: run full attention on image+prompt samples, "
                                "measure the Jensen-Shannon divergence of every layer's attention over image keys "
                                "to every earlier layer's, and walk the layers to build a plan.")
    add_model_arguments(p)
    p.add_argument("--images", required=True, metavar="DIR_OR_N",
                   help="a directory of images, or a number N of generated demo scenes (training seeds)")
    p.add_argument("--prompt", default=DESCRIBE_QUESTION, help=f"prompt asked of every image (default: {DESCRIBE_QUESTION!r})")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--ratio", type=float, metavar="F", help="share of layers to make lazy, in [0, 1)")
    target.add_argument("--threshold", type=float, metavar="T",
                        help="a layer is lazy when its divergence to an anchor is below T")
    p.add_argument("--scope", choices=["visual", "all"], default="visual",
                   help="inherit attention over image keys (default) or over every key (ablation)")
    p.add_argument("--depth", type=int, default=1, metavar="R",
                   help="Q Cache slots: a lazy layer may inherit from any of the last R active layers")
    p.add_argument("--max-new-tokens", type=int, default=16, metavar="N",
                   help="tokens generated per sample; their queries are measured too")
    p.add_argument("--per-head", action="store_true",
                   help="compare same-index heads and average over heads (what a lazy layer inherits) instead "
                        "of comparing head-averaged attention (the paper's criterion)")
    p.add_argument("--mass-correction", action="store_true",
                   help="also store each lazy layer's per-head mass offsets in the plan (scope visual; "
                        "used by --mass-correction when the plan runs)")
    p.add_argument("--out", required=True, metavar="PLAN.json", help="where to write the plan")
    p.add_argument("--plot", metavar="PNG", help="also draw the divergence heatmap with the chosen anchors")
    return p


def calibration_images(spec: str) -> list:
    path = Path(spec)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"{spec}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return images
    if spec.isdigit() and int(spec) > 0:
        from minilazy.demo.scenes import make_scene, render

        return [render(make_scene(seed)) for seed in range(int(spec))]
    raise InputError(f"--images {spec!r} is neither a directory nor a positive number of demo scenes")


def run(args) -> int:
    if args.ratio is not None and not 0 <= args.ratio < 1:
        raise InputError(f"--ratio must be in [0, 1), got {args.ratio}")
    pipeline = Pipeline.load(args.model, args.dtype, args.backend)
    samples = [(image, args.prompt) for image in calibration_images(args.images)]
    records = record_attention(pipeline, samples, args.max_new_tokens)
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
