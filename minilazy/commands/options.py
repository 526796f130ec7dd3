"""Options several commands share: the model to load, lazy layers and FastV, and the runtime they ask for."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from minilazy.kernels import BACKENDS
from minilazy.errors import InputError
from minilazy.lazy.calibrate import METHODS
from minilazy.lazy.effect import VTW_KL_THRESHOLD
from minilazy.pipeline import DTYPES

DEMO_MODEL = Path(__file__).resolve().parents[2] / "weights" / "demo"
MASS_CORRECTION = True  # the lazy-layer refinements' defaults: on, as docs/results.md measures them
EXACT_IMAGE_ROWS = True
LAZY_METHOD_HELP = ("how lazy layers are chosen (default: js): 'js', the Jensen-Shannon walk over the layers' "
                    "attention to the image (one recorded generation per sample); 'rank', each layer alone made "
                    "lazy and the least harmful k taken by the KL of the output distributions (one generation "
                    "plus L-1 teacher-forced passes per sample, L layers); 'greedy', one layer added at a time, "
                    "the one that changes the outputs least (one generation plus about k*L passes per sample for "
                    "k lazy layers, at most L^2/2, times R with Q Cache depth R); both measure each candidate with "
                    "the refinements it will run with (mass correction, exact image rows)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(DEMO_MODEL),
                   help="Hugging Face model directory (config.json, *.safetensors, tokenizer.json); "
                        "default: the bundled demo model")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="kernels: 'triton' (the Triton kernels: a GPU, or the slow CPU interpreter with "
                        "TRITON_INTERPRET=1), 'torch' (the tuned CPU path), 'reference' (the plain-PyTorch "
                        "references, slow), 'auto' (triton on CUDA, torch otherwise)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="weights and activations dtype")


def add_lazy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lazy", metavar="PLAN.json", help="run with the lazy layers of this plan (from `calibrate`)")
    p.add_argument("--lazy-ratio", type=float, metavar="F",
                   help="make this share of layers lazy, calibrating first (on the image and prompt; in eval, "
                        "on --calib scenes; in serve, on --calib-images)")
    p.add_argument("--lazy-method", choices=METHODS, help="with --lazy-ratio: " + LAZY_METHOD_HELP)
    p.add_argument("--lazy-scope", choices=["visual", "all"],
                   help="with --lazy-ratio: inherit attention over image keys only (default: visual) or over all keys")
    p.add_argument("--q-cache-depth", type=int, metavar="R",
                   help="with --lazy-ratio: Q Cache slots, i.e. how many recent active layers may be anchors "
                        "(default 1)")
    p.add_argument("--no-fast-decode", action="store_true",
                   help="recompute anchor logits over image keys in decode instead of reusing them")
    p.add_argument("--mass-correction", action=argparse.BooleanOptionalAction, default=MASS_CORRECTION,
                   help="shift the inherited image part's log-sum-exp by a per-head offset (calibrated with "
                        "--lazy-ratio, read from a plan that has them with --lazy) so that the image gets the "
                        f"share of attention the layer's own logits would give it (default: {MASS_CORRECTION})")
    p.add_argument("--exact-image-rows", action=argparse.BooleanOptionalAction, default=EXACT_IMAGE_ROWS,
                   help="in prefill, give image tokens' queries a lazy layer's own attention (their keys are "
                        f"computed and dropped when prefill ends; the KV cache is unchanged) (default: "
                        f"{EXACT_IMAGE_ROWS})")
    p.add_argument("--fastv-layer", type=int, metavar="K",
                   help="FastV token pruning: from layer K on, keep only the most-attended image tokens")
    p.add_argument("--fastv-ratio", type=float, metavar="R",
                   help="FastV: share of image tokens to drop (with --fastv-layer; the paper uses K=2, R=0.5)")
    p.add_argument("--vtw-layer", type=vtw_layer, metavar="K|auto",
                   help="Visual Token Withdrawal: from layer K on, no image tokens at all (K = the number of layers: "
                        "none withdrawn); 'auto' picks the smallest K whose output KL to the full model, on the "
                        "calibration samples, is under --vtw-threshold (at most L-1 teacher-forced passes per sample)")
    p.add_argument("--vtw-threshold", type=float, metavar="KL",
                   help=f"with --vtw-layer auto: the largest mean KL allowed (default {VTW_KL_THRESHOLD}, our choice)")


def vtw_layer(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer number or 'auto', got {text!r}") from None


def token_pruning(args, pipeline, samples):
    """The FastV or VTW setting the flags ask for, or None; `--vtw-layer auto` measures VTW's layer on `samples`."""
    from minilazy.fastv import VTW, FastV

    if (args.fastv_layer is None) != (args.fastv_ratio is None):
        raise InputError("FastV needs both --fastv-layer K and --fastv-ratio R")
    if args.vtw_threshold is not None and args.vtw_layer != "auto":
        raise InputError("--vtw-threshold only applies with --vtw-layer auto")
    if args.vtw_layer is None:
        return None if args.fastv_layer is None else FastV(args.fastv_layer, args.fastv_ratio)
    if args.fastv_layer is not None:
        raise InputError("give either FastV (--fastv-layer) or VTW (--vtw-layer), not both")
    if args.vtw_layer != "auto":
        return VTW(args.vtw_layer)
    if any(image is None for image, _ in samples):
        raise InputError("--vtw-layer auto measures on the image: give --image")
    from minilazy.lazy.effect import OutputDivergence, answer_batches, withdrawal_layer

    divergence = OutputDivergence(pipeline.model, answer_batches(pipeline, samples, progress=False))
    threshold = VTW_KL_THRESHOLD if args.vtw_threshold is None else args.vtw_threshold
    return VTW(withdrawal_layer(divergence, pipeline.config.text.num_hidden_layers, threshold, progress=False))


