"""Training batches whose questions share one pass over their image, each asked as at inference.

A conversation of ten questions in one sequence (minilazy/demo/dataset.py) asks the second to tenth
where inference never does: after other questions and their answers, which a later question can read
("What is the red circle at?" tells "Is there a red circle?"), and further from the image. Here every
question of an image is its own row, the inference prompt exactly, with the image prefix (BOS,
"USER:", the image tokens) computed once:

    pass 1: <s>USER: <image>x81                  [B, P]   -> keys and values of every layer
    pass 2: \\n{q_i} ASSISTANT: {a_i}</s>         [R, S]   after row i's own image's prefix, slots P..

Pass 2 runs once for the short questions and once for the descriptions, whose answers are longer
(one padded width for both would nearly triple the tokens). The loss is the mean cross-entropy of
every answer token, as in `minilazy.demo.train.answer_loss`, through both passes into the prefix.
A step takes about 1.5 times a conversation's step at batch 16 (run l in the README).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from minilazy.hooks import DecoderSetup
from minilazy.demo.dataset import Batch, conversation_ids, pad_batch
from minilazy.demo.questions import QA
from minilazy.demo.tokenizer import IMAGE
from minilazy.kv_cache import KVCache, LayerCache
from minilazy.model import Model, compute_dtype
from minilazy.step import Step


@dataclass
class Turns:
    """Questions asked after the prefix: row r of `rows` belongs to image `image[r]`."""

    image: torch.Tensor  # [R] long
    rows: Batch  # input_ids, lengths and loss_mask of the rows after the prefix; no pixel_values (the prefix has them)


@dataclass
class SharedImageBatch:
    prefix_ids: torch.Tensor  # [B, P] long: the prompt up to its last image token, the same in every row
    pixel_values: torch.Tensor  # [B, 3, S, S]
    groups: list[Turns]  # the short questions, then the descriptions (empty groups left out)


def shared_image_batch(tokenizer: Tokenizer, conversations: list[list[QA]], pixel_values: torch.Tensor) -> SharedImageBatch:
    """Every question of `conversations[b]` (about image b) as a single-turn prompt after a shared prefix."""
    image_id = tokenizer.token_to_id(IMAGE)
    prefix, rows = None, {False: [], True: []}
    for image, qas in enumerate(conversations):
        for qa in qas:
            ids, mask = conversation_ids(tokenizer, [qa])
            split = len(ids) - ids[::-1].index(image_id)  # one past the last image token
            if prefix is None:
                prefix = ids[:split]
            elif ids[:split] != prefix:
                raise ValueError(f"question {qa.question!r} starts with another prefix than the others")
            rows[qa.family == "describe"].append((image, (ids[split:], mask[split:])))
    groups = [Turns(torch.tensor([image for image, _ in group]), pad_batch(tokenizer, [seq for _, seq in group], None))
              for group in (rows[False], rows[True]) if group]
    prefix_ids = torch.tensor(prefix).expand(len(conversations), -1)  # [P] -> [B, P]
    return SharedImageBatch(prefix_ids, pixel_values, groups)


def prefix_cache(model: Model, prefix_ids: torch.Tensor, pixel_values: torch.Tensor) -> KVCache:
    """Pass 1: the keys and values of every layer for the prefixes `[B, P]` (their outputs are not needed)."""
    batch, width = prefix_ids.shape
    x = model.embed(prefix_ids, model.image_features(pixel_values))  # [B, P, D]
    cache = KVCache.plain(model.config.text, batch, width, compute_dtype(x), x.device)
    lengths = torch.full((batch,), width)
    model.decoder.forward(x, DecoderSetup(cache).context(Step.span(torch.zeros_like(lengths), lengths, width)))
    return cache


def turn_logits(model: Model, prefix: KVCache, turns: Turns) -> torch.Tensor:
    """Pass 2: logits `[R, S, V]` of each row after its image's prefix, at the slots and positions inference uses."""
    ids, lengths = turns.rows.input_ids, turns.rows.lengths
    rows, width = ids.shape

    def extended(t: torch.Tensor) -> torch.Tensor:  # [B, P, G, d] -> [R, P + S, G, d], the new slots zero
        return torch.cat([t[turns.image], t.new_zeros(rows, width, *t.shape[2:])], dim=1)

    cache = KVCache([LayerCache(extended(layer.k), extended(layer.v)) for layer in prefix.layers])
    start = torch.full_like(lengths, prefix[0].k.shape[1])
    hidden, _ = model.decoder.forward(model.embed(ids, None), DecoderSetup(cache).context(Step.span(start, lengths, width)))
    return model.decoder.logits(hidden)


def shared_image_loss(model: Model, batch: SharedImageBatch) -> torch.Tensor:
    """Mean cross-entropy of every answer token of the batch."""
    prefix = prefix_cache(model, batch.prefix_ids, batch.pixel_values)
    losses, tokens = [], 0
    for turns in batch.groups:
        logits = turn_logits(model, prefix, turns)  # [R, S, V]
        mask = turns.rows.loss_mask[:, 1:]
        losses.append(F.cross_entropy(logits[:, :-1][mask].float(), turns.rows.input_ids[:, 1:][mask], reduction="sum"))
        tokens += int(mask.sum())
    return sum(losses) / tokens
