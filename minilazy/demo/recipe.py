"""The demo model's training recipe in one command: seven phases of `minilazy.demo.train` within 90 minutes.

    python -m minilazy.demo.recipe --out out/demo-recipe

This is the one-command reproduction of the demo model on 2 CPU cores. The shipped checkpoint in
weights/demo is not its output: it comes from a different chain of six runs, by hand, each
recorded (command, arguments, minutes, validation) in weights/demo/training_info.json; the README
compares the two.

A single cosine schedule from scratch learns the position lookups ("what shape is at the top
left") and the descriptions, then stalls on the questions that must find an object by its colour or
shape (colour, count, exist, relation). The chained runs learned those: each a fresh optimizer and
learning-rate warm-up from the one before, the early ones heavy on descriptions, the late ones
asking the content lookups more often. The recipe runs such a chain as phases, each capped near the
steps its run took and at a share of the 90 minutes, with two phases the chain did not have: exist
questions asked three times as often, before the sixth phase and again after it (the yes/no
families are learned only where they are asked often). Every phase also trains the grounding loss
(minilazy/demo/grounding.py), which asks at each question's last token where the objects it names
are.

`--out` is required; a directory that already holds a checkpoint is refused unless `--overwrite`
is given (also to resume with `--first-phase`). Any other `minilazy.demo.train` option given here
is passed to every phase, after the recipe's own (so it wins): `--threads 1`, `--precision fp32`,
or tiny `--steps`/`--minutes` for a smoke test. The phases stop on their step or minute cap,
whichever comes first; on a slower CPU, `--minutes 999` runs every phase to its step cap, as the
recipe was tuned.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from minilazy.demo import train
from minilazy.demo.checkpoint import refuse_to_overwrite

# minutes, steps, then the phase's own options: seeds differ per phase, so each sees new scenes;
# the fifth and seventh phases (exist asked three times) are the ones the chained runs did not have
PHASES = (
    (13, 1800, "--lr 1.5e-3 --warmup 80 --batch-size 12 --describe-prob 0.5 --curriculum 0.3"),
    (10, 1150, "--lr 1e-3 --warmup 20 --describe-prob 0.4 --curriculum 0.1"),
    (11, 1300, "--lr 6e-4 --warmup 20 --describe-prob 0.25 --curriculum 0.05 "
               "--families color color shape count exist relation relation"),
    (16, 2000, "--lr 6e-4 --warmup 20 --describe-prob 0.2 --curriculum 0.05 "
               "--families color where where relation relation shape count exist"),
    (8, 1000, "--lr 5e-4 --warmup 20 --describe-prob 0.15 --curriculum 0.05 "
              "--families color where relation relation shape count exist exist exist"),
    (20, 2500, "--lr 5e-4 --warmup 20 --describe-prob 0.15 --curriculum 0.05 "
               "--families color where where relation relation relation shape count count exist"),
    (6, 1000, "--lr 5e-4 --warmup 20 --describe-prob 0.15 --curriculum 0.05 "
              "--families color where relation relation shape count count exist exist exist"),
)
# every phase also learns where the objects a question names are (minilazy/demo/grounding.py)
COMMON = "--grounding-weight 0.3"
VISION_MINUTES = 5


def phase_argv(index: int, out: str, seed: int, passed: list[str]) -> list[str]:
    """The `minilazy.demo.train` arguments of one phase: the first starts from scratch with the
    vision stage, the others continue from the checkpoint the phase before wrote to `out`."""
    minutes, steps, options = PHASES[index]
    # a vision budget of 0 skips stage 1: later phases go straight to the questions
    start = [f"--vision-minutes={VISION_MINUTES}"] if index == 0 else ["--init-from", out, "--vision-minutes=0"]
    # `main` refused an --out holding a checkpoint before the first phase; the later ones write over its own
    return ["--out", out, "--overwrite", "--seed", str(seed + index), *start, "--minutes", str(minutes),
            "--steps", str(steps), "--checkpoint-minutes", str(max(5, minutes // 2)), *COMMON.split(),
            *options.split(), *passed]


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        description="Train the demo model in one command: "
                    f"{len(PHASES)} phases of minilazy.demo.train, "
                    f"{VISION_MINUTES + sum(m for m, _, _ in PHASES)} minutes of budget on 2 CPU cores.",
        epilog="Any other minilazy.demo.train option (see python -m minilazy.demo.train --help) is passed to "
               "every phase and overrides the recipe's value.")
    p.add_argument("--out", required=True, help="checkpoint directory, rewritten by each phase")
    p.add_argument("--overwrite", action="store_true",
                   help="write over a checkpoint already in --out (without it, such a directory is refused)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first phase; phase i uses seed + i")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--first-phase", type=int, default=1, choices=range(1, len(PHASES) + 1), metavar="N",
                   help="start at phase N (1-based) from the checkpoint in --out that phase N-1 wrote, e.g. to "
                        f"resume a run that stopped; needs --overwrite (default 1: the whole recipe; 1-{len(PHASES)})")
    return p.parse_known_args(argv)


def main(argv=None) -> None:
    args, passed = parse_args(argv)
    if args.first_phase > 1 and not (Path(args.out) / "training_info.json").exists():
        raise SystemExit(f"--first-phase {args.first_phase} continues the checkpoint of the phase before, "
                         f"and {args.out} has none")
    refuse_to_overwrite(Path(args.out), args.overwrite)
    for index in range(args.first_phase - 1, len(PHASES)):
        print(f"phase {index + 1}/{len(PHASES)}", flush=True)
        phase = phase_argv(index, args.out, args.seed, ["--threads", str(args.threads), *passed])
        train.main(phase, log_mode="w" if index == 0 else "a")
    print(f"done: {Path(args.out)}/training_info.json records every phase", flush=True)


if __name__ == "__main__":
    main()
