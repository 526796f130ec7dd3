"""The command line the demo model's probes share: a model, how many questions, an optional JSON file.

    python -m experiments.relation_probe --model weights/demo --n 1000 --json probe.json
    python -m experiments.position_probe --model weights/demo --n 600
"""

from __future__ import annotations

import argparse

from minilazy.config import write_json
from minilazy.demo.dataset import IMAGE_TOKENS
from minilazy.errors import InputError


def run_probe(argv, description: str, probe, format_table, n_default: int, n_help: str, n_min: int = 1) -> None:
    """Parse `argv`, run `probe(pipeline, n)` on the model, print `format_table` of its result, write the JSON."""
    from minilazy.pipeline import Pipeline

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="weights/demo", help="model directory (default: weights/demo)")
    parser.add_argument("--n", type=int, default=n_default, help=f"{n_help} (default {n_default})")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.n < n_min:
        raise SystemExit(f"error: --n must be at least {n_min}, got {args.n}")
    try:
        pipeline = Pipeline.load(args.model, dtype="fp32")
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    if pipeline.config.model_type != "llava" or pipeline.config.image_tokens_per_image != IMAGE_TOKENS:
        raise SystemExit(f"error: {args.model} is not a demo model (a llava checkpoint with {IMAGE_TOKENS} image "
                         f"tokens, as python -m minilazy.demo.train writes); the probes ask about its scenes")
    result = probe(pipeline, args.n)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
