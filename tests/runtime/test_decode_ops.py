"""How many torch ops one decode step issues per layer on the torch path.

On the CPU a decode step at batch 1 costs as much in op count as in work (each small op costs a
few microseconds of dispatch), so the CPU path computes what depends only on the step (RoPE angles,
cache-row indices, key masks) once per step, not once per layer (minilazy/kernels/cpu/memo.py). These
bounds (about 10% above today's counts) fail if that stops: without the memo a full-attention
layer of this model issued 96 ops a step and a lazy one 182 (fast path) or 154.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from minilazy.generate import Request, generate
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.model import Model
from minilazy.sampler import SamplingParams
from tests.runtime.tiny_models import save_llama

LAYERS = 6


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_llama(path, layers=LAYERS)
    return Model.from_pretrained(path, backend="torch")


def ops_in_one_decode_step(model, layout, batch=3) -> int:
    """Ops of the third decode step (the first steps build what later steps reuse)."""
    counter, calls = CountOps(), {"n": 0}

    def on_tokens(_):  # call k follows token k; decode step k runs between calls k and k + 1
        calls["n"] += 1
        if calls["n"] == 3:
            counter.__enter__()
        elif calls["n"] == 4:
            counter.__exit__(None, None, None)

    prompt = Request(list(range(3, 20)))
    generate(model, [prompt] * batch, SamplingParams(max_new_tokens=6), on_tokens=on_tokens, decoder_setup=layout)
    return counter.count


def test_full_attention_decode_ops_per_layer(model):
    per_layer = ops_in_one_decode_step(model, None) / LAYERS
    # at least the layer's own work: two norms, four projections, two rotations, two cache writes, attention
    assert 12 <= per_layer <= 72, f"{per_layer:.0f} ops per layer in a full-attention decode step"


@pytest.mark.parametrize("fast_decode", [True, False], ids=["fast", "nofast"])
def test_lazy_decode_ops_per_layer(model, fast_decode):
    mask = torch.zeros(3, 17, dtype=torch.bool)
    mask[:, 2:12] = True  # tokens 2..11 stand in for an image
    runtime = LazyRuntime(LayerPlan((0, 0, 0, 3, 3, 3)), fast_decode=fast_decode, image_mask=mask)
    per_layer = ops_in_one_decode_step(model, runtime) / LAYERS
    assert 12 <= per_layer <= (101 if fast_decode else 113), \
        f"{per_layer:.0f} ops per layer in a lazy decode step (fast path {fast_decode})"
