"""The linear layer on the CPU: oneDNN's matrix product in fp32 inference, on weights it has packed once.

torch's `F.linear` calls MKL, whose matrix-vector product reads the weights slowly on some CPUs
(AMD EPYC among them); oneDNN's is faster there, and a decode step is little more than reading
every weight once. oneDNN is faster still on weights reordered into its blocked layout
(`torch.ops.mkldnn._reorder_linear_weight`, what Inductor's CPU backend does to frozen weights).

`PackedWeights` makes that copy the first time a weight is multiplied and keeps it for as long as
both the weight and the `PackedWeights` live, so resident memory grows by one copy of every weight
the model multiplies. A lazy layer's prefill multiplies the row views of its fused q/k/v matrix
(models/fused.py) on their own, so those rows get a second packed copy. A weight changed in place
is packed again; an inference tensor has no version counter, so it is packed once.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from minilazy.kernels.cpu.memo import version
from minilazy.kernels.linear import activation_ref

ONEDNN = torch.backends.mkldnn.is_available()  # checked once, not at every product


def onednn_linear(x, weight, bias=None):
    """`x [M, K] @ weight.T + bias` by oneDNN's matmul as torch exposes it (the op Inductor's CPU backend
    emits for linear layers), with no fused activation; `weight` plain `[N, K]` or packed."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_serves(x, weight, bias=None) -> bool:
    """Whether `linear` hands `x @ weight.T` to oneDNN: fp32 inference on a CPU, weight contiguous.

    oneDNN has no autograd and no autocast, so training (gradients or bf16 autocast) keeps `F.linear`.
    """
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and weight.is_contiguous()
            and ONEDNN and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))))


def pack(weight: torch.Tensor) -> torch.Tensor:
    """oneDNN's blocked copy of a plain fp32 weight `[N, K]` (an opaque tensor; any number of rows may use it)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight)


class PackedWeights:
    """The packed copy of each weight multiplied so far, held by a weak reference to the weight.

    An entry goes when its weight does (the reference's callback holds this object weakly, so the
    copies also go with it). Trainable weights change at every optimizer step, so `get` returns them
    as they are (a validation pass in training would otherwise pack every weight again at every step).
    A plain dict on `id(weight)` rather than a weak-key dictionary: `get` runs at every product.
    """

    def __init__(self):
        self._copies: dict[int, tuple] = {}  # id(weight) -> (weak reference to it, its version, packed copy)

    def __len__(self) -> int:
        return len(self._copies)

    def __contains__(self, weight: torch.Tensor) -> bool:
        entry = self._copies.get(id(weight))
        return entry is not None and entry[0]() is weight

    def get(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.requires_grad:
            return weight
        key, now = id(weight), version(weight)
        entry = self._copies.get(key)
        if entry is None or entry[0]() is not weight or entry[1] != now:
            entry = self._copies[key] = (weakref.ref(weight, forget(self, key)), now, pack(weight))
        return entry[2]


def forget(packed: PackedWeights, key: int):
    """The callback that drops entry `key` of `packed` when its weight dies, holding `packed` weakly."""
    owner = weakref.ref(packed)

    def drop(_):
        if (copies := owner()) is not None:
            copies._copies.pop(key, None)

    return drop


def linear(packed: PackedWeights, x, weight, bias=None, activation=None):
    """`linear_ref`'s result: in fp32 inference oneDNN's product on the packed copy of the weight in
    `packed`; otherwise `F.linear`, which autograd and autocast follow."""
    if not onednn_serves(x, weight, bias):
        return activation_ref(F.linear(x, weight, bias), activation)
    n, k = weight.shape
    # oneDNN reads 2-D inputs fastest: [..., K] -> [M, K]
    y = onednn_linear(x.reshape(-1, k), packed.get(weight), bias)  # [M, N]
    return activation_ref(y.view(*x.shape[:-1], n), activation)  # [M, N] -> [..., N]
