"""One request's prefill, run a chunk at a time across engine steps, so that running streams keep decoding
between the chunks of a long prompt.

A `Prefill` is made when the request's turn to prefill comes (its image goes through the vision tower
then): it holds the prompt's embeddings, the setup of its cache row (`CacheRows.prefill_setup`, the one
`generate()` builds for it alone) and how far it has got. Each `run_chunk` is one forward pass over the
next `chunk` tokens, the same chunks `generate()`'s `prefill` takes (minilazy/generate.py), so the
request still gets exactly its tokens.
"""

from __future__ import annotations

import torch

from minilazy.generate import image_features_for, image_grids, padded_prompts, prefill_chunk
from minilazy.model import Model
from minilazy.serve.rows import CacheRows
from minilazy.serve.sequence import Sequence


class Prefill:
    def __init__(self, model: Model, rows: CacheRows, seq: Sequence, chunk: int):
        self.model = model
        ids, self.lengths = padded_prompts(model, [seq.request])  # [1, T], [1]
        self.x = model.embed(ids, image_features_for(model, [seq.request]))  # [1, T, D]
        self.mrope = model.rope_positions(ids, self.lengths, image_grids([seq.request]))  # None: plain RoPE
        self.width = ids.shape[1]
        chunk = min(chunk, self.width)
        self.setup = rows.prefill_setup(seq.row, ids, self.lengths, seq.prompt_tokens + seq.params.max_new_tokens,
                                        chunk)
        self.chunk = self.setup.prefill_chunk or chunk  # FastV takes the whole prompt at once
        self.start = 0  # tokens prefilled so far
        self.last_hidden = torch.zeros(1, self.x.shape[-1], dtype=self.x.dtype, device=self.x.device)

    @property
    def next_tokens(self) -> int:
        """Tokens the next chunk takes."""
        return min(self.chunk, self.width - self.start)

    @property
    def done(self) -> bool:
        return self.start >= self.width

    def run_chunk(self) -> None:
        self.last_hidden = prefill_chunk(self.model, self.x, self.lengths, self.setup, self.start, self.chunk,
                                         self.last_hidden, self.mrope)
        self.start += self.chunk

    @property
    def rope_delta(self) -> int:
        """Multimodal RoPE: a generated token at slot n has position n + rope_delta (0 for plain RoPE)."""
        return 0 if self.mrope is None else int(self.mrope.delta[0])

    def logits(self) -> torch.Tensor:
        """The logits `[1, V]` of the prompt's last token, once `done`."""
        return self.model.decoder.logits(self.last_hidden)
