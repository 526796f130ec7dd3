"""The tuned CPU path: what `Ops("torch")` binds, each op giving its reference's result faster on a CPU.

The references (`<op>_ref` in minilazy/kernels/<op>.py) are plain torch math to check by eye; this package
holds what makes the same results fast on a CPU, one concern per module:

- `onednn`: the linear layer by oneDNN on packed copies of the weights (fp32 inference);
- `key_list`: the key list read from the KV cache in place where it can be, in bucketed shapes;
- `attention`: attention over a cache by torch's fused flash attention;
- `decode`: decode attention (fused, or by hand when the logits are written out) and its read of
  stored logits;
- `pointwise`: RoPE, KV writes, RMSNorm and the merge of partial attentions with fewer ops;
- `memo`: `Recent`, the per-step memo of values derived from step-level tensors;
- `ops`: `CpuOps`, which binds the tuned ops to one set of caches, owned by one model's `Ops`.

The other ops (swiglu, layer_norm, embedding, merge_image_features, patch_embed) are their
references on this path too.
"""

from minilazy.kernels.cpu.ops import CpuOps

__all__ = ["CpuOps"]
