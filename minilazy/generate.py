"""Batched generation: `prefill` (in chunks), then one `decode_step` per token, composed by `generate`.

Requests of different lengths share one call: prompts are right-padded to the
longest, every sequence keeps its own slots and lengths, and the KV cache is
allocated once for `longest prompt + max_new_tokens` slots before the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from minilazy.errors import InputError
from minilazy.hooks import DecoderSetup, DecoderSetupHook
from minilazy.kv_cache import full_attention_bytes
from minilazy.model import Model
from minilazy.mrope import MRopePositions
from minilazy.sampler import Sampler, SamplingParams
from minilazy.step import Step

PREFILL_CHUNK = 4096  # prompt tokens per prefill forward pass, by default


@dataclass
class Request:
    """One prompt: token ids (image tokens already expanded) and the pixel values of its images."""

    input_ids: list[int]
    pixel_values: torch.Tensor | None = None  # [N, 3, S, S]; Qwen2-VL: [patches, C * t * p * p]
    image_grid: torch.Tensor | None = None  # Qwen2-VL: [n_images, 3] (t, h, w) patches of each image


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    kv_cache_bytes: int = 0
    decode_steps: int = 0
    batch: int = 1
    cache_slots: int = 0  # slots per sequence the cache was allocated for (longest prompt + max new tokens)
    full_attention_kv_bytes: int = 0  # what the plain model's cache of as many slots takes

    @property
    def kv_saved(self) -> float:
        """The share of the plain model's KV cache that this call did not need."""
        return 1 - self.kv_cache_bytes / self.full_attention_kv_bytes


