"""Which of the repository's files one lazy decode step of the demo model runs code in.

    python -m experiments.decode_path --backend torch

A reader follows one decode token from `decode_step` through the decoder, a lazy layer and the ops
of the chosen backend; this lists every file whose functions that token calls (a profile hook on
Python calls), so the count of files on the path is measured rather than guessed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from minilazy import Pipeline, calibrate
from minilazy.generate import decode_step, image_features_for, padded_prompts, prefill
from minilazy.lazy.runtime import LazyRuntime

ROOT = Path(__file__).resolve().parents[1]


def files_on_the_path(pipe: Pipeline, ratio: float) -> list[str]:
    """Repository files whose Python code the second decode step under a lazy plan of `ratio` calls."""
    plan = calibrate(pipe, [("examples/scene_2.png", "Describe the image.")], ratio=ratio, progress=False)
    request = pipe.request("What color is the triangle?", "examples/scene_1.png")
    model, seen = pipe.model, set()

    def record(frame, event, arg):
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(ROOT) and ".venv" not in path.parts and path != Path(__file__).resolve():
            seen.add(str(path.relative_to(ROOT)))

    with torch.inference_mode():
        ids, lengths = padded_prompts(model, [request])
        setup = LazyRuntime(plan)(model, ids, lengths, ids.shape[1] + 4, ids.shape[1])
        token = prefill(model, model.embed(ids, image_features_for(model, [request])), lengths, setup,
                        ids.shape[1]).argmax(-1)
        decode_step(model, token, lengths.clone(), setup)  # the first step fills the per-step memos
        sys.setprofile(record)
        try:
            decode_step(model, token, lengths + 1, setup)
        finally:
            sys.setprofile(None)
    return sorted(seen)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.decode_path", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "weights" / "demo"), help="model directory (default: the demo model)")
    p.add_argument("--backend", default="torch", choices=["torch", "reference"], help="the ops to follow")
    p.add_argument("--ratio", type=float, default=0.25, help="share of lazy layers in the plan")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    files = files_on_the_path(Pipeline.load(args.model, backend=args.backend), args.ratio)
    print(f"{len(files)} files on a lazy decode token's path ({args.backend} backend):")
    print("\n".join(f"  {f}" for f in files))


if __name__ == "__main__":
    main()
