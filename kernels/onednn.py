"""oneDNN's matrix products for the CPU twins in fp32 inference, on weights it has packed once.

torch's `F.linear` calls MKL, whose matrix-vector product reads the weights at about a third of
copy bandwidth on an AMD EPYC; oneDNN's is faster there, and a decode step is little more than
reading every weight once. oneDNN is faster still on weights reordered into its blocked layout
(`torch.ops.mkldnn._reorder_linear_weight`, what Inductor's CPU backend does to frozen weights):
`python -m minilazy.bench.products` times the three.

`PackedWeights` makes that copy the first time a weight is multiplied and keeps it for as long as
the weight lives, so resident memory grows by one copy of every weight the model multiplies. A
lazy layer's prefill multiplies the row views of its fused q/k/v matrix (models/fused.py) on their
own, so those rows get a second packed copy. A weight changed in place is packed again; an
inference tensor has no version counter, so it is packed once.
"""

from __future__ import annotations

import weakref

import torch

from kernels.recent import version

ONEDNN = torch.backends.mkldnn.is_available()  # checked once, not at every product


def onednn_linear(x, weight, bias=None):
    """`x [M, K] @ weight.T + bias` by oneDNN's matmul as torch exposes it (the op Inductor's CPU backend
    emits for linear layers), with no fused activation; `weight` plain `[N, K]` or packed."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_serves(x, weight, bias=None) -> bool:
    """Whether `linear_ref` hands `x @ weight.T` to oneDNN: fp32 inference on a CPU, weight contiguous.

    oneDNN has no autograd and no autocast, so training (gradients or bf16 autocast) keeps `F.linear`.
    """
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and weight.is_contiguous()
            and ONEDNN and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))))


def pack(weight: torch.Tensor) -> torch.Tensor:
    """oneDNN's blocked copy of a plain fp32 weight `[N, K]` (an opaque tensor; any number of rows may use it)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight)


class PackedWeights:
    """The packed copy of each weight multiplied so far, keyed by the weight tensor itself.

    Trainable weights change at every optimizer step, so `get` returns them as they are (a validation
    pass in training would otherwise pack every weight again at every step).
    """

    def __init__(self):
        self._copies: dict[int, tuple[int | None, torch.Tensor]] = {}  # id(weight) -> (its version, packed copy)

    def __len__(self) -> int:
        return len(self._copies)

    def __contains__(self, weight: torch.Tensor) -> bool:
        return id(weight) in self._copies

    def get(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.requires_grad:
            return weight
        key, now = id(weight), version(weight)
        entry = self._copies.get(key)
        if entry is None:  # the entry goes with the weight, so its id is never reused while listed
            weakref.finalize(weight, self._copies.pop, key, None)
        if entry is None or entry[0] != now:
            entry = self._copies[key] = (now, pack(weight))
        return entry[1]


PACKED = PackedWeights()
