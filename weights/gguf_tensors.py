"""Reading a GGUF file: metadata values, and tensors dequantised into Hugging Face orientation.

GGUF (llama.cpp's format) lists tensor shapes innermost-first, so a linear
weight stored as `[in, out]` in the file is the `[out, in]` matrix that
PyTorch and Hugging Face use. Quantised tensors are blocks of packed integers
with per-block scales; the `gguf` package's reference dequantisation turns
them back into float32.

llama.cpp's converter also permutes the rows of the query and key projections
of Llama models, so that its RoPE (which rotates adjacent pairs `(x0, x1)`)
gives the same result as Hugging Face's (which rotates the two halves
`(x_i, x_{i+d/2})`). `unpermute_qk` undoes that.

Reference: llama.cpp `convert_hf_to_gguf.py` (`LlamaModel.permute`) and
`gguf-py/gguf/quants.py`.
"""

from __future__ import annotations

import numpy as np
import torch

from minilazy.errors import InputError

try:
    import gguf
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("reading GGUF files needs the `gguf` package: pip install gguf") from e

SUPPORTED_TYPES = {
    gguf.GGMLQuantizationType.F32,
    gguf.GGMLQuantizationType.F16,
    gguf.GGMLQuantizationType.Q4_0,
    gguf.GGMLQuantizationType.Q4_1,
    gguf.GGMLQuantizationType.Q8_0,
}

_MISSING = object()


def metadata_value(reader: gguf.GGUFReader, key: str, default=_MISSING):
    """The value of one metadata key (a Python scalar, string or list); `default` when absent."""
    field = reader.fields.get(key)
    if field is None:
        if default is _MISSING:
            raise InputError(f"the GGUF file has no metadata key {key!r}, which a Llama checkpoint needs")
        return default
    return field.contents()


def dequantize_tensor(tensor: gguf.ReaderTensor) -> torch.Tensor:
    """One GGUF tensor as a float32 torch tensor in PyTorch orientation (`[out, in]` for a matrix)."""
    qtype = tensor.tensor_type
    if qtype not in SUPPORTED_TYPES:
        supported = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
        raise InputError(
            f"tensor {tensor.name!r} has quantisation type {qtype.name}, which is not supported; "
            f"supported types: {supported}"
        )
    values = gguf.quants.dequantize(tensor.data, qtype)  # float32, rows of the innermost dimension
    torch_shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists shapes innermost-first
    # A copy: float32 tensors come back as read-only views of the memory-mapped file.
    return torch.from_numpy(np.array(values, dtype=np.float32).reshape(torch_shape))  # flat -> torch's shape


def unpermute_qk(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's row permutation of a query or key projection `[n_heads * head_dim, in]`.

    llama.cpp stores, per head, the rows in the order (pair index, member) of
    its interleaved RoPE; Hugging Face wants (member, pair index) -- the two
    halves of the head one after the other.
    """
    out_features, in_features = weight.shape
    if out_features % (2 * n_heads):
        raise InputError(f"cannot un-permute a [{out_features}, {in_features}] projection into {n_heads} heads "
                         f"of even size: rows must be a multiple of 2 * n_heads = {2 * n_heads}")
    half = out_features // n_heads // 2
    per_pair = weight.reshape(n_heads, half, 2, in_features)  # [n, head_dim/2, 2, in]
    return per_pair.transpose(1, 2).reshape(out_features, in_features)  # [n * 2 * head_dim/2, in]
