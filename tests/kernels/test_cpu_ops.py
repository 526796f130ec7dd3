"""The backend switch: which functions each backend binds, and the CPU path's caches living in the Ops."""

import gc
import weakref

import pytest
import torch

from minilazy.kernels import OP_MODULES, Ops, resolve_backend
from minilazy.kernels.cpu import CpuOps


def test_reference_binds_the_references_and_torch_the_tuned_ops():
    reference, tuned = Ops("reference"), Ops("torch")
    for op, module_name in OP_MODULES.items():
        ref = getattr(__import__(f"minilazy.kernels.{module_name}", fromlist=[op]), f"{op}_ref")
        assert getattr(reference, op) is ref
        assert (getattr(tuned, op) is ref) == (op not in CpuOps.TUNED), op
    assert reference.cpu is None and isinstance(tuned.cpu, CpuOps)


def test_auto_is_the_cpu_path_without_cuda():
    assert resolve_backend("auto") == ("triton" if torch.cuda.is_available() else "torch")
    with pytest.raises(ValueError, match="reference"):
        resolve_backend("naive")


def test_caches_die_with_the_ops():
    """Packed weights and memos belong to one model's Ops: nothing keeps them once it is gone."""
    ops = Ops("torch")
    x, weight = torch.randn(2, 16), torch.randn(8, 16)
    positions = torch.arange(3).view(1, 3)
    with torch.inference_mode():
        ops.linear(x, weight)
        ops.rope(torch.randn(1, 3, 2, 8), positions, 10000.0)
    assert len(ops.cpu.packed) == 1
    holders = [weakref.ref(c) for c in (ops.cpu, ops.cpu.packed, ops.cpu.angles, ops.cpu.key_layouts)]
    del ops
    gc.collect()
    assert all(ref() is None for ref in holders)
