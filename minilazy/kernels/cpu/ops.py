"""`CpuOps`: the tuned CPU path's ops for one model, with the caches they keep.

The ops that derive something per step (key layouts, masks, RoPE angles, cache rows) or per weight
(oneDNN's packed copies) keep it in caches held here, one set per `CpuOps`. `Ops("torch")` makes
one per model, so the caches go when the model's `Ops` does; nothing is kept at module level.
"""

from __future__ import annotations

from functools import partial

from minilazy.kernels.cpu import attention, decode, onednn, pointwise
from minilazy.kernels.cpu.memo import Recent


class CpuOps:
    """The tuned ops as attributes with the signatures of their references (`CpuOps().linear(x, w)`).

    `TUNED` names them; every other op of minilazy/kernels/ is its reference on the CPU path.
    """

    TUNED = ("linear", "rms_norm", "rope", "kv_write", "attention", "decode_attention",
             "lazy_decode_attention", "merge_attention")

    def __init__(self):
        self.packed = onednn.PackedWeights()  # oneDNN's copy of each weight multiplied
        self.key_layouts = Recent(size=4)  # every layer of a step reads its keys by the same key_slots, kv_len
        self.masks = Recent(size=4)  # and masks the same key lists
        self.image_weights = Recent(size=8)  # the lazy layers of one anchor share its image weights in a step
        self.angles = Recent(size=2)  # every layer rotates by the step's positions (a lazy layer's text keys by a second)
        self.rows = Recent(size=4)  # every layer writes its keys and values at the step's slots
        self.linear = partial(onednn.linear, self.packed)
        self.rms_norm = pointwise.rms_norm
        self.rope = partial(pointwise.rope, self.angles)
        self.kv_write = partial(pointwise.kv_write, self.rows)
        self.attention = partial(attention.attention, self.key_layouts)
        self.decode_attention = partial(decode.decode_attention, self.key_layouts, self.masks)
        self.lazy_decode_attention = partial(decode.lazy_decode_attention, self.key_layouts, self.image_weights)
        self.merge_attention = pointwise.merge_attention

    def __repr__(self) -> str:
        return f"CpuOps({len(self.packed)} packed weights)"
