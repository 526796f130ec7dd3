"""Training and evaluation batches for the demo model, built on the fly from scene seeds.

A training sequence is one image followed by several question/answer turns in LLaVA-1.5's
conversation format, so the image tokens are paid for once per image:

    <s>USER: <image>x81\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>...

The first turn is exactly the inference prompt of minilazy/prompts.py; the loss mask covers the
answer tokens and their `</s>` only. The vision tower's pretraining batches label every grid
cell (empty or shape, colour, size) for a linear probe on the pooled patch features.
Seeds are split: training draws from [0, EVAL_SEED_START), evaluation from above it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from minilazy.demo.questions import DESCRIBE_QUESTION, QA, SHORT_FAMILIES, ask, describe, sample_questions
from minilazy.demo.scenes import COLORS, GRID, SHAPES, SIZES, Scene, make_scene, render
from minilazy.demo.tokenizer import EOS, PAD
from minilazy.image_processing.clip import ClipImageProcessor
from minilazy.prompts import ImageLayout, build_prompt

EVAL_SEED_START = 1_000_000_000
IMAGE_TOKENS = 81  # 9 x 9 patches of 8 pixels on a 72-pixel image; the class token is dropped


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] long, padded with <pad>
    lengths: torch.Tensor  # [B] long
    loss_mask: torch.Tensor  # [B, T] bool: token t is an answer token (predicted from t-1)
    pixel_values: torch.Tensor  # [B, 3, S, S]


def conversation_ids(tokenizer: Tokenizer, qas: list[QA], image_tokens: int = IMAGE_TOKENS) -> tuple[list[int], list[bool]]:
    """Token ids of a multi-turn conversation about one image, and which ids are answer tokens."""
    eos = tokenizer.token_to_id(EOS)
    ids = build_prompt("llava", tokenizer, qas[0].question, ImageLayout(image_tokens))
    mask = [False] * len(ids)
    for turn, qa in enumerate(qas):
        if turn:
            question = tokenizer.encode(f"USER: {qa.question} ASSISTANT:", add_special_tokens=False).ids
            ids += question
            mask += [False] * len(question)
        answer = tokenizer.encode(" " + qa.answer, add_special_tokens=False).ids + [eos]
        ids += answer
        mask += [True] * len(answer)
    return ids, mask


def conversation_text(qas: list[QA], image_tokens: int = IMAGE_TOKENS) -> str:
    """The text `conversation_ids` encodes (used to train the tokenizer and to check the ids)."""
    turns = [f"{qa.question} ASSISTANT: {qa.answer}{EOS}" for qa in qas]
    return "USER: " + "<image>" * image_tokens + "\n" + "USER: ".join(turns)


def pad_batch(tokenizer: Tokenizer, sequences: list[tuple[list[int], list[bool]]],
              pixel_values: torch.Tensor) -> Batch:
    """The sequences padded with <pad> to the longest, with their lengths, answer masks and images."""
    pad = tokenizer.token_to_id(PAD)
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    loss_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, (ids, mask) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        loss_mask[row, : len(mask)] = torch.tensor(mask)
    lengths = torch.tensor([len(ids) for ids, _ in sequences], dtype=torch.long)
    return Batch(input_ids, lengths, loss_mask, pixel_values)


class SceneStream:
    """An endless, seeded stream of training batches."""

    def __init__(self, tokenizer: Tokenizer, processor: ClipImageProcessor, seed: int, batch_size: int,
                 questions_per_image: int, describe_prob: float, families: tuple[str, ...] = SHORT_FAMILIES):
        self.tokenizer, self.processor = tokenizer, processor
        self.rng = random.Random(seed)
        self.batch_size, self.questions_per_image, self.describe_prob = batch_size, questions_per_image, describe_prob
        self.families = families  # short-question families, drawn uniformly (a repeated name is drawn more often)

    def scenes(self, max_objects: int) -> list[Scene]:
        return [make_scene(self.rng.randrange(EVAL_SEED_START), 1, max_objects) for _ in range(self.batch_size)]

    def conversations(self, max_objects: int) -> tuple[torch.Tensor, list[Scene], list[list[QA]]]:
        """Pixels `[B, 3, S, S]` of a batch of scenes, the scenes, and one conversation about each."""
        scenes = self.scenes(max_objects)
        conversations = []
        for scene in scenes:
            # A description is a conversation of its own, asked first as at inference time; were it
            # followed by questions, their answers could be read off it instead of the image.
            if self.rng.random() < self.describe_prob:
                conversations.append([QA("describe", DESCRIBE_QUESTION, describe(scene))])
            else:
                conversations.append(sample_questions(scene, self.rng, self.questions_per_image, self.families))
        return self.processor([render(s) for s in scenes]), scenes, conversations

    def qa_batch(self, max_objects: int) -> Batch:
        """The conversations as one sequence each: the questions follow each other."""
        return self.scene_qa_batch(max_objects)[0]

    def scene_qa_batch(self, max_objects: int) -> tuple[Batch, list[Scene], list[list[QA]]]:
        """`qa_batch` with the scenes and conversations it encodes (for labels beyond the answers)."""
        pixels, scenes, conversations = self.conversations(max_objects)
        batch = pad_batch(self.tokenizer, [conversation_ids(self.tokenizer, qas) for qas in conversations], pixels)
        return batch, scenes, conversations

    def cell_batch(self, max_objects: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Pixels `[B, 3, S, S]` and per-cell labels `[B, 9]`: shape (0 = empty), colour and size (-100 if empty)."""
        scenes = self.scenes(max_objects)
        labels = {name: torch.full((len(scenes), GRID * GRID), -100, dtype=torch.long) for name in ("shape", "color", "size")}
        labels["shape"].fill_(0)
        for row, scene in enumerate(scenes):
            for obj in scene.objects:
                cell = obj.row * GRID + obj.col
                labels["shape"][row, cell] = 1 + SHAPES.index(obj.shape)
                labels["color"][row, cell] = list(COLORS).index(obj.color)
                labels["size"][row, cell] = SIZES.index(obj.size)
        return self.processor([render(s) for s in scenes]), labels


def tokenizer_corpus(n_scenes: int, seed: int = 0) -> list[str]:
    """Conversations over `n_scenes` random scenes, every family, so that every word gets an id."""
    rng = random.Random(seed)
    corpus = []
    for _ in range(n_scenes):
        scene = make_scene(rng.randrange(EVAL_SEED_START))
        qas = [qa for family in ("color", "shape", "count", "exist", "relation", "describe")
               if (qa := ask(scene, family, rng)) is not None]
        corpus.append(conversation_text(qas))
        corpus.extend(qa.question for qa in qas)
    return corpus
