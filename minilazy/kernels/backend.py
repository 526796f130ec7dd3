"""The one backend switch: Triton kernels, the tuned CPU path, or the plain-PyTorch references.

Every op lives in its own module of `minilazy/kernels/` as a Triton wrapper `<op>()` and
a torch reference `<op>_ref()` with the same signature; `minilazy/kernels/cpu/` computes
the references' results fast on a CPU. `Ops(backend)` binds one of the three
for every op, so model code calls `ops.linear(...)` and never decides per call:

- "triton": the Triton kernels (a CUDA GPU, or Triton's CPU interpreter);
- "torch": the tuned CPU path (`kernels.cpu.CpuOps`), the default without CUDA;
- "reference": the references, slow and plain, to check the others against;
- "auto": "triton" on CUDA, "torch" otherwise.

Nothing here is global: each model holds its own `Ops`, and the caches of the
CPU path (packed weights, per-step memos) live in that `Ops` and go with it.
"""

from __future__ import annotations

import importlib
import os

import torch

# op name -> module of minilazy/kernels/ that defines `<op>` (Triton) and `<op>_ref` (the reference)
OP_MODULES = {
    "linear": "linear",
    "swiglu": "swiglu",
    "rms_norm": "rms_norm",
    "layer_norm": "layer_norm",
    "rope": "rope",
    "embedding": "embedding",
    "merge_image_features": "embedding",
    "kv_write": "kv_write",
    "patch_embed": "patch_embed",
    "attention": "attention",
    "decode_attention": "decode_attention",
    "merge_attention": "merge_attention",
    "lazy_decode_attention": "lazy_decode_attention",
}

BACKENDS = ("auto", "triton", "torch", "reference")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what every op takes for activations and weights
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # their names on command lines


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str = "auto") -> str:
    """Map 'auto' to 'triton' on CUDA and 'torch' otherwise; check the name."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "triton" if torch.cuda.is_available() else "torch"
    if backend == "triton" and not (torch.cuda.is_available() or interpreting()):
        raise RuntimeError(
            "the triton backend needs a CUDA GPU, or TRITON_INTERPRET=1 to run the "
            "kernels in Triton's CPU interpreter (slow); use --backend torch on CPU"
        )
    return backend


class Ops:
    """Every op of minilazy/kernels/, bound to one backend: `Ops("torch").linear(x, w)`."""

    def __init__(self, backend: str = "auto"):
        from minilazy.kernels.cpu import CpuOps  # imported here: it imports the op modules, which import this one

        self.backend = resolve_backend(backend)
        self.cpu = CpuOps() if self.backend == "torch" else None  # the CPU path's ops and their caches
        for op, module_name in OP_MODULES.items():
            if self.cpu is not None and op in CpuOps.TUNED:
                setattr(self, op, getattr(self.cpu, op))
            else:
                module = importlib.import_module(f"minilazy.kernels.{module_name}")
                setattr(self, op, getattr(module, op if self.backend == "triton" else op + "_ref"))

    def __repr__(self) -> str:
        return f"Ops({self.backend!r})"