def lazy_runtime(args, pipeline, samples):
    """The LazyRuntime the lazy, FastV and VTW flags ask for (None for plain attention).

    `--lazy-ratio` and `--vtw-layer auto` calibrate on `samples`, a list of (image, prompt) pairs.
    """
    if args.lazy and args.lazy_ratio is not None:
        raise InputError("give either --lazy PLAN.json or --lazy-ratio, not both")
    calibration_flags = [flag for flag, value in (("--lazy-method", args.lazy_method),
                                                  ("--lazy-scope", args.lazy_scope),
                                                  ("--q-cache-depth", args.q_cache_depth)) if value is not None]
    if calibration_flags and args.lazy_ratio is None:
        raise InputError(f"{' and '.join(calibration_flags)} only apply with --lazy-ratio "
                         "(a plan from --lazy carries its own)")
    if args.no_fast_decode and args.lazy is None and args.lazy_ratio is None:
        raise InputError("--no-fast-decode only applies to lazy layers: give --lazy or --lazy-ratio")
    fastv = token_pruning(args, pipeline, samples)
    if args.lazy is None and args.lazy_ratio is None and fastv is None:
        return None
    from minilazy.lazy.calibrate import calibrate
    from minilazy.lazy.plan import LayerPlan
    from minilazy.lazy.runtime import LazyRuntime

    plan = None
    if args.lazy:
        plan = LayerPlan.load(args.lazy)
    elif args.lazy_ratio is not None:
        if not 0 <= args.lazy_ratio < 1:
            raise InputError(f"--lazy-ratio must be in [0, 1), got {args.lazy_ratio}")
        if any(image is None for image, _ in samples):
            raise InputError("--lazy-ratio calibrates on the image: give --image (or a stored plan with --lazy)")
        depth = 1 if args.q_cache_depth is None else args.q_cache_depth  # the defaults --help names
        plan = calibrate(pipeline, samples, args.lazy_ratio, depth, args.lazy_scope or "visual",
                         fastv.layer if fastv else None, progress=False, method=args.lazy_method or "js",
                         mass_correction=args.mass_correction, exact_image_rows=args.exact_image_rows)
    if plan is not None:
        plan.check_layers(pipeline.config.text.num_hidden_layers)
        plan = plan if args.mass_correction else plan.without_mass_correction()
    return LazyRuntime(plan, fast_decode=not args.no_fast_decode, fastv=fastv,
                       exact_image_rows=args.exact_image_rows)


def command_line(name: str, args: argparse.Namespace) -> str:
    """The command that reruns `args`: `python cli.py NAME` with every flag whose value is not its default."""
    from minilazy.commands import COMMANDS

    parts = ["python", "cli.py", name]
    for action in COMMANDS[name].parser()._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest == "help" or value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse.BooleanOptionalAction):  # --x / --no-x: the one that gives the value
            parts.append(min(action.option_strings, key=len) if value else flag)  # flag, the longest: --no-x
        elif isinstance(action, argparse._StoreTrueAction):
            parts.append(flag)
        else:
            parts += [flag, *map(shown, value if isinstance(value, (list, tuple)) else [value])]
    return shlex.join(parts)


def shown(value) -> str:
    """A command-line value as a reader would type it: absolute paths inside the working directory made relative."""
    text = str(value)
    if text.startswith("/") and Path(text).is_relative_to(Path.cwd()):
        return str(Path(text).relative_to(Path.cwd()))
    return text
