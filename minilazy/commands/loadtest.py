"""`python cli.py loadtest --url URL -n N --concurrency C`: load a running server, report throughput, TTFT and TPOT."""

from __future__ import annotations

import argparse
from pathlib import Path

from minilazy.commands.serve import positive
from minilazy.errors import InputError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cli.py loadtest", description="Send N streamed chat completions, C at "
                                "a time, to a running server (python cli.py serve) and report request throughput, "
                                "output tokens/s, time to first token and time per output token.")
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000 (a trailing /v1 is fine)")
    p.add_argument("-n", type=positive, default=32, metavar="N", help="requests to send (default: 32)")
    p.add_argument("--concurrency", type=positive, default=4, metavar="C", help="requests in flight (default: 4)")
    p.add_argument("--prompt", default="Describe the image.", help="the question every request asks")
    p.add_argument("--image", help="a PNG file every request sends with its question (default: text only)")
    p.add_argument("--max-tokens", type=positive, default=64, metavar="M", help="max_tokens of each request")
    p.add_argument("--model", help="the model name to send (default: the one the server lists)")
    p.add_argument("--timeout", type=float, default=600, metavar="S", help="seconds a request may take (default: 600)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    return p


def run(args) -> int:
    from minilazy.serve.loadtest import as_json, report_lines, run_load, served_model

    if args.image and not Path(args.image).is_file():
        raise InputError(f"{args.image}: image file not found")
    try:
        model = args.model or served_model(args.url.rstrip("/").removesuffix("/v1"))
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{args.url}: no server answers there ({err})") from None
    report = run_load(args.url, args.n, args.concurrency, args.prompt, args.image, args.max_tokens, model,
                      args.timeout)
    print("\n".join(report_lines(report)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(as_json(report) + "\n")
    return 1 if report.failed else 0
