"""Accuracy of the demo model on held-out scenes: per question family, overall, and for descriptions.

Held-out scenes use seeds from EVAL_SEED_START up, which training never draws. Question i is
about scene `EVAL_SEED_START + seed_offset + i`, of family `FAMILIES[i % 6]`, so any n covers
every family evenly. Answers are greedy; short answers score by exact match, descriptions also
by object-level precision / recall / F1 of the (size, colour, shape, cell) tuples they name.

`teacher_forced_correct` scores a batch in one forward pass: greedy decoding reproduces the
answer exactly when every answer token (and the closing `</s>`) is the argmax given the right
prefix, so this equals greedy exact match; training uses it for its quick validation, and
`greedy_answers` goes through `minilazy.generate` (prefill, KV cache, decode steps) like the CLI;
`generate_answers` and `kv_figures` serve any (question, image) pairs, e.g. the study's own data.

Its command is `python cli.py eval --model weights/demo --n 1000` (minilazy/commands/evaluate.py).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import torch

from minilazy.demo.dataset import EVAL_SEED_START, conversation_ids, pad_batch
from minilazy.demo.questions import FAMILIES, QA, ask, exist_subject, named_objects, parse_description, relation_subject
from minilazy.demo.scenes import Scene, make_scene, render


def held_out_questions(n: int, seed_offset: int = 0) -> list[tuple[int, QA]]:
    """`n` (scene seed, question) pairs from held-out seeds, families in rotation."""
    items = []
    index = 0
    while len(items) < n:
        seed = EVAL_SEED_START + seed_offset + index
        scene = make_scene(seed)
        # a question RNG of its own: random.Random(seed) would replay the draws that made the scene,
        # tying e.g. "is there..." answers to the number of objects
        qa = ask(scene, FAMILIES[len(items) % len(FAMILIES)], random.Random(f"question {seed}"))
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


def greedy_answers(pipeline, items: list[tuple[int, QA]], max_new_tokens: int, decoder_setup=None,
                   stats: list | None = None, view=None) -> list[str]:
    """Greedy answers to held-out (seed, question) pairs (`decoder_setup`: e.g. a Lazy Attention plan).

    `stats`: as in `generate_answers`; `view(question, image) -> (question, image)`, when given, changes
    what is asked (a probe).
    """
    asked = [(qa.question, render(make_scene(seed))) for seed, qa in items]
    return generate_answers(pipeline, [view(*pair) if view else pair for pair in asked], max_new_tokens,
                            decoder_setup, stats)


def generate_answers(pipeline, asked: list[tuple[str, object]], max_new_tokens: int, decoder_setup=None,
                     stats: list | None = None) -> list[str]:
    """Greedy answers to (question, image) pairs, generated together through minilazy's generation loop.

    `stats`, when given, receives the call's `GenerationStats` (timings, KV-cache bytes allocated).
    """
    from minilazy.generate import generate
    from minilazy.sampler import SamplingParams

    requests = [pipeline.request(question, image) for question, image in asked]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    result = generate(pipeline.model, requests, params, stop_ids=pipeline.stop_ids, decoder_setup=decoder_setup)
    if stats is not None:
        stats.append(result.stats)
    return [pipeline.decode(tokens) for tokens in result.tokens]


def kv_figures(pipeline, stats: list) -> dict:
    """The KV-cache bytes the generations of `stats` allocated, what full attention would allocate for the
    same batches, and the share saved."""
    from minilazy.kv_cache import full_attention_bytes

    kv_bytes = sum(s.kv_cache_bytes for s in stats)
    kv_full = sum(full_attention_bytes(pipeline.config, s.batch, s.cache_slots, pipeline.model.dtype.itemsize)
                  for s in stats)
    return {"kv_cache_bytes": kv_bytes, "kv_cache_bytes_full": kv_full, "kv_saved": 1 - kv_bytes / kv_full}


def description_scores(predicted: str, expected: str) -> tuple[int, int, int]:
    """(true positives, predicted objects, expected objects) of one description."""
    found, truth = parse_description(predicted), parse_description(expected)
    return len(found & truth), len(found), len(truth)


def evaluate(model_dir: str | Path, n: int = 1000, seed_offset: int = 0, batch_size: int = 50,
             max_new_tokens: int = 64, backend: str = "auto", dtype: str = "fp32", decoder_setup=None,
             pipeline=None, progress: bool = False) -> dict:
    """Score the demo model in `model_dir` on `n` held-out questions; return the figures.

    `backend`, `dtype` and `decoder_setup` (a `DecoderSetupHook`, e.g. Lazy Attention)
    are passed to the generation, so the same questions measure what a runtime option costs.
    `pipeline` reuses an already loaded model (then `model_dir`, `backend` and `dtype` only label the result);
    `progress` shows a progress bar over the batches. The KV-cache figures are the bytes the caches
    actually allocated, and what full attention would allocate for the same batches, summed over batches.
    """
    from tqdm import tqdm

    from minilazy.pipeline import Pipeline

    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be positive, got n={n}, batch_size={batch_size}")
    pipeline = pipeline or Pipeline.load(model_dir, dtype=dtype, backend=backend)
    items = held_out_questions(n, seed_offset)
    start = time.time()
    answers, stats = [], []
    for i in tqdm(range(0, n, batch_size), desc="evaluating", unit="batch", disable=not progress):
        answers += greedy_answers(pipeline, items[i: i + batch_size], max_new_tokens, decoder_setup, stats)
    tp = n_pred = n_true = 0
    for (_, qa), answer in zip(items, answers):
        if qa.family == "describe":
            a, b, c = description_scores(answer, qa.answer)
            tp, n_pred, n_true = tp + a, n_pred + b, n_true + c
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    per_family = score_families([qa for _, qa in items], answers)
    by_case = {"exist": exist_case, "relation": relation_case}
    rows = {family: [(case_of(make_scene(seed), qa.question), qa.answer, answer)
                     for (seed, qa), answer in zip(items, answers) if qa.family == family]
            for family, case_of in by_case.items()}
    result = {
        "model": str(model_dir), "n": n, "seed_offset": seed_offset,
        "accuracy": sum(row["correct"] for row in per_family.values()) / n,
        "per_family": per_family,
        "exist_by_case": score_cases(rows["exist"], EXIST_CASES),
        "relation_by_case": score_cases(rows["relation"], RELATION_CASES),
        "describe_objects": {"precision": precision, "recall": recall,
                             "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0},
        "seconds": time.time() - start, **kv_figures(pipeline, stats),
        "examples": [{"seed": seed, "family": qa.family, "question": qa.question, "expected": qa.answer,
                      "answer": answer} for (seed, qa), answer in zip(items[:20], answers)],
    }
    return result


def score_families(questions: list[QA], answers: list[str]) -> dict[str, dict]:
    """Exact-match accuracy per family, beside two checks that an accuracy is more than a guess.

    `majority_baseline`: the accuracy of always giving the family's most common right answer (for
    yes/no questions, the share of the commoner one); `top_answer` and `top_answer_share`: the
    model's most common answer and how often it gave it (1.0 means one answer whatever the image).
    """
    rows = {}
    for family in FAMILIES:
        pairs = [(qa.answer, answer) for qa, answer in zip(questions, answers) if qa.family == family]
        total = len(pairs)
        correct = sum(expected == answer for expected, answer in pairs)
        expected_counts = Counter(expected for expected, _ in pairs).most_common(1)
        top_answer = Counter(answer for _, answer in pairs).most_common(1)
        rows[family] = {
            "correct": correct, "total": total, "accuracy": correct / total if total else 0.0,
            "majority_baseline": expected_counts[0][1] / total if total else 0.0,
            "top_answer": top_answer[0][0] if total else None,
            "top_answer_share": top_answer[0][1] / total if total else 0.0,
        }
    return rows


EXIST_CASES = ("present", "colour and shape elsewhere", "one of them in the scene", "neither in the scene")


def exist_case(scene: Scene, question: str) -> str:
    """What the scene holds for "Is there a {colour} {shape}?": the object itself, or (answer "no") its
    colour and its shape on other objects (only a model that binds the two says "no"), one of them,
    or neither (a model that looks at the image at all says "no")."""
    color, shape = exist_subject(question)
    if any(o.color == color and o.shape == shape for o in scene.objects):
        return EXIST_CASES[0]
    found = any(o.color == color for o in scene.objects) + any(o.shape == shape for o in scene.objects)
    return EXIST_CASES[3 - found]


RELATION_CASES = ("left of: yes", "left of: same column", "left of: to its right",
                  "above: yes", "above: same row", "above: below it")


def relation_case(scene: Scene, question: str) -> str:
    """Where object a of "Is the a left of / above the b?" is against b: the answer "yes", in b's column
    (row), or on the other side. The image tokens are in row order, so "above" is mostly a comparison
    of token positions and "left of" one of positions within a row."""
    ref_a, relation, ref_b = relation_subject(question)
    objects = {ref: o for o, ref in named_objects(scene)}
    a, b = objects[ref_a], objects[ref_b]
    ahead = b.col - a.col if relation == "left of" else b.row - a.row
    first = RELATION_CASES.index(f"{relation}: yes")
    return RELATION_CASES[first if ahead > 0 else first + 1 if ahead == 0 else first + 2]


def score_cases(rows: list[tuple[str, str, str]], cases: tuple[str, ...]) -> dict[str, dict]:
    """Accuracy and share of "yes" answers per case of a yes/no family, from (case, expected, answer) rows."""
    scores = {}
    for case in cases:
        answers = [(expected, answer) for c, expected, answer in rows if c == case]
        total, correct = len(answers), sum(expected == answer for expected, answer in answers)
        scores[case] = {"correct": correct, "total": total, "accuracy": correct / total if total else 0.0,
                        "yes_share": sum(answer == "yes" for _, answer in answers) / total if total else 0.0}
    return scores


def format_table(result: dict) -> str:
    lines = [f"{'family':<10} {'correct':>8} {'total':>6} {'accuracy':>9} {'majority':>9}  most common answer"]
    for family, row in result["per_family"].items():
        top = row["top_answer"] if row["top_answer"] is None or len(row["top_answer"]) <= 20 else row["top_answer"][:17] + "..."
        lines.append(f"{family:<10} {row['correct']:>8} {row['total']:>6} {row['accuracy']:>9.1%} "
                     f"{row['majority_baseline']:>9.1%}  {top!r} ({row['top_answer_share']:.0%})")
    lines.append(f"{'overall':<10} {round(result['accuracy'] * result['n']):>8} {result['n']:>6} {result['accuracy']:>9.1%}")
    lines.append("majority: always giving the family's most common right answer")
    for key, title in (("exist_by_case", "exist by what the scene holds"), ("relation_by_case", "relation by case")):
        if result.get(key):
            cases = ", ".join(f"{case} {row['accuracy']:.0%} of {row['total']}"
                              for case, row in result[key].items() if row["total"])
            lines.append(f"{title}: {cases}")
    d = result["describe_objects"]
    lines.append(f"describe objects: precision {d['precision']:.1%}, recall {d['recall']:.1%}, F1 {d['f1']:.1%}")
    return "\n".join(lines)
