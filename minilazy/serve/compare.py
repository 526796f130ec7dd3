"""`loadtest --compare`: the same load against one server per attention variant, all on the same KV budget.

A variant is a name: `full`, `lazy<F>` (a share F of the layers lazy, calibrated at the server's start),
`fastv` (FastV at the layer and ratio given), `vtw<K>` (VTW from layer K), or several joined by `+`
(`lazy0.8+fastv`). Each is run by starting `python cli.py serve` with the flags it stands for plus the
common ones (budget, rows, model), waiting for /health, sending the load (minilazy/serve/loadtest.py),
reading from /metrics the most requests that ran at once, and stopping the server. The gain of a
variant is what the scheduler's own accounting lets it run at once on the same budget.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from minilazy.errors import InputError
from minilazy.serve.loadtest import LoadReport, connect

DEFAULT_VARIANTS = ("full", "lazy0.5", "lazy0.8", "fastv", "lazy0.8+fastv")
ROOT = Path(__file__).resolve().parents[2]


def variant_flags(name: str, fastv_layer: int, fastv_ratio: float, calib_images: str | None = None) -> list[str]:
    """The `serve` flags variant `name` stands for (InputError for a name that is none); `calib_images` goes to
    the variants that calibrate a plan when they start (serve refuses it elsewhere)."""
    flags: list[str] = []
    for part in name.split("+"):
        if part == "full" and name == "full":
            continue
        if part == "fastv":
            flags += ["--fastv-layer", str(fastv_layer), "--fastv-ratio", str(fastv_ratio)]
        elif match := re.fullmatch(r"lazy(0?\.[0-9]+|0)", part):
            flags += ["--lazy-ratio", match.group(1)]
        elif match := re.fullmatch(r"vtw([0-9]+)", part):
            flags += ["--vtw-layer", match.group(1)]
        else:
            raise InputError(f"unknown variant {name!r}: give full, lazy<F> (e.g. lazy0.8), fastv, vtw<K> "
                             "(e.g. vtw6) or several joined by + (e.g. lazy0.8+fastv)")
    if "--fastv-layer" in flags and "--vtw-layer" in flags:
        raise InputError(f"variant {name!r}: FastV and VTW do not combine")
    if calib_images is not None and "--lazy-ratio" in flags:
        flags += ["--calib-images", calib_images]
    return flags


@dataclass
class VariantResult:
    variant: str
    serve_flags: list[str]
    attention: str  # what the server said it runs
    running_peak: int  # the most requests the server ran at once
    report: LoadReport


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, path: str) -> tuple[int, str]:
    connection = connect(url, 10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def running_peak(url: str) -> int:
    text = get(url, "/metrics")[1]
    return int(float(re.search(r"^minilazy_requests_running_peak (\S+)$", text, re.M).group(1)))


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_variant(variant: str, flags: list[str], load, start_timeout: float) -> VariantResult:
    """Start `serve FLAGS` on a free port, run `load(url)` (a LoadReport) against it, stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(ROOT / "cli.py"), "serve", "--port", str(port), *flags]
    progress(f"{variant}: starting {' '.join(command[1:])}")
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until_up(url, process, log, start_timeout)
            report = load(url)
            peak = running_peak(url)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
        log.seek(0)
        output = log.read()
    attention = next((line.removeprefix("attention: ") for line in output.splitlines()
                      if line.startswith("attention: ")), "")
    return VariantResult(variant, flags, attention, peak, report)


def wait_until_up(url: str, process: subprocess.Popen, log, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise InputError(f"the server exited with status {process.returncode}: {log.read().strip()[-2000:]}")
        if time.monotonic() > deadline:
            raise InputError(f"the server did not answer /health within {timeout:g} s")
        try:
            if get(url, "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)


COLUMNS = ("variant", "max running", "ok", "failed", "output tok/s", "TTFT mean ms", "TTFT p99 ms", "TPOT mean ms")


def table_lines(results: list[VariantResult]) -> list[str]:
    rows = [COLUMNS]
    for r in results:
        rep = r.report
        rows.append((r.variant, str(r.running_peak), str(rep.requests - rep.failed), str(rep.failed),
                     f"{rep.output_tokens_per_second:.1f}", milliseconds(rep.ttft, "mean"),
                     milliseconds(rep.ttft, "p99"), milliseconds(rep.tpot, "mean")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in rows]


def milliseconds(stats: dict, key: str) -> str:
    return f"{stats[key]:.1f}" if stats else "-"


def as_json(results: list[VariantResult], common_flags: list[str], load: dict) -> str:
    """Every server's flags, the load sent to each (`load`: requests, concurrency, ...), and each variant's result."""
    return json.dumps({"serve_flags": common_flags, "load": load, "variants": [asdict(r) for r in results]}, indent=2)
