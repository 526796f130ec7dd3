"""What the study asks and how it scores the answers: the demo's held-out questions, or a VQA data set.

A question set gives the calibration samples ((image, prompt) pairs, never answers), scores one
runtime setting (the KV figures, the seconds and its own metrics), and names the metrics and the
per-group scores the report shows.

- `DemoQuestions`: the demo model's held-out questions (minilazy/demo/evaluate.py): overall exact
  match, accuracy per question family, object F1 of descriptions; calibration on training scenes
  with "Describe the image.".
- `DataQuestions`: the questions of a JSONL file (minilazy/study/vqa_data.py), scored as VQA
  evaluations score them (minilazy/study/normalize.py): exact-match accuracy over the short answers,
  mean token F1 over the long ones, and per category the mean score of its questions (1 or 0 for a
  short answer, the F1 of a long one). Calibration uses the images and questions of the first
  `calib` lines, never their answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from minilazy.demo.evaluate import evaluate, generate_answers, kv_figures
from minilazy.demo.questions import DESCRIBE_QUESTION
from minilazy.demo.scenes import make_scene, render
from minilazy.study.normalize import answer_score
from minilazy.study.vqa_data import VqaItem

CALIBRATION_PROMPT = DESCRIBE_QUESTION


@dataclass(frozen=True)
class Metric:
    """One figure of a run: its field in the run's record, its table column and its plot axis."""

    key: str
    column: str
    axis: str


def calibration_samples(n: int, prompt: str = CALIBRATION_PROMPT) -> list:
    """(image, prompt) pairs of the first `n` training scenes."""
    return [(render(make_scene(seed)), prompt) for seed in range(n)]


class DemoQuestions:
    """The first `n` held-out questions of the demo model from scene `seed_offset` on."""

    groups = "per_family"
    metrics = (Metric("accuracy", "overall", "accuracy, all questions"),
               Metric("describe_f1", "describe F1", "description object F1"))

    def __init__(self, n: int, seed_offset: int = 0):
        self.n, self.seed_offset = n, seed_offset

    def calibration_samples(self, calib: int) -> list:
        return calibration_samples(calib)

    def settings(self, calib: int) -> dict:
        return {"n": self.n, "seed_offset": self.seed_offset, "calibration_prompt": CALIBRATION_PROMPT,
                "calibration_seeds": [0, calib]}

    def subject(self, calib: int) -> str:
        return f"{self.n} held-out questions (calibration: {calib} training scenes)"

    def score(self, pipeline, runtime, batch_size: int, max_new_tokens: int, progress: bool) -> dict:
        result = evaluate(pipeline.model_dir, self.n, self.seed_offset, batch_size, max_new_tokens,
                          decoder_setup=runtime, pipeline=pipeline, progress=progress)
        return {key: result[key] for key in ("kv_cache_bytes", "kv_cache_bytes_full", "kv_saved", "seconds",
                                             "accuracy", "describe_objects")} | {
            "per_family": {family: row["accuracy"] for family, row in result["per_family"].items()},
            "describe_f1": result["describe_objects"]["f1"]}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class DataQuestions:
    """The questions of a VQA data file; `prompt_suffix` is added on a line of its own to every short one."""

    groups = "per_category"

    def __init__(self, path: str | Path, items: list[VqaItem], prompt_suffix: str | None = None):
        self.path, self.items, self.prompt_suffix = Path(path), items, prompt_suffix
        self.short = sum(not item.long for item in items)
        self.metrics = tuple(metric for metric, count in
                             ((Metric("accuracy", "short accuracy", "exact-match accuracy, short answers"), self.short),
                              (Metric("long_f1", "long F1", "mean token F1, long answers"), len(items) - self.short))
                             if count)

    def prompt(self, item: VqaItem) -> str:
        return item.question if item.long or not self.prompt_suffix else f"{item.question}\n{self.prompt_suffix}"

    def calibration_samples(self, calib: int) -> list:
        return [(item.image, self.prompt(item)) for item in self.items[:calib]]

    def settings(self, calib: int) -> dict:
        return {"data": str(self.path), "n": len(self.items), "short": self.short, "long": len(self.items) - self.short,
                "prompt_suffix": self.prompt_suffix, "calibration_questions": min(calib, len(self.items))}

    def subject(self, calib: int) -> str:
        return (f"{len(self.items)} questions of {self.path.name} (calibration: the first "
                f"{min(calib, len(self.items))}, without their answers)")

    def score(self, pipeline, runtime, batch_size: int, max_new_tokens: int, progress: bool) -> dict:
        start = time.time()
        answers, stats = [], []
        for i in tqdm(range(0, len(self.items), batch_size), desc="evaluating", unit="batch", disable=not progress):
            asked = [(self.prompt(item), item.image) for item in self.items[i: i + batch_size]]
            answers += generate_answers(pipeline, asked, max_new_tokens, runtime, stats)
        scores = [answer_score(answer, list(item.answers), item.long) for item, answer in zip(self.items, answers)]
        categories = dict.fromkeys(item.category for item in self.items if item.category is not None)  # file order
        return {**kv_figures(pipeline, stats), "seconds": time.time() - start,
                "accuracy": _mean([s for s, item in zip(scores, self.items) if not item.long]),
                "long_f1": _mean([s for s, item in zip(scores, self.items) if item.long]),
                "per_category": {c: _mean([s for s, item in zip(scores, self.items) if item.category == c])
                                 for c in categories},
                "answers": answers}
