"""The demo's held-out questions as a VQA data file, in the format `python cli.py study --data` reads.

    python -m minilazy.demo.vqa_export --n 300 --out out/demo-vqa

writes `out/demo-vqa/scenes/<seed>.png` and `out/demo-vqa/questions.jsonl`: one line per held-out
question (the same questions, in the same order, as `python cli.py eval --n 300`), its family as its
category, descriptions marked long (scored by token F1). An example of the format, and a check that
the data path answers as the demo's own evaluation does (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from minilazy.demo.evaluate import held_out_questions
from minilazy.demo.scenes import make_scene, render


def export_questions(n: int, out: str | Path, seed_offset: int = 0) -> Path:
    """Write the first `n` held-out questions from scene `seed_offset` on, and their scenes, into `out`;
    return the JSONL file's path."""
    out = Path(out)
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    lines = []
    for seed, qa in held_out_questions(n, seed_offset):
        image = f"scenes/{seed}.png"
        render(make_scene(seed)).save(out / image)
        lines.append(json.dumps({"image": image, "question": qa.question, "answers": [qa.answer],
                                 "long": qa.family == "describe", "category": qa.family}))
    path = out / "questions.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m minilazy.demo.vqa_export",
                                description="Write the demo's held-out questions and their scenes as a VQA data "
                                            "file for `python cli.py study --data`.")
    p.add_argument("--n", type=int, default=300, metavar="N", help="number of held-out questions (default 300)")
    p.add_argument("--seed-offset", type=int, default=0, metavar="S",
                   help="start at this held-out scene (default 0, as `cli.py eval`)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for questions.jsonl and scenes/")
    args = p.parse_args(argv)
    if args.n < 1 or args.seed_offset < 0:
        p.error("--n must be positive and --seed-offset 0 or more")
    print(f"written: {export_questions(args.n, args.out, args.seed_offset)}")


if __name__ == "__main__":
    main()
