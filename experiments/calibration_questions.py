"""Do lazy plans chosen on the demo's own question families beat plans chosen on descriptions?

    python -m experiments.calibration_questions --method greedy --n 300

The study calibrates on training scenes with "Describe the image."; this asks, on the same scenes,
one question per scene from the evaluated families in rotation (color, shape, count, exist,
relation, describe), chooses the plans by their effect (both refinements on) and scores them on the
held-out questions as the study does.
"""

from __future__ import annotations

import argparse
import random

from minilazy import Pipeline
from minilazy.demo.questions import FAMILIES, ask
from minilazy.demo.scenes import make_scene, render
from minilazy.study.question_sets import DemoQuestions
from minilazy.study.sweep import RunSpec, run_study

RATIOS = (0.25, 0.5, 0.6, 0.8)


class FamilyCalibration(DemoQuestions):
    """The demo's held-out questions, calibrated on one question per training scene, the families in rotation."""

    def calibration_samples(self, calib: int) -> list:
        rng, samples = random.Random(0), []
        for seed in range(calib):
            scene = make_scene(seed)
            for k in range(len(FAMILIES)):  # the scene's family, or the next one it can be asked
                qa = ask(scene, FAMILIES[(seed + k) % len(FAMILIES)], rng)
                if qa is not None:
                    samples.append((render(scene), qa.question))
                    break
        return samples


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.calibration_questions", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="weights/demo", help="the demo model's directory")
    p.add_argument("--method", default="greedy", choices=["js", "rank", "greedy"], help="how the plans are chosen")
    p.add_argument("--n", type=int, default=300, help="held-out questions scored")
    p.add_argument("--calib", type=int, default=64, help="training scenes calibrated on")
    p.add_argument("--ratios", type=float, nargs="+", default=RATIOS, help="lazy ratios")
    args = p.parse_args(argv)
    runs = [RunSpec("full attention", "full")] + [RunSpec(f"lazy {r:g}", "lazy", r) for r in args.ratios]
    result = run_study(Pipeline.load(args.model), FamilyCalibration(args.n), calib=args.calib, runs=runs,
                       progress=False, method=args.method, mass_correction=True, exact_image_rows=True)
    print(f"{'run':<16}{'plan':<40}{'overall':>8}{'describe F1':>13}")
    for run in result["runs"]:
        plan = run["plan"]["anchors"] if run["plan"] else "-"
        print(f"{run['name']:<16}{str(plan):<40}{run['accuracy']:>8.1%}{run['describe_f1']:>13.1%}")


if __name__ == "__main__":
    main()
