"""The CPU path's linear layer (minilazy/kernels/cpu/onednn.py): oneDNN on packed weights in fp32 inference, F.linear otherwise."""

import gc
import math

import pytest
import torch

from minilazy.kernels.cpu import CpuOps, onednn
from minilazy.kernels.linear import ACTIVATIONS, linear_ref
from tests.helpers import assert_close
from tests.kernels.test_linear import SHAPES, _inputs


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("inference", [False, True], ids=["grad mode", "inference"])
def test_linear_matches_reference(m, k, n, activation, inference):
    x, weight, b = _inputs(m, k, n, torch.float32)
    with torch.inference_mode(inference):
        assert_close(CpuOps().linear(x, weight, b, activation), linear_ref(x, weight, b, activation), 1e-5, 1e-5,
                     f"linear {activation}")


@pytest.mark.parametrize("lead", [(1,), (2, 3), (1, 1)])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_fp32_weights_go_through_onednn(lead, activation, monkeypatch):
    """In fp32 inference the product goes to oneDNN (checked by counting its calls) and gives plain
    math's answer for any leading shape, with or without bias."""
    calls = []
    onednn_linear = onednn.onednn_linear
    monkeypatch.setattr(onednn, "onednn_linear", lambda *a: calls.append(1) or onednn_linear(*a))
    x, weight, b = _inputs(math.prod(lead), 113, 37, torch.float32)
    x = x.view(*lead, 113)
    ops = CpuOps()
    expected = linear_ref(x.double(), weight.double(), b.double(), activation)
    with torch.inference_mode():
        for bias in (b, None):
            y = ops.linear(x, weight, bias, activation)
            want = expected if bias is not None else linear_ref(x.double(), weight.double(), None, activation)
            assert y.shape == (*lead, 37) and y.dtype == torch.float32
            assert_close(y, want, 1e-5, 1e-5, "oneDNN linear")
    assert len(calls) == 2


def test_training_keeps_f_linear():
    """Gradients and bf16 autocast (the demo training) need F.linear: oneDNN is not used for them."""
    x, weight, b = _inputs(3, 40, 24, torch.float32)
    ops = CpuOps()
    assert onednn.onednn_serves(x, weight)
    assert not onednn.onednn_serves(x, weight, b.clone().requires_grad_())
    assert not onednn.onednn_serves(x, weight.requires_grad_())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn.onednn_serves(x, weight.detach())
        assert ops.linear(x, weight.detach(), b).dtype == torch.bfloat16
    assert not onednn.onednn_serves(x.double(), weight.double())
    ops.linear(x, weight, b, "gelu").sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert len(ops.packed) == 0


def test_each_inference_weight_is_packed_once(monkeypatch):
    """oneDNN's packed copy is made at a weight's first product, reused after, made again when the
    weight changes in place, dropped with the weight, and never made for a trainable weight."""
    packs = []
    monkeypatch.setattr(onednn, "pack", lambda w: packs.append(1) or torch.ops.mkldnn._reorder_linear_weight(w))
    ops = CpuOps()
    packed = ops.packed
    x, weight, b = _inputs(4, 113, 37, torch.float32)
    with torch.inference_mode():
        first = ops.linear(x, weight, b)
        assert_close(ops.linear(x, weight, b), first, 0, 0, "reused copy")
    assert len(packs) == 1 and weight in packed and len(packed) == 1
    weight.mul_(2)
    with torch.no_grad():
        assert_close(ops.linear(x, weight, b), 2 * first - b, 1e-5, 1e-5, "after an in-place change")
    assert len(packs) == 2
    del weight
    gc.collect()
    assert len(packed) == 0
    trainable = _inputs(4, 113, 37, torch.float32)[1].requires_grad_()
    with torch.no_grad():  # a validation pass during training
        assert_close(ops.linear(x, trainable), x @ trainable.T, 1e-5, 1e-5, "trainable weight")
    assert len(packs) == 2 and len(packed) == 0


def test_each_ops_packs_its_own_copies():
    """Two models' Ops share no packed copy: each packs the weights it multiplies."""
    x, weight, b = _inputs(2, 40, 24, torch.float32)
    first, second = CpuOps(), CpuOps()
    with torch.inference_mode():
        first.linear(x, weight, b)
    assert weight in first.packed and weight not in second.packed
