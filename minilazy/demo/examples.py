"""Example scenes for the README and the CLI: PNG files and a text file of questions with their answers.

    python -m minilazy.demo.examples --out examples

The scenes are held-out ones (seeds training never draws) with 3 to 5 objects; each comes with
questions of several families, and the answer key is worked out from the scene itself.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from minilazy.demo.dataset import EVAL_SEED_START
from minilazy.demo.questions import ask
from minilazy.demo.scenes import make_scene, render

EXAMPLES_OFFSET = 9_000_000
# Families asked about each example image, in order; the first is the README's question.
FAMILY_ROTATION = (
    ("color", "count", "describe"),
    ("exist", "relation", "shape"),
    ("shape", "count", "describe"),
    ("relation", "color", "describe"),
)


def example_items() -> list[tuple[int, list]]:
    """(seed, questions) of each example image."""
    items, seed = [], EVAL_SEED_START + EXAMPLES_OFFSET
    while len(items) < len(FAMILY_ROTATION):
        scene = make_scene(seed)
        rng = random.Random(f"question {seed}")
        qas = [ask(scene, family, rng) for family in FAMILY_ROTATION[len(items)]]
        if 3 <= len(scene.objects) <= 5 and all(qas):
            items.append((seed, qas))
        seed += 1
    return items


def write_examples(out_dir: str | Path) -> Path:
    """Write scene_1.png ... and questions.txt into `out_dir`; return the text file's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Example scenes (72x72 pixels) with questions and their right answers.",
             "# python cli.py --image examples/<file> --prompt \"<question>\"", ""]
    for number, (seed, qas) in enumerate(example_items(), start=1):
        name = f"scene_{number}.png"
        render(make_scene(seed)).save(out_dir / name)
        for qa in qas:
            lines.append(f"{name}\t{qa.question}\t{qa.answer}")
    path = out_dir / "questions.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write the example scenes and their questions.")
    parser.add_argument("--out", default="examples", help="output directory (default: examples)")
    print(write_examples(parser.parse_args(argv).out))


if __name__ == "__main__":
    main()
