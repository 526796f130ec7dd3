"""Part 1: every Triton kernel against its torch reference on the GPU, by the kernel tests themselves.

Each `tests/kernels/test_<op>.py` whose `<op>` is a module of minilazy/kernels/ runs in its own pytest
process with `--device cuda` (tests/conftest.py: tensors made on the GPU, TF32 off, the GPU-sized
cases on) and without TRITON_INTERPRET, so the kernels are compiled and run natively; several files
at once, since compiling is CPU work. The counts per file come from pytest's JUnit XML.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from minilazy.gpu_check.setting import Setting, machine, write_json

REPO = Path(__file__).resolve().parents[2]
NOT_KERNELS = {"__init__", "aot", "backend", "blocks"}  # modules of minilazy/kernels/ that hold no kernel

# the dry run: two files' smallest fp32 cases ("dtype0": the first entry of TOLERANCES) and the GPU-sized
# cases, which tests/conftest.py skips off the GPU
DRY_FILES = ("test_linear.py", "test_rms_norm.py")
DRY_SELECTION = "(dtype0 and 1-40) or gpu_sized"
MARGIN_S = 10  # left to the part for writing its JSON after the pytest processes


def test_files() -> list[Path]:
    """The tests of the Triton kernels, largest first (they start first when run side by side)."""
    kernels = {p.stem for p in (REPO / "minilazy" / "kernels").glob("*.py")} - NOT_KERNELS
    files = [p for p in (REPO / "tests" / "kernels").glob("test_*.py") if p.stem.removeprefix("test_") in kernels]
    return sorted(files, key=lambda p: -p.stat().st_size)


def pytest_command(path: Path, xml: Path, setting: Setting) -> list[str]:
    command = [sys.executable, "-m", "pytest", str(path.relative_to(REPO)), "-q", "-p", "no:cacheprovider",
               "-o", "addopts=", f"--junitxml={xml}", "--device", setting.device.type]
    return command + (["-k", DRY_SELECTION] if setting.dry_run else [])


def counts(xml: Path) -> dict:
    """Passed, failed, errors and skipped of one JUnit XML file, with the first failures' messages."""
    result = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        kind = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(getattr(outcome, "tag", ""), "passed")
        result[kind] += 1
        if kind in ("failed", "errors") and len(result["failures"]) < 10:
            message = (outcome.get("message") or "").strip().splitlines()
            result["failures"].append({"test": case.get("name"), "message": message[0][:300] if message else ""})
    return result


def run_file(path: Path, out_dir: Path, setting: Setting, timeout: float) -> dict:
    xml = out_dir / "kernels-xml" / f"{path.stem}.xml"
    start = time.perf_counter()
    try:
        proc = subprocess.run(pytest_command(path, xml, setting), cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        returncode, output = None, f"timed out after {timeout:.0f} s\n{err.stdout or ''}"
    record = {"seconds": round(time.perf_counter() - start, 1), "returncode": returncode}
    if xml.exists():
        record.update(counts(xml))
    else:  # pytest ended before writing its report (or timed out)
        record.update(passed=0, failed=0, errors=1, skipped=0, failures=[{"test": path.name, "message": ""}])
        record["output_tail"] = output.splitlines()[-20:] if isinstance(output, str) else []
    print(f"{path.name}: {record['passed']} passed, {record['failed']} failed, {record['errors']} errors "
          f"in {record['seconds']} s", file=sys.stderr, flush=True)
    return record


def run(out_dir: Path, setting: Setting) -> tuple[bool, list[str]]:
    files = test_files()
    if setting.dry_run:
        files = [p for p in files if p.name in DRY_FILES]
    (out_dir / "kernels-xml").mkdir(parents=True, exist_ok=True)
    workers = max(1, min(len(files), (os.cpu_count() or 2) // 2, 8))
    timeout = max(1.0, setting.budget_s - MARGIN_S)
    data = {"device": setting.device.type, "native": setting.device.type == "cuda", "dry_run": setting.dry_run,
            "selection": DRY_SELECTION if setting.dry_run else None, "workers": workers, "machine": machine(),
            "files": {}}
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(run_file, p, out_dir, setting, timeout): p for p in files}
        for future in as_completed(futures):
            data["files"][futures[future].name] = future.result()
            write_json(out_dir / "kernels.json", data)
    by_file = dict(sorted(data["files"].items()))
    totals = {k: sum(r[k] for r in by_file.values()) for k in ("passed", "failed", "errors", "skipped")}
    data.update(files=by_file, totals=totals)
    write_json(out_dir / "kernels.json", data)
    lines = [f"   {name:<28} {r['passed']:4d} passed {r['failed']:3d} failed {r['errors']:2d} errors "
             f"{r['skipped']:3d} skipped {r['seconds']:6.1f} s" for name, r in by_file.items()]
    lines.append(f"   {'total':<28} {totals['passed']:4d} passed {totals['failed']:3d} failed "
                 f"{totals['errors']:2d} errors {totals['skipped']:3d} skipped")
    for name, r in by_file.items():
        lines += [f"   FAIL {name}::{f['test']}: {f['message'][:100]}" for f in r["failures"][:2]]
    return totals["failed"] == totals["errors"] == 0 and totals["passed"] > 0, lines
