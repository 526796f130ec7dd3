"""minilazy/kernels/aot.py: case names, pointer types, and compile_case on a small kernel of its own.

compile_case must run without TRITON_INTERPRET, so the compiles happen in a subprocess on a
kernel module written for the test: one kernel that compiles, one that must not (a block of 100).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minilazy.kernels.aot import CompileCase, pointer

REPO_ROOT = Path(__file__).resolve().parents[2]

KERNELS = '''
import triton
import triton.language as tl


@triton.jit
def scale_kernel(x_ptr, y_ptr, n, factor, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * factor, mask=offs < n)


@triton.jit
def odd_block_kernel(x_ptr, BLOCK: tl.constexpr):
    tl.store(x_ptr + tl.arange(0, BLOCK), 0.0)  # BLOCK must be a power of two on a GPU
'''

SCRIPT = '''
import json, sys
from minilazy.kernels.aot import CompileCase, compile_case
import aot_probe

signature = {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32", "factor": "fp32"}
results = {}
for capability in (80, 90):
    compiled = compile_case(CompileCase(aot_probe.scale_kernel, signature, {"BLOCK": 128}, num_warps=2), capability)
    results[capability] = {"shared": compiled.metadata.shared, "num_warps": compiled.metadata.num_warps,
                           "ptx_target": f".target sm_{capability}" in compiled.asm["ptx"]}
try:
    compile_case(CompileCase(aot_probe.odd_block_kernel, {"x_ptr": "*fp32"}, {"BLOCK": 100}), 90)
    results["odd"] = "compiled"
except Exception as error:
    results["odd"] = type(error).__name__
print("RESULTS " + json.dumps(results))
'''


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    probe_dir = tmp_path_factory.mktemp("aot")
    (probe_dir / "aot_probe.py").write_text(KERNELS)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), str(probe_dir), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULTS "):])


@pytest.mark.parametrize("capability", ["80", "90"])
def test_compile_case_builds_ptx_for_the_target(compiled, capability):
    result = compiled[capability]
    assert result["ptx_target"], f"the PTX is not for sm_{capability}"
    assert result["num_warps"] == 2  # the case's launch options reach the compiler
    assert isinstance(result["shared"], int) and result["shared"] >= 0


def test_compile_case_reports_a_kernel_that_cannot_compile(compiled):
    assert compiled["odd"] != "compiled"


def test_pointer_types():
    assert pointer(torch.float32) == "*fp32"
    assert pointer(torch.float16) == "*fp16"
    assert pointer(torch.bfloat16) == "*bf16"
    with pytest.raises(KeyError):
        pointer(torch.int64)


def test_case_name_names_kernel_pointers_and_constexprs():
    def fake_kernel():
        pass

    case = CompileCase(fake_kernel, {"a": "*fp16", "b": "*fp32", "n": "i32"}, {"BLOCK": 64, "CAUSAL": True})
    assert case.name == "fake_kernel[*fp16,*fp32][BLOCK=64,CAUSAL=True]"
