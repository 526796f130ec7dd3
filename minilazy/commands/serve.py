"""`python cli.py serve --model DIR`: an OpenAI-compatible HTTP server over one engine (docs/serving.md)."""

from __future__ import annotations

import argparse
import re
import signal
from pathlib import Path

from PIL import Image

from minilazy.commands.options import add_lazy_arguments, add_model_arguments, lazy_runtime
from minilazy.config import QWEN2_VL_TYPES
from minilazy.demo.questions import DESCRIBE_QUESTION
from minilazy.errors import InputError
from minilazy.generate import PREFILL_CHUNK

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes of a size such as `2GiB`, `512MB`, `1.5gib` or `1000000`."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2GiB, 512MiB, 1GB or a byte count)")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return ""


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_capacity_arguments(p) -> None:
    """The KV budget and the cache rows (also the flags `loadtest --compare` gives every server it starts)."""
    p.add_argument("--kv-budget", type=parse_size, default=parse_size("1GiB"), metavar="SIZE",
                   help="KV-cache bytes that running requests may reserve, e.g. 2GiB (default: 1GiB)")
    p.add_argument("--max-batch", type=positive, default=16, metavar="N",
                   help="most requests running at once: the cache rows allocated (default: 16)")
    p.add_argument("--max-model-len", type=positive, metavar="N",
                   help="the most tokens (prompt plus answer) one request may hold: the slots of a cache row, so the "
                        "storage allocated at start is --max-batch rows of N slots (default: the context window, "
                        "or what the budget holds at full attention's price if that is shorter)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cli.py serve", description="Serve a model over the OpenAI chat "
                                "completions API, with continuous batching under a KV-cache budget.")
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    add_capacity_arguments(p)
    p.add_argument("--max-queue", type=positive, default=64, metavar="N",
                   help="most requests waiting for admission; more get 429 (default: 64)")
    p.add_argument("--max-new-tokens-limit", type=positive, default=256, metavar="N",
                   help="largest max_tokens a request may ask for, and the default (default: 256)")
    p.add_argument("--prefill-chunk", type=positive, default=PREFILL_CHUNK, metavar="N",
                   help="prompt tokens prefilled per engine step: a longer prompt is prefilled in chunks between "
                        "decode steps, so running requests wait for at most one chunk; answers equal cli.py's "
                        f"with its chunk, the default (default: {PREFILL_CHUNK})")
    p.add_argument("--served-model-name", metavar="NAME",
                   help="the model name clients send (default: the model directory's name)")
    add_lazy_arguments(p)
    p.add_argument("--calib-images", metavar="DIR_OR_N",
                   help=f"with --lazy-ratio or --vtw-layer auto: the images calibration asks {DESCRIBE_QUESTION!r} "
                        "about, a directory or a number N of generated demo scenes (default: the bundled examples/)")
    return p


def variant(runtime) -> str:
    """What the engine runs, in words: full attention, or the lazy layers and the token pruning."""
    if runtime is None:
        return "full attention"
    parts = []
    if runtime.plan is not None:
        plan = runtime.plan
        parts.append(f"{len(plan.lazy_layers)} of {plan.num_layers} layers lazy ({plan.inheritance()})")
    if runtime.fastv is not None:
        fastv = runtime.fastv
        parts.append(f"FastV from layer {fastv.layer}, ratio {fastv.ratio}" if fastv.scores_tokens
                     else f"VTW from layer {fastv.layer}")
    return ", ".join(parts)


def typical_request(pipeline):
    """A short question, about an image when the model takes one: what a typical request's prompt costs."""
    if pipeline.processor is None:
        return pipeline.request("Describe the weather today."), "text only"
    size_px = 448 if pipeline.config.model_type in QWEN2_VL_TYPES else pipeline.config.vision.image_size  # any size
    return pipeline.request("Describe the image.", Image.new("RGB", (size_px, size_px))), "with an image"


def run(args) -> int:
    try:
        import uvicorn

        from minilazy.serve.engine import Engine
        from minilazy.serve.server import Server, create_app
        from minilazy.serve.worker import EngineThread
    except ImportError as err:
        raise InputError(f"serving needs the 'serve' extra ({err.name} is missing): "
                         "pip install -e '.[serve]'") from None
    from minilazy.commands.calibrate import calibration_images
    from minilazy.pipeline import Pipeline

    pipeline = Pipeline.load(args.model, args.dtype, args.backend)
    name = args.served_model_name or Path(args.model).resolve().name
    calibrates = args.lazy_ratio is not None or args.vtw_layer == "auto"
    if args.calib_images is not None and not calibrates:
        raise InputError("--calib-images only applies with --lazy-ratio or --vtw-layer auto")
    images = calibration_images(args.calib_images or str(EXAMPLES), "--calib-images") if calibrates else []
    samples = [(image, DESCRIBE_QUESTION) for image in images]
    runtime = lazy_runtime(args, pipeline, samples)
    engine = Engine(pipeline.model, args.kv_budget, args.max_batch, pipeline.stop_ids, args.max_queue,
                    args.prefill_chunk, runtime, args.max_model_len)
    request, kind = typical_request(pipeline)
    new = min(args.max_new_tokens_limit, engine.longest_request - len(request.input_ids))
    need = engine.rows.need(request, new)
    print(f"minilazy serving {name!r} ({args.model}) at http://{args.host}:{args.port}/v1", flush=True)
    print(f"attention: {variant(runtime)}", flush=True)
    print(f"KV budget {size(args.kv_budget)} ({engine.rows.bytes_per_token:,} bytes a token at full attention): "
          f"{args.kv_budget // need:,} typical requests fit ({len(request.input_ids)} prompt tokens {kind}, "
          f"{new} new: {size(need)} each), at most {args.max_batch} at once; "
          f"{engine.rows.rows} cache rows of {engine.rows.slots:,} slots allocated ({size(engine.rows.nbytes)})",
          flush=True)
    worker = EngineThread(engine).start()
    server = uvicorn.Server(uvicorn.Config(create_app(Server(pipeline, engine, worker, name,
                                                             args.max_new_tokens_limit)),
                                           host=args.host, port=args.port, log_level="warning"))
    # uvicorn stops on SIGINT and SIGTERM, then raises the signal again for the handler it found: make that
    # one a no-op, so that a stop by signal is a clean exit (status 0)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        worker.stop()
    print("stopped", flush=True)
    return 0 if server.started else 1
