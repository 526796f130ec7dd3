"""`python cli.py --image IMG --prompt TEXT`: answer one question, streaming the answer."""

from __future__ import annotations

import argparse
import sys

from minilazy.commands.options import add_lazy_arguments, add_model_arguments, lazy_runtime
from minilazy.generate import generate
from minilazy.pipeline import Pipeline
from minilazy.sampler import SamplingParams


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cli.py", description="Answer a question about an image "
                                "(or a text-only prompt) with a multimodal LLM.",
                                epilog="Other commands, each with its own --help: calibrate (choose lazy layers), "
                                       "eval (demo model accuracy), study (lazy and FastV sweeps), compare-studies "
                                       "(several studies in one plot), perplexity (text models), bench (speed and memory against transformers), serve "
                                       "(an OpenAI-compatible server), loadtest (load a running server).")
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
                   decoder_setup=runtime)
    print()
    if args.stats:
        from minilazy.commands.stats import print_stats

        print_stats(out.stats, pipeline, request, runtime)
    return 0
