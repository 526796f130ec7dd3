"""`python cli.py --image IMG --prompt TEXT`: answer one question, streaming the answer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kernels import BACKENDS
from minilazy.errors import InputError
from minilazy.generate import generate
from minilazy.pipeline import DTYPES, Pipeline
from minilazy.sampler import SamplingParams

DEMO_MODEL = Path(__file__).resolve().parents[2] / "weights" / "demo"


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(DEMO_MODEL),
                   help="Hugging Face model directory (config.json, *.safetensors, tokenizer.json); "
                        "default: the bundled demo model")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="kernels: 'triton' (GPU, or the slow CPU interpreter with TRITON_INTERPRET=1), "
                        "'torch' (the plain-PyTorch twins), 'auto' (triton on CUDA, torch otherwise)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="weights and activations dtype")


def add_lazy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lazy", metavar="PLAN.json", help="run with the lazy layers of this plan (from `calibrate`)")
    p.add_argument("--lazy-ratio", type=float, metavar="F",
                   help="make this share of layers lazy, calibrating on the given image and prompt first")
    p.add_argument("--lazy-scope", choices=["visual", "all"], default="visual",
                   help="with --lazy-ratio: inherit attention over image keys only (default) or over all keys")
    p.add_argument("--q-cache-depth", type=int, default=1, metavar="R",
                   help="with --lazy-ratio: Q Cache slots, i.e. how many recent active layers may be anchors")
    p.add_argument("--no-fast-decode", action="store_true",
                   help="recompute anchor logits over image keys in decode instead of reusing them")
    p.add_argument("--fastv-layer", type=int, metavar="K",
                   help="FastV token pruning: from layer K on, keep only the most-attended image tokens")
    p.add_argument("--fastv-ratio", type=float, metavar="R",
                   help="FastV: share of image tokens to drop (with --fastv-layer; the paper uses K=2, R=0.5)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cli.py", description="Answer a question about an image "
                                "(or a text-only prompt) with a multimodal LLM.")
    p.add_argument("--image", help="image file (PNG, JPEG, ...); omit for a text-only prompt")
    p.add_argument("--prompt", required=True, help="the question or instruction")
    add_model_arguments(p)
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="most tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 (default) decodes greedily")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass (with temperature)")
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="sample among the K likeliest (0: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    add_lazy_arguments(p)
    p.add_argument("--stats", action="store_true",
                   help="print prefill/decode time, tokens per second, KV-cache bytes and lazy-layer savings")
    return p


def fastv_from(args):
    """The FastV setting the flags ask for, or None."""
    from minilazy.fastv import FastV

    if (args.fastv_layer is None) != (args.fastv_ratio is None):
        raise InputError("FastV needs both --fastv-layer K and --fastv-ratio R")
    return None if args.fastv_layer is None else FastV(args.fastv_layer, args.fastv_ratio)


def lazy_runtime(args, pipeline, samples):
    """The LazyRuntime the lazy and FastV flags ask for (None for plain attention).

    `--lazy-ratio` calibrates on `samples`, a list of (image, prompt) pairs.
    """
    if args.lazy and args.lazy_ratio is not None:
        raise InputError("give either --lazy PLAN.json or --lazy-ratio, not both")
    fastv = fastv_from(args)
    if args.lazy is None and args.lazy_ratio is None and fastv is None:
        return None
    from minilazy.lazy.calibrate import measure_divergence, plan_for_ratio
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
        js = measure_divergence(pipeline, samples, progress=False)
        plan, _ = plan_for_ratio(js, args.lazy_ratio, args.q_cache_depth, args.lazy_scope,
                                 fastv.layer if fastv else None)
    if plan is not None:
        plan.check_layers(pipeline.config.text.num_hidden_layers)
    return LazyRuntime(plan, fast_decode=not args.no_fast_decode, fastv=fastv)


def run(args) -> int:
    pipeline = Pipeline.load(args.model, args.dtype, args.backend)
    params = SamplingParams(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed)
    request = pipeline.request(args.prompt, args.image)
    runtime = lazy_runtime(args, pipeline, [(args.image, args.prompt)])
    produced: list[int] = []
    printed = ""

    def stream(step_tokens):
        nonlocal printed
        token = int(step_tokens[0])
        if token < 0:
            return
        produced.append(token)
        text = pipeline.decode(produced)
        sys.stdout.write(text[len(printed):])
        sys.stdout.flush()
        printed = text

    out = generate(pipeline.model, [request], params, stop_ids=pipeline.stop_ids, on_tokens=stream,
                   cache_layout=runtime)
    print()
    if args.stats:
        from minilazy.commands.stats import print_stats

        print_stats(out.stats, pipeline, request, runtime)
    return 0
