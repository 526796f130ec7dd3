"""A forward hook that keeps the decoder's residual stream at the input of chosen layers.

`Model.forward_logits(..., decoder_setup=StreamCapture(layers))` runs the plain full-attention
forward and leaves `capture.streams[layer]`, the stream `[B, T, D]` entering each layer asked for
(the embeddings for layer 0). The grounding loss reads one layer with gradients
(minilazy/demo/grounding.py); the position probe reads every layer (minilazy/demo/position_probe.py).
"""

from __future__ import annotations

import torch

from minilazy.hooks import DecoderSetup
from minilazy.model import Model, compute_dtype


class StreamCapture:
    """A `DecoderSetupHook` for `Model.forward_logits` that keeps the residual stream at the input of `layers`."""

    def __init__(self, layers):
        self.layers, self.streams = set(layers), {}

    def _capture(self, index, update, residual, ctx):
        if index in self.layers:
            self.streams[index] = update if residual is None else update + residual  # [B, T, D]
        return update, residual, ctx

    def __call__(self, model: Model, input_ids: torch.Tensor, _lengths, width: int, _slots) -> DecoderSetup:
        dtype = compute_dtype(model.decoder.embed_tokens)  # the cache takes the projections' dtype (autocast's when on)
        return DecoderSetup.plain(model, len(input_ids), width, dtype, before_layer=self._capture)
