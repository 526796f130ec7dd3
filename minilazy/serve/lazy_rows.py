"""The engine's storage under a `LazyRuntime` (a lazy plan, FastV or VTW): cache rows plus each row's lazy tables.

A lazy plan needs, per sequence, more than keys and values: which of its slots hold image tokens, the
slots of its text keys (lazy layers keep keys of text slots only), how many there are, and, for the
decode fast path, each anchor's logits over every slot (its lazy layers read the image slots' ones).
FastV and VTW split the layers in two segments (before and from their layer), each with its own token
set and tables, and remember how many tokens each sequence dropped. `LazyRows` keeps all of these as
per-row tables, allocated once beside the KV storage and the Q Cache ring:

- a prefill builds the runtime's own one-row setup (`LazyRuntime.__call__`, exactly what `generate()`
  builds) over views of its row's KV storage and the shared Q Cache, and once its last chunk is done
  copies the small tables of that setup's lazy states into its row (`prefilled`); until then the row
  takes no part in decode steps;
- a decode step builds lazy states over views of rows `0 .. n-1` of the tables
  (`LazyState.over`) and the layers' attention bound to them: one batched forward pass, whose text
  keys and counts land in the tables in place;
- `release` clears a row's tables, so that an idle row in a batch has no image or text keys.

A request is priced by the cache `generate()` would allocate for it alone (`cache_shapes`, `cache_bytes`):
the same budget holds more sequences the more a plan saves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minilazy.fastv import FastVPruning
from minilazy.generate import Request
from minilazy.hooks import DecoderSetup
from minilazy.kv_cache import KVCache, cache_bytes
from minilazy.lazy.runtime import LazyRuntime, Segment, cache_shapes
from minilazy.lazy.state import LazyState
from minilazy.model import Model
from minilazy.serve.rows import CacheRows


@dataclass
class RowTables:
    """One segment's lazy tables, row r for the sequence in cache row r."""

    layers: range
    is_image: torch.Tensor  # [rows, slots] bool: the slots that hold image tokens
    text_slots: torch.Tensor  # [rows, slots] int32: slot of each text key, in order
    n_text: torch.Tensor  # [rows] int32: text keys so far
    image_logits: dict[int, torch.Tensor]  # anchor -> [rows, H, slots] fp32 (normal tensors), decode fast path

    @classmethod
    def allocate(cls, layers: range, rows: int, slots: int, heads: int, anchors: list[int], device) -> RowTables:
        with torch.inference_mode(False):  # normal tensors: version counters tell the CPU path a new step's logits
            logits = {a: torch.zeros(rows, heads, slots, dtype=torch.float32, device=device) for a in anchors}
        return cls(layers, torch.zeros(rows, slots, dtype=torch.bool, device=device),
                   torch.zeros(rows, slots, dtype=torch.int32, device=device),
                   torch.zeros(rows, dtype=torch.int32, device=device), logits)

    def state(self, n_rows: int, q_cache: torch.Tensor) -> LazyState:
        """A lazy state over rows `0 .. n_rows - 1` (views: what the step writes lands here)."""
        return LazyState.over(self.is_image[:n_rows], q_cache, self.text_slots[:n_rows], self.n_text[:n_rows],
                              {a: t[:n_rows] for a, t in self.image_logits.items()}, self.is_image.shape[1])

    def store(self, row: int, state: LazyState) -> None:
        """Keep the tables of a one-row `state` (a prefill's) in row `row`."""
        self.clear(row)
        self.is_image[row, : state.is_image.shape[1]] = state.is_image[0]
        self.text_slots[row, : state.text_slots.shape[1]] = state.text_slots[0]
        self.n_text[row] = state.n_text[0]

    def clear(self, row: int) -> None:
        self.is_image[row] = False
        self.n_text[row] = 0


