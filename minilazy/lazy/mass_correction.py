"""The per-head mass correction of lazy layers, calibrated with full attention.

A lazy layer merges two parts by their log-sum-exp: the inherited logits over image keys
(`q_a . K_a`, the anchor's) and its own over text keys. The inherited logits come from another layer,
so their scale against the layer's own text logits decides how much attention mass the image gets.
The offset `b[l, h] = mean(own image LSE of layer l) - mean(image LSE of its anchor a)`, both over the
calibration text queries of head h, is added to the inherited part's LSE before the merge: on average
the image then gets the mass the layer's own logits would give it. Means suffice: the offset is the
mean of the per-query differences, and the difference of means is the same number.
"""

from __future__ import annotations

import torch

from minilazy.lazy.plan import LayerPlan


def image_lse_means(records: list, num_layers: int) -> torch.Tensor:
    """Mean log-sum-exp of each layer's logits over the image keys, per head, `[L, H]`, from the records of
    `RecordingAttention` (`(layer, probabilities, image_lse [Tq, H])`)."""
    return torch.stack([torch.cat([lse for layer, _, lse in records if layer == l]).mean(0)
                        for l in range(num_layers)])  # [L, H]


def with_mass_offsets(plan: LayerPlan, image_lse: torch.Tensor) -> LayerPlan:
    """`plan` with the offset of every lazy layer, `image_lse [L, H]` of the layer minus its anchor's."""
    if plan.scope != "visual":
        return plan
    offsets = tuple(tuple((image_lse[l] - image_lse[plan.anchors[l]]).tolist()) if plan.is_lazy(l) else ()
                    for l in range(plan.num_layers))
    return LayerPlan(plan.anchors, plan.depth, plan.scope, offsets)
