"""`python cli.py loadtest --url URL -n N --concurrency C`: load a running server, report throughput, TTFT and TPOT;
`--compare VARIANT ...`: start a server per attention variant on one KV budget, load each alike, print one table."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from minilazy.commands.options import DEMO_MODEL
from minilazy.commands.serve import add_capacity_arguments, positive
from minilazy.errors import InputError


def parser() -> argparse.ArgumentParser:
    from minilazy.serve.compare import DEFAULT_VARIANTS

    p = argparse.ArgumentParser(prog="python cli.py loadtest", description="Send N streamed chat completions, C at "
                                "a time, to a running server (python cli.py serve) and report request throughput, "
                                "output tokens/s, time to first token and time per output token; or, with "
                                "--compare, start one server per attention variant on the same KV budget, send "
                                "each the same load, and print one table.")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="the server, e.g. http://127.0.0.1:8000 (a trailing /v1 is fine)")
    target.add_argument("--compare", nargs="*", metavar="VARIANT",
                        help="start `serve` once per variant and load each: full, lazy<F> (a share F of the layers "
                             "lazy, calibrated at start, e.g. lazy0.8), fastv (--fastv-layer, --fastv-ratio), "
                             "vtw<K> (e.g. vtw6), or several joined by + (e.g. lazy0.8+fastv); none given: "
                             f"{' '.join(DEFAULT_VARIANTS)}")
    p.add_argument("-n", type=positive, default=32, metavar="N", help="requests to send (default: 32)")
    p.add_argument("--concurrency", type=positive, default=4, metavar="C", help="requests in flight (default: 4)")
    p.add_argument("--prompt", default="Describe the image.", help="the question every request asks")
    p.add_argument("--image", help="a PNG file every request sends with its question (default: text only)")
    p.add_argument("--max-tokens", type=positive, default=64, metavar="M", help="max_tokens of each request")
    p.add_argument("--ignore-eos", action="store_true",
                   help="ask for exactly max_tokens tokens per answer (vLLM's ignore_eos), so that variants whose "
                        "answers end sooner are compared on the same work")
    p.add_argument("--model", help="the model name to send (default: the one the server lists)")
    p.add_argument("--timeout", type=float, default=600, metavar="S", help="seconds a request may take (default: 600)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    compare = p.add_argument_group("with --compare: the servers it starts (the same for every variant)")
    compare.add_argument("--model-dir", default=str(DEMO_MODEL), metavar="DIR",
                         help="the model every server loads (serve --model; default: the bundled demo model)")
    add_capacity_arguments(compare)
    compare.add_argument("--fastv-layer", type=positive, default=2, metavar="K",
                         help="the fastv variant's layer (default: 2, the paper's)")
    compare.add_argument("--fastv-ratio", type=float, default=0.5, metavar="R",
                         help="the fastv variant's share of image tokens dropped (default: 0.5, the paper's)")
    compare.add_argument("--calib-images", metavar="DIR_OR_N",
                         help="the lazy<F> variants' calibration images (serve --calib-images; default: serve's)")
    compare.add_argument("--serve-args", default="", metavar="'ARGS'",
                         help="more flags for every server, e.g. '--backend torch --dtype bf16'")
    compare.add_argument("--start-timeout", type=float, default=900, metavar="S",
                         help="seconds a server may take to load and calibrate (default: 900)")
    return p


def run(args) -> int:
    from minilazy.serve.loadtest import as_json, report_lines, run_load, served_model

    if args.image and not Path(args.image).is_file():
        raise InputError(f"{args.image}: image file not found")
    if args.compare is not None:
        return run_compare(args)
    try:
        model = args.model or served_model(args.url.rstrip("/").removesuffix("/v1"))
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{args.url}: no server answers there ({err})") from None
    report = run_load(args.url, args.n, args.concurrency, args.prompt, args.image, args.max_tokens, model,
                      args.timeout, args.ignore_eos)
    print("\n".join(report_lines(report)))
    write(args.json, as_json(report))
    return 1 if report.failed else 0


def run_compare(args) -> int:
    from minilazy.serve import compare
    from minilazy.serve.loadtest import run_load, served_model

    common = ["--model", args.model_dir, "--kv-budget", str(args.kv_budget), "--max-batch", str(args.max_batch),
              *(["--max-model-len", str(args.max_model_len)] if args.max_model_len else []),
              "--max-new-tokens-limit", str(args.max_tokens), *shlex.split(args.serve_args)]
    variants = args.compare or list(compare.DEFAULT_VARIANTS)
    flags = {v: compare.variant_flags(v, args.fastv_layer, args.fastv_ratio, args.calib_images) for v in variants}

    def load(url):
        model = args.model or served_model(url)
        return run_load(url, args.n, args.concurrency, args.prompt, args.image, args.max_tokens, model, args.timeout,
                        args.ignore_eos)

    results = [compare.run_variant(v, [*common, *flags[v]], load, args.start_timeout) for v in variants]
    print(f"{args.n} requests per variant, {args.concurrency} at a time, max_tokens {args.max_tokens}"
          f"{' (ignore_eos)' if args.ignore_eos else ''}; "
          f"every server: {' '.join(common)}")
    print("\n".join(compare.table_lines(results)))
    for result in results:
        print(f"{result.variant}: {result.attention}")
    load = {"requests": args.n, "concurrency": args.concurrency, "prompt": args.prompt, "image": args.image,
            "max_tokens": args.max_tokens, "ignore_eos": args.ignore_eos}
    write(args.json, compare.as_json(results, common, load))
    return 1 if any(r.report.failed for r in results) else 0


def write(path: str | None, text: str) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
