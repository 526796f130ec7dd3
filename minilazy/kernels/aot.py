"""Ahead-of-time compilation of kernels for real GPUs, without a GPU.

Each kernel module lists the configurations its wrappers can launch as
`COMPILE_CASES`; `compile_case` builds one for a `GPUTarget` with
`triton.compile`, which works on a CPU-only machine and catches code that only
the interpreter accepts. Run it in a process without TRITON_INTERPRET.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Shared memory per block that the GPU allows (bytes), by compute capability.
SHARED_MEMORY_LIMIT = {80: 166_912, 90: 232_448}


@dataclass(frozen=True)
class CompileCase:
    """One launch configuration of one kernel: argument types and constexprs."""

    kernel: object  # a @triton.jit function
    signature: dict  # argument name -> Triton type ("*fp16", "i32", "fp32", "constexpr")
    constexprs: dict = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 3

    @property
    def name(self) -> str:
        consts = ",".join(f"{k}={v}" for k, v in sorted(self.constexprs.items()))
        ptrs = ",".join(sorted({t for t in self.signature.values() if t.startswith("*")}))
        return f"{self.kernel.__name__}[{ptrs}][{consts}]"


def compile_case(case: CompileCase, capability: int):
    """Compile `case` for sm_<capability>; returns the compiled kernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = dict(case.signature)
    for name in case.constexprs:
        signature[name] = "constexpr"
    source = ASTSource(fn=case.kernel, signature=signature, constexprs=dict(case.constexprs))
    return triton.compile(
        source,
        target=GPUTarget("cuda", capability, 32),
        options={"num_warps": case.num_warps, "num_stages": case.num_stages},
    )


TRITON_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def pointer(dtype) -> str:
    """Triton pointer type for a torch dtype, e.g. torch.float16 -> '*fp16'."""
    return "*" + TRITON_DTYPES[str(dtype).removeprefix("torch.")]
