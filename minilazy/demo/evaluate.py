"""Accuracy of the demo model on held-out scenes: per question family, overall, and for descriptions.

Held-out scenes use seeds from EVAL_SEED_START up, which training never draws. Question i is
about scene `EVAL_SEED_START + seed_offset + i`, of family `FAMILIES[i % 6]`, so any n covers
every family evenly. Answers are greedy; short answers score by exact match, descriptions also
by object-level precision / recall / F1 of the (size, colour, shape, cell) tuples they name.

`teacher_forced_correct` scores a batch in one forward pass: greedy decoding reproduces the
answer exactly when every answer token (and the closing `</s>`) is the argmax given the right
prefix, so this equals greedy exact match; training uses it for its quick validation.

    python -m minilazy.demo.evaluate --model weights/demo --n 1000
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from minilazy.demo.dataset import EVAL_SEED_START, conversation_ids, pad_batch
from minilazy.demo.questions import FAMILIES, QA, ask, parse_description
from minilazy.demo.scenes import make_scene, render
from minilazy.demo.tokenizer import EOS, load_tokenizer
from minilazy.image_processing.clip import ClipImageProcessor
from minilazy.prompts import ImageLayout, build_prompt


def held_out_questions(n: int, seed_offset: int = 0) -> list[tuple[int, QA]]:
    """`n` (scene seed, question) pairs from held-out seeds, families in rotation."""
    items = []
    index = 0
    while len(items) < n:
        seed = EVAL_SEED_START + seed_offset + index
        scene = make_scene(seed)
        qa = ask(scene, FAMILIES[len(items) % len(FAMILIES)], random.Random(seed))
        if qa is not None:  # e.g. no uniquely named object: take the next scene
            items.append((seed, qa))
        index += 1
    return items


@torch.no_grad()
def teacher_forced_correct(model, tokenizer, processor, items: list[tuple[int, QA]], image_tokens: int) -> list[bool]:
    """For each (seed, question): would greedy decoding give exactly the answer?"""
    sequences = [conversation_ids(tokenizer, [qa], image_tokens) for _, qa in items]
    pixels = processor([render(make_scene(seed)) for seed, _ in items])
    batch = pad_batch(tokenizer, sequences, pixels)
    logits = model.forward_logits(batch.input_ids, batch.pixel_values, batch.lengths)
    hits = (logits[:, :-1].argmax(-1) == batch.input_ids[:, 1:]) | ~batch.loss_mask[:, 1:]  # [B, T-1]
    return hits.all(dim=1).tolist()


@torch.no_grad()
def greedy_answers(model, tokenizer, processor, items, image_tokens: int, max_new_tokens: int) -> list[str]:
    """Greedy answers by re-running the teacher-forced forward pass (no KV cache: a scoring fallback)."""
    eos = tokenizer.token_to_id(EOS)
    prompts = [build_prompt("llava", tokenizer, qa.question, ImageLayout(image_tokens)) for _, qa in items]
    pixels = processor([render(make_scene(seed)) for seed, _ in items])
    answers: list[list[int]] = [[] for _ in items]
    done = [False] * len(items)
    for _ in range(max_new_tokens):
        sequences = [(p + a, [False] * (len(p) + len(a))) for p, a in zip(prompts, answers)]
        batch = pad_batch(tokenizer, sequences, pixels)
        logits = model.forward_logits(batch.input_ids, batch.pixel_values, batch.lengths)
        last = logits[torch.arange(len(items)), batch.lengths - 1].argmax(-1).tolist()  # [B]
        for i, token in enumerate(last):
            if not done[i]:
                done[i] = token == eos
                if not done[i]:
                    answers[i].append(token)
        if all(done):
            break
    return [tokenizer.decode(a) for a in answers]


def description_scores(predicted: str, expected: str) -> tuple[int, int, int]:
    """(true positives, predicted objects, expected objects) of one description."""
    found, truth = parse_description(predicted), parse_description(expected)
    return len(found & truth), len(found), len(truth)


def evaluate(model_dir: str | Path, n: int = 1000, seed_offset: int = 0, batch_size: int = 32,
             max_new_tokens: int = 64, backend: str = "torch", out_json: str | Path | None = None) -> dict:
    """Score the demo model in `model_dir` on `n` held-out questions; return (and optionally write) the figures."""
    from minilazy.model import Model

    if n < 1:
        raise ValueError(f"n must be a positive number of questions, got {n}")
    model = Model.from_pretrained(model_dir, backend=backend)
    tokenizer = load_tokenizer(model_dir)
    image_tokens = model.config.image_tokens_per_image
    processor = ClipImageProcessor.from_config(None, model.config.vision.image_size)
    items = held_out_questions(n, seed_offset)
    start = time.time()
    answers = []
    for i in range(0, n, batch_size):
        answers += greedy_answers(model, tokenizer, processor, items[i: i + batch_size], image_tokens, max_new_tokens)
    per_family: dict[str, list[int]] = {f: [0, 0] for f in FAMILIES}
    tp = n_pred = n_true = 0
    for (_, qa), answer in zip(items, answers):
        per_family[qa.family][0] += answer == qa.answer
        per_family[qa.family][1] += 1
        if qa.family == "describe":
            a, b, c = description_scores(answer, qa.answer)
            tp, n_pred, n_true = tp + a, n_pred + b, n_true + c
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    result = {
        "model": str(model_dir), "n": n, "seed_offset": seed_offset,
        "accuracy": sum(c for c, _ in per_family.values()) / n,
        "per_family": {f: {"correct": c, "total": t, "accuracy": c / t if t else 0.0} for f, (c, t) in per_family.items()},
        "describe_objects": {"precision": precision, "recall": recall,
                             "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0},
        "seconds": time.time() - start,
    }
    if out_json is not None:
        Path(out_json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_table(result: dict) -> str:
    lines = [f"{'family':<10} {'correct':>8} {'total':>6} {'accuracy':>9}"]
    for family, row in result["per_family"].items():
        lines.append(f"{family:<10} {row['correct']:>8} {row['total']:>6} {row['accuracy']:>9.1%}")
    lines.append(f"{'overall':<10} {round(result['accuracy'] * result['n']):>8} {result['n']:>6} {result['accuracy']:>9.1%}")
    d = result["describe_objects"]
    lines.append(f"describe objects: precision {d['precision']:.1%}, recall {d['recall']:.1%}, F1 {d['f1']:.1%}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Score the demo model on held-out generated scenes.")
    parser.add_argument("--model", default="weights/demo", help="model directory (default: weights/demo)")
    parser.add_argument("--n", type=int, default=1000, help="number of held-out questions (default 1000)")
    parser.add_argument("--seed-offset", type=int, default=0, help="first held-out scene seed after the split")
    parser.add_argument("--batch-size", type=int, default=32, help="questions per forward pass")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest answer generated")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    result = evaluate(args.model, args.n, args.seed_offset, args.batch_size, args.max_new_tokens, out_json=args.json)
    print(format_table(result))


if __name__ == "__main__":
    main()
