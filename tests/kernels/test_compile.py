"""Ahead-of-time compile of every kernel module's COMPILE_CASES for sm_80 and sm_90.

Compiling for real GPUs works without one and catches code that only the
interpreter accepts, and shared memory above the GPU's limit. It must run
without TRITON_INTERPRET (set for the rest of the tests on a machine without a CUDA GPU), so each module is
compiled in a fresh subprocess that reports its results as JSON.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minilazy.kernels.aot import SHARED_MEMORY_LIMIT
from tests.kernels.test_inventory import kernel_modules

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
CAPABILITIES = (80, 90)
RESULT_MARKER = "COMPILE_RESULTS "

COMPILE_SCRIPT = f"""
import importlib, json, sys
from minilazy.kernels.aot import compile_case

module = importlib.import_module("minilazy.kernels." + sys.argv[1])
results = []
for case in module.COMPILE_CASES:
    for capability in {CAPABILITIES!r}:
        try:
            compiled = compile_case(case, capability)
            results.append({{"case": case.name, "capability": capability, "shared": compiled.metadata.shared}})
        except Exception as error:  # reported, with the case, by the test
            message = f"{{type(error).__name__}}: {{error}}"[:3000]
            results.append({{"case": case.name, "capability": capability, "error": message}})
print({RESULT_MARKER!r} + json.dumps(results))
"""


def compile_module(module_name: str) -> list[dict]:
    """Compile one module's cases in a subprocess without the interpreter; one result per case and capability."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT, module_name],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    assert proc.returncode == 0 and lines, f"compiling minilazy/kernels/{module_name}.py crashed:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len(RESULT_MARKER):])


@pytest.mark.parametrize("module_name", kernel_modules())
def test_compile_cases(module_name):
    results = compile_module(module_name)
    assert results, f"minilazy/kernels/{module_name}.py has no COMPILE_CASES"
    failures = [f"{r['case']} sm_{r['capability']}: {r['error']}" for r in results if "error" in r]
    assert not failures, f"{len(failures)} of {len(results)} compiles failed:\n" + "\n".join(failures[:5])
    over = [
        f"{r['case']} sm_{r['capability']}: {r['shared']} bytes > {SHARED_MEMORY_LIMIT[r['capability']]}"
        for r in results if r["shared"] > SHARED_MEMORY_LIMIT[r["capability"]]
    ]
    assert not over, "shared memory above the GPU's limit:\n" + "\n".join(over)
