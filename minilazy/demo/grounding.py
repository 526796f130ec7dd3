"""An auxiliary training loss that asks where the objects a question names are, before it is answered.

The answer to "Is the red circle left of the square?" is read at the question's last token, so the
columns of both objects have to reach that token; the position probe (experiments/position_probe.py,
README) finds the second object's column hardly readable there. This loss asks for it directly: at
the last token of every question that names objects by a phrase (relation, where, colour), a fixed
linear readout of the residual stream at the input of one decoder layer is scored against the row
and the column of the first and of the second object named (`SLOTS`, 3 classes each; a question
naming one object leaves the second pair unscored).

The readout is a fixed random matrix, the same in every run and phase (seeded by `READOUT_SEED`),
applied to the RMS-normalised stream: the model learns to write the positions where it is read,
and no extra weights have to live in the checkpoint. Training only; inference never runs it.

`StreamCapture` is the hook that keeps the stream: `Model.forward_logits(..., decoder_setup=
StreamCapture(layers))` runs the plain full-attention forward and leaves `capture.streams[layer]`,
the stream `[B, T, D]` entering each layer asked for (the embeddings for layer 0).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from minilazy.demo.dataset import Batch
from minilazy.demo.questions import QA, matches, relation_subject
from minilazy.demo.scenes import COLORS, GRID, SIZES, Scene, SceneObject
from minilazy.hooks import DecoderSetup
from minilazy.model import Model, compute_dtype

SLOTS = ("row a", "column a", "row b", "column b")
READOUT_SEED = 20260
IGNORE = -100


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


def named_object(scene: Scene, phrase: str) -> SceneObject:
    """The one object of `scene` that a phrase such as "small red circle" names."""
    *attributes, shape = phrase.split()
    size = next((w for w in attributes if w in SIZES), None)
    color = next((w for w in attributes if w in COLORS), None)
    found = [o for o in scene.objects if matches(o, size, color, shape)]
    if len(found) != 1:
        raise ValueError(f"{phrase!r} names {len(found)} objects of the scene, not one")
    return found[0]


def objects_named(scene: Scene, qa: QA) -> list[SceneObject]:
    """The objects a question names by a phrase, in the order it names them (none for other families)."""
    if qa.family == "relation":
        ref_a, _, ref_b = relation_subject(qa.question)
        return [named_object(scene, ref_a), named_object(scene, ref_b)]
    if qa.family == "where":
        return [named_object(scene, qa.question.removeprefix("What is the ").removesuffix(" at?"))]
    if qa.family == "color":
        return [named_object(scene, qa.question.removeprefix("What color is the ").removesuffix("?"))]
    return []


def slot_labels(scene: Scene, qa: QA) -> list[int]:
    """The class of each of SLOTS for one question (IGNORE where it names fewer objects)."""
    labels = [IGNORE] * len(SLOTS)
    for i, obj in enumerate(objects_named(scene, qa)):
        labels[2 * i: 2 * i + 2] = [obj.row, obj.col]
    return labels


def grounding_targets(batch: Batch, scenes: list[Scene], conversations: list[list[QA]]) -> torch.Tensor:
    """Labels `[B, T, len(SLOTS)]`: at the token each answer is read from (the one before its first
    token), the slots of that turn's question; IGNORE elsewhere."""
    targets = torch.full((*batch.input_ids.shape, len(SLOTS)), IGNORE, dtype=torch.long)
    mask = batch.loss_mask
    reads = mask[:, 1:] & ~mask[:, :-1]  # [B, T-1]: token t is followed by an answer's first token
    for row, (scene, qas) in enumerate(zip(scenes, conversations)):
        positions = reads[row].nonzero()[:, 0]
        if len(positions) != len(qas):
            raise ValueError(f"row {row} has {len(positions)} answers for {len(qas)} questions")
        for t, qa in zip(positions.tolist(), qas):
            targets[row, t] = torch.tensor(slot_labels(scene, qa))
    return targets


@functools.cache  # one matrix per width, made once; never written to
def readout(dim: int) -> torch.Tensor:
    """The fixed readout `[len(SLOTS), GRID, dim]`: logits of each slot's row or column from a normalised state."""
    generator = torch.Generator().manual_seed(READOUT_SEED)
    return torch.randn(len(SLOTS), GRID, dim, generator=generator) / dim ** 0.5


def grounding_loss(stream: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the slots `targets [B, T, len(SLOTS)]` read from `stream [B, T, D]` (0 if none)."""
    scored = (targets != IGNORE).any(-1)  # [B, T]
    if not scored.any():
        return stream.new_zeros((), dtype=torch.float32)
    states = F.rms_norm(stream[scored].float(), (stream.shape[-1],))  # [N, D]
    logits = torch.einsum("nd,scd->nsc", states, readout(stream.shape[-1]))  # [N, slots, GRID]
    return F.cross_entropy(logits.flatten(0, 1), targets[scored].flatten(), ignore_index=IGNORE)
