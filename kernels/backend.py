"""The one backend switch: Triton kernels or their plain-PyTorch twins.

Every op lives in its own module of `kernels/` as a Triton wrapper `<op>()` and
a torch twin `<op>_ref()` with the same signature. `Ops(backend)` binds one of
the two for every op, so model code calls `ops.linear(...)` and never decides
per call. Nothing here is global: each model holds its own `Ops`, and tests
build one per backend.
"""

from __future__ import annotations

import importlib
import os

import torch

# op name -> module of kernels/ that defines `<op>` (Triton) and `<op>_ref` (torch)
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
    "decode_attention_from_logits": "decode_from_logits",
    "merge_attention": "merge_attention",
}

BACKENDS = ("auto", "torch", "triton")
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
    """Every op of kernels/, bound to one backend: `Ops("torch").linear(x, w)`."""

    def __init__(self, backend: str = "auto"):
        self.backend = resolve_backend(backend)
        suffix = "" if self.backend == "triton" else "_ref"
        for op, module_name in OP_MODULES.items():
            module = importlib.import_module(f"kernels.{module_name}")
            setattr(self, op, getattr(module, op + suffix))

    def __repr__(self) -> str:
        return f"Ops({self.backend!r})"