@dataclass
class Generation:
    tokens: list[list[int]]  # generated ids per request (stop token excluded)
    stats: GenerationStats
    prefill_logits: torch.Tensor  # [B, V] logits that chose the first new token


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a timing covers it (CUDA runs kernels asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def image_features_for(model: Model, requests: list[Request]) -> torch.Tensor | None:
    """Features of every request's images, concatenated in request order."""
    parts = [model.image_features(r.pixel_values, r.image_grid) for r in requests if r.pixel_values is not None]
    return torch.cat(parts) if parts else None


def image_grids(requests: list[Request]) -> torch.Tensor | None:
    """The patch grids `[n_images, 3]` of every request's images, in request order (None: no grids)."""
    grids = [r.image_grid for r in requests if r.image_grid is not None]
    return torch.cat(grids) if grids else None


def padded_prompts(model: Model, requests: list[Request]) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts right-padded with zeros, `ids [B, T]`, and their lengths `[B]`; refuses an empty one."""
    if not requests:
        raise InputError("no requests to generate for")
    lengths = torch.tensor([len(r.input_ids) for r in requests], device=model.device)
    if int(lengths.min()) == 0:
        raise InputError("empty prompt: nothing to generate from")
    ids = torch.zeros(len(requests), int(lengths.max()), dtype=torch.long, device=model.device)
    for b, r in enumerate(requests):
        ids[b, : len(r.input_ids)] = torch.tensor(r.input_ids, device=model.device)
    return ids, lengths


def prefill(model: Model, x: torch.Tensor, lengths: torch.Tensor, setup: DecoderSetup, chunk: int,
            mrope: MRopePositions | None = None) -> torch.Tensor:
    """Run the prompts' embeddings `x [B, T, D]` (real lengths `lengths [B]`) through the decoder in chunks
    of `chunk` tokens, filling the caches of `setup`; returns the logits `[B, V]` of each last prompt token.
    `mrope`: the positions of a model with multimodal RoPE (`Model.rope_positions`)."""
    last_hidden = torch.zeros(x.shape[0], x.shape[-1], dtype=x.dtype, device=x.device)
    for c0 in range(0, x.shape[1], chunk):
        last_hidden = prefill_chunk(model, x, lengths, setup, c0, chunk, last_hidden, mrope)
    return model.decoder.logits(last_hidden)  # [B, V]


def prefill_chunk(model: Model, x: torch.Tensor, lengths: torch.Tensor, setup: DecoderSetup, c0: int, chunk: int,
                  last_hidden: torch.Tensor, mrope: MRopePositions | None = None) -> torch.Tensor:
    """Tokens `c0 .. c0 + chunk - 1` of `prefill`'s prompts through the decoder; returns `last_hidden [B, D]`
    with the last prompt token's hidden state of each sequence whose prompt ends in this chunk."""
    batch, width, _ = x.shape
    step = Step.span(torch.full_like(lengths, c0), (lengths - c0).clamp(0, chunk), min(chunk, width - c0), mrope)
    hidden, final = model.decoder.forward(x[:, c0 : c0 + chunk], setup.context(step))
    ends_here = (lengths - 1 >= c0) & (lengths - 1 < c0 + chunk)
    rows = (final.step.q_len.long() - 1).clamp(min=0)  # last token of each sequence (after any pruning)
    return torch.where(ends_here[:, None], hidden[torch.arange(batch), rows], last_hidden)


def decode_step(model: Model, tokens: torch.Tensor, kv_len: torch.Tensor, setup: DecoderSetup,
                live: torch.Tensor | None = None, mrope: MRopePositions | None = None) -> torch.Tensor:
    """One new token per sequence, `tokens [B]`, written at slot `kv_len [B]`; returns the next logits `[B, V]`.

    `live [B]` (bool, default all) leaves out the rows that take no token this step (a serving engine's idle
    rows): they write nothing and their logits are meaningless. `mrope`: as in `prefill`."""
    step = Step.span(kv_len, torch.ones_like(kv_len) if live is None else live.to(kv_len.dtype), 1, mrope)
    hidden, _ = model.decoder.forward(model.decoder.embed(tokens[:, None]), setup.context(step))
    return model.decoder.logits(hidden[:, 0])


@torch.inference_mode()
def generate(model: Model, requests: list[Request], params: SamplingParams, stop_ids=(), on_tokens=None,
             on_logits=None, prefill_chunk: int = PREFILL_CHUNK,
             decoder_setup: DecoderSetupHook | None = None) -> Generation:
    """Generate for every request; `on_tokens(step_tokens [B])` streams each step's tokens
    (-1 for a sequence that has stopped) and `on_logits(logits [B, V])` sees the logits each
    step samples from.

    `decoder_setup` builds the KV cache and per-layer hooks of a feature such as Lazy Attention or
    FastV (minilazy/hooks.py); by default every layer is plain and keeps keys and values for every slot.
    """
    ids, lengths = padded_prompts(model, requests)
    text = model.config.text
    batch, width = ids.shape
    total = width + params.max_new_tokens
    if total > text.max_position_embeddings:
        raise InputError(f"prompt ({width} tokens) plus {params.max_new_tokens} new tokens exceeds the model's "
                         f"context window of {text.max_position_embeddings} tokens")

    stats = GenerationStats(prompt_tokens=int(lengths.sum()), batch=batch, cache_slots=total,
                            full_attention_kv_bytes=full_attention_bytes(model.config, batch, total,
                                                                         model.dtype.itemsize))
    start = time.perf_counter()
    x = model.embed(ids, image_features_for(model, requests))
    mrope = model.rope_positions(ids, lengths, image_grids(requests))
    chunk = min(prefill_chunk, width)
    if decoder_setup is None:
        setup = DecoderSetup.plain(model, batch, total)
    else:
        setup = decoder_setup(model, ids, lengths, total, chunk)
        chunk = setup.prefill_chunk or chunk
    stats.kv_cache_bytes = setup.cache.nbytes
    logits = prefill_logits = prefill(model, x, lengths, setup, chunk, mrope)
    synchronize(model.device)
    stats.prefill_seconds = time.perf_counter() - start

    sampler = Sampler(params, model.device)
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=model.device)
    out = torch.zeros(batch, params.max_new_tokens, dtype=torch.long, device=model.device)
    done = torch.zeros(batch, dtype=torch.bool, device=model.device)
    produced = torch.zeros(batch, dtype=torch.long, device=model.device)
    kv_len = lengths.clone()
    start = time.perf_counter()
    for t in range(params.max_new_tokens):
        if on_logits is not None:
            on_logits(logits)
        token = sampler(logits)
        out[:, t] = token
        produced += (~done).long()
        finished = done | torch.isin(token, stop)
        if on_tokens is not None:
            on_tokens(torch.where(finished, -1, token))
        done = finished
        if bool(done.all()) or t == params.max_new_tokens - 1:
            break
        logits = decode_step(model, token, kv_len, setup, mrope=mrope)
        kv_len += 1
        stats.decode_steps += 1
    synchronize(model.device)
    stats.decode_seconds = time.perf_counter() - start

    tokens = []
    for b in range(batch):
        seq = out[b, : int(produced[b])].tolist()
        tokens.append(seq[:-1] if seq and seq[-1] in set(stop_ids) else seq)
    stats.generated_tokens = sum(len(t) for t in tokens)
    return Generation(tokens, stats, prefill_logits)