class LazyRows(CacheRows):
    def __init__(self, model: Model, runtime: LazyRuntime, rows: int, slots: int, prefill_chunk: int):
        self.model, self.runtime = model, runtime
        self.plan = plan = runtime.resolved_plan(model)
        cfg = model.config.text
        num_layers, fastv = cfg.num_hidden_layers, runtime.fastv
        bounds = [0, num_layers] if fastv is None else [0, fastv.layer, num_layers]
        segments = [range(a, b) for a, b in zip(bounds, bounds[1:])]
        # a row may hold only text tokens: lazy layers get key slots for every slot
        worst = [Segment(layers, slots, slots, torch.zeros(1)) for layers in segments]
        cache = KVCache.allocate(cache_shapes(plan, worst), rows, cfg.num_key_value_heads, cfg.head_dim, model.dtype,
                                 model.device)
        super().__init__(model, rows, slots, cache)
        chunk = slots if fastv is not None else min(prefill_chunk, slots)  # FastV prefills a prompt at once
        self.q_cache = torch.empty(plan.depth, max(rows, chunk), cfg.num_attention_heads, cfg.head_dim,
                                   dtype=model.dtype, device=model.device)  # [R, T_max, H, d]
        self.tables = [RowTables.allocate(layers, rows, slots, cfg.num_attention_heads,
                                          runtime.fast_decode_anchors(plan, layers), model.device)
                       for layers in segments]
        self.dropped = torch.zeros(rows, dtype=torch.long, device=model.device)  # FastV: tokens each row dropped
        self.prefills: dict[int, tuple] = {}  # row -> (lazy states, FastV pruning) of its prefill in progress
        self.decoding: tuple[int, DecoderSetup] | None = None  # the decode setup of the first n rows, while valid

    def need(self, request: Request, max_new_tokens: int) -> int:
        """The KV bytes of the cache `generate()` allocates for `request` alone with `max_new_tokens` new tokens.
        Counted on the CPU: an HTTP handler prices a request while the engine's kernels run on the GPU."""
        model, cfg = self.model, self.model.config.text
        n = len(request.input_ids)
        ids = torch.tensor([request.input_ids])  # [1, T]
        lengths = torch.tensor([n])
        is_image = self.runtime.image_slots_mask(model, ids, lengths, n + max_new_tokens)
        sizes = self.runtime.segment_sizes(self.plan, is_image, lengths, n + max_new_tokens)
        return cache_bytes(cache_shapes(self.plan, sizes), 1, cfg.num_key_value_heads, cfg.head_dim,
                           model.dtype.itemsize)

    def prefill_setup(self, row: int, ids: torch.Tensor, lengths: torch.Tensor, total: int,
                      chunk: int) -> DecoderSetup:
        setup = self.runtime(self.model, ids, lengths, total, chunk, cache=self.view(row, row + 1),
                             q_cache=self.q_cache)
        self.prefills[row] = (self.runtime.states, self.runtime.pruning)  # the runtime's next call replaces them
        return setup

    def prefilled(self, row: int) -> None:
        self.decoding = None  # the row's image slots join the decode setup's lazy states
        states, pruning = self.prefills.pop(row)
        for tables, state in zip(self.tables, states):
            tables.store(row, state)
        if pruning is not None and pruning.dropped is not None:  # None: VTW at the last layer prunes nothing
            self.dropped[row] = pruning.dropped[0]

    def decode_setup(self, n_rows: int) -> DecoderSetup:
        """The setup of a decode step over the first `n_rows` rows, built once and reused until a row is
        prefilled or released: its lazy states are views of the rows' tables, which steps update in place."""
        if self.decoding is None or self.decoding[0] != n_rows:
            self.decoding = (n_rows, self.build_decode_setup(n_rows))
        return self.decoding[1]

    def build_decode_setup(self, n_rows: int) -> DecoderSetup:
        segments = [(tables.layers, tables.state(n_rows, self.q_cache)) for tables in self.tables]
        attention = self.runtime.attention(self.model, self.plan, segments)
        pruning = None
        if self.runtime.fastv is not None:  # decode steps only map slots past the pruning onto the pruned caches
            pruning = FastVPruning(self.runtime.fastv, self.tables[0].is_image[:n_rows], None)
            pruning.dropped = self.dropped[:n_rows]
        return DecoderSetup(self.view(0, n_rows), attention, pruning)

    def release(self, row: int) -> None:
        self.decoding = None
        self.prefills.pop(row, None)
        for tables in self.tables:
            tables.clear(row)
        self.dropped[row] = 0
