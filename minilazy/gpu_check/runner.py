"""Runs the parts one after another, each in its own process group under its own time limit.

A part that fails, crashes or runs out of time is reported and the next part still runs: one slow
part cannot starve the others. The parts' budgets add up to 8 minutes on an H100 (docs/gpu.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from minilazy.gpu_check.setting import machine, write_json

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Part:
    name: str
    target: str  # MODULE:FUNCTION, see part.py
    budget_s: float  # time limit on a GPU
    dry_budget_s: float  # time limit of the dry run on a CPU

    def budget(self, dry_run: bool) -> float:
        return self.dry_budget_s if dry_run else self.budget_s


PARTS = (
    Part("kernels", "minilazy.gpu_check.kernels:run", 140, 60),
    Part("runtime", "minilazy.gpu_check.runtime:run", 130, 60),
    Part("serve", "minilazy.gpu_check.serve:run", 70, 60),
    Part("bench", "minilazy.gpu_check.bench:run", 140, 60),
)
STATUS = {0: "passed", 1: "failed"}  # exit status of part.py; anything else is an error


def child_env() -> dict:
    """The repository importable without an install; Triton compiling for real (never its interpreter)."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    return env


def run_part(part: Part, out_dir: Path, dry_run: bool) -> dict:
    """Run one part; its record for check.json, with its summary lines."""
    budget = part.budget(dry_run)
    command = [sys.executable, "-m", "minilazy.gpu_check.part", part.target, str(out_dir), "--budget", str(budget)]
    command += ["--dry-run"] if dry_run else []
    out_path, log_path = out_dir / f"{part.name}.out", out_dir / f"{part.name}.log"
    start = time.perf_counter()
    with open(out_path, "w") as out, open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=out, stderr=log, cwd=REPO, env=child_env(), start_new_session=True)
        try:
            returncode = proc.wait(timeout=budget)
            status = STATUS.get(returncode, "error")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the part and whatever it started (pytest processes)
            returncode, status = proc.wait(), "timed_out"
    seconds = time.perf_counter() - start
    log_tail = log_path.read_text(errors="replace").splitlines()[-15:]
    json_path = out_dir / f"{part.name}.json"
    return {
        "status": status, "seconds": round(seconds, 1), "budget_s": budget, "returncode": returncode,
        "json": json_path.name if json_path.exists() else None, "log": log_path.name,
        "summary": out_path.read_text(errors="replace").splitlines(),
        "error": None if status in ("passed", "failed") else log_tail,
    }


def run_check(out_dir: Path, dry_run: bool, parts=PARTS, echo=print) -> dict:
    """Every part in turn; writes OUT_DIR/check.json and echoes each part's summary as it ends."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    total = sum(p.budget(dry_run) for p in parts)
    echo(f"GPU check{' (dry run)' if dry_run else ''}: {len(parts)} parts, at most {total:.0f} s, into {out_dir}")
    report = {"dry_run": dry_run, "machine": machine(), "budget_s": total, "parts": {}}
    for part in parts:
        record = run_part(part, out_dir, dry_run)
        report["parts"][part.name] = record
        report["seconds"] = round(time.perf_counter() - start, 1)
        write_json(out_dir / "check.json", report)
        echo(f"== {part.name}: {record['status']} in {record['seconds']:.0f} s (limit {record['budget_s']:.0f} s)")
        for line in record["summary"] + ["   " + line for line in record["error"] or []]:
            echo(line)
    statuses = {name: r["status"] for name, r in report["parts"].items()}
    echo(f"== all parts: {statuses}; {report['seconds']:.0f} s; JSON in {out_dir}")
    return report
