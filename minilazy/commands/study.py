"""`python cli.py study`: KV cache saved versus accuracy for Lazy Attention, FastV, both, and VTW, in one command."""

from __future__ import annotations

import argparse

from minilazy.commands.evaluate import add_eval_arguments, check_eval_arguments
from minilazy.commands.options import (
    EXACT_IMAGE_ROWS, LAZY_METHOD_HELP, MASS_CORRECTION, add_model_arguments, command_line,
)
from minilazy.errors import InputError
from minilazy.lazy.calibrate import METHODS
from minilazy.study.sweep import KINDS

DEMO_QUESTIONS = 1000


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cli.py study",
                                description="Calibrate once, then answer the same questions with full attention, "
                                "Lazy Attention at lazy ratios 0.25-0.9 (visual scope; scope 'all' at 0.25 and 0.5 "
                                "as an ablation), FastV (K=2, R=0.5 and 0.75, and the R that saves what a quarter, "
                                "half and three quarters of the layers lazy save), lazy 0.5 + FastV and VTW (from layers L/2, 3L/4 and L-1 on); "
                                "write study.json, study.md, study.png and heatmap.png (the Jensen-Shannon divergence "
                                "with the anchors of the lazy 0.5 plan). The questions are "
                                "the demo's held-out scenes (calibration on training scenes), or your own with --data.")
    add_model_arguments(p)
    add_eval_arguments(p, n_default=None,
                       n_help=f"number of questions: the demo's first N held-out questions (families in rotation; "
                              f"default {DEMO_QUESTIONS}), or with --data the first N lines (default: all)")
    p.add_argument("--data", metavar="FILE.jsonl",
                   help='your own VQA questions instead of the demo\'s: one JSON object a line, {"image": PATH '
                        '(relative to the file\'s folder), "question": TEXT, "answers": [TEXT, ...] (the accepted '
                        'answers)}, optionally "long": true (a free-form answer) and "category": TEXT (scored per '
                        "category); other fields are ignored. Every line and image is checked before the model "
                        "loads. Answers are normalised as the official VQA evaluation does (lower case, punctuation, "
                        "articles, number words, contractions: minilazy/study/normalize.py); a short answer is "
                        "correct if it equals an accepted answer after normalisation (exact match, not the VQA "
                        "3-of-10 soft accuracy); a long one scores its best token F1 against them. Reported per "
                        "run: accuracy of the short answers, mean F1 of the long ones, the score per category. "
                        "Lazy plans are calibrated on the images and questions (never the answers) of the first "
                        "--calib lines, which are also evaluated")
    p.add_argument("--prompt-suffix", metavar="TEXT",
                   help="with --data: added on a line of its own after every short-answer question, e.g. LLaVA-1.5's "
                        "'Answer the question using a single word or phrase.' (default: none; the question goes "
                        "through the model's own prompt layout either way)")
    p.add_argument("--lazy-method", choices=METHODS, default="js", help=LAZY_METHOD_HELP)
    p.add_argument("--mass-correction", action=argparse.BooleanOptionalAction, default=MASS_CORRECTION,
                   help=f"lazy visual layers with their per-head mass offsets (default: {MASS_CORRECTION})")
    p.add_argument("--exact-image-rows", action=argparse.BooleanOptionalAction, default=EXACT_IMAGE_ROWS,
                   help=f"lazy visual layers give image tokens their own attention in prefill (default: "
                        f"{EXACT_IMAGE_ROWS})")
    p.add_argument("--only", nargs="+", choices=KINDS, metavar="KIND",
                   help=f"run only the variants of these kinds ({', '.join(KINDS)}; default: all of them)")
    p.add_argument("--per-layer", action="store_true",
                   help="instead of the sweep, make each layer lazy alone (inheriting from the layer below) and "
                        "write per_layer.json and per_layer.png: which layers carry the cost (L evaluations)")
    p.add_argument("--out", default="study", metavar="DIR", help="output directory (default: ./study)")
    return p


def study_questions(args):
    """The question set the flags ask for; a data file is read and checked in full here, before any model work."""
    from minilazy.study import DataQuestions, DemoQuestions
    from minilazy.study.vqa_data import load_vqa_data

    if args.data is None:
        if args.prompt_suffix is not None:
            raise InputError("--prompt-suffix only applies with --data")
        return DemoQuestions(DEMO_QUESTIONS if args.n is None else args.n, args.seed_offset)
    if args.seed_offset:
        raise InputError("--seed-offset picks the demo's held-out scenes: it does not apply with --data")
    return DataQuestions(args.data, load_vqa_data(args.data, args.n), args.prompt_suffix)


def run(args) -> int:
    from minilazy.pipeline import Pipeline
    from minilazy.study import default_runs, markdown_table, run_study, write_report

    check_eval_arguments(args)
    if args.only and args.per_layer:
        raise InputError("--only picks variants of the sweep: it does not apply with --per-layer")
    questions = study_questions(args)
    pipeline = Pipeline.load(args.model, args.dtype, args.backend)
    if args.per_layer:
        from minilazy.study.per_layer import run_per_layer, write_per_layer

        result = run_per_layer(pipeline, questions, args.calib, args.batch_size, args.max_new_tokens,
                               args.mass_correction, args.exact_image_rows)
        result["command"] = command_line("study", args)
        for row in result["layers"]:
            figures = ", ".join(f"{m.column} {row[m.key]:.1%} (full attention {result['full'][m.key]:.1%})"
                                for m in questions.metrics)
            print(f"layer {row['layer']:>2} lazy: {figures}")
        print("written: " + ", ".join(str(p) for p in write_per_layer(result, args.out)))
        print(f"reproduce with: {result['command']}")
        return 0
    runs = default_runs(pipeline.config.text.num_hidden_layers)
    runs = [spec for spec in runs if spec.kind in args.only] if args.only else runs
    study = run_study(pipeline, questions, args.calib, args.batch_size, args.max_new_tokens, runs,
                      method=args.lazy_method, mass_correction=args.mass_correction,
                      exact_image_rows=args.exact_image_rows)
    study["command"] = command_line("study", args)
    paths = write_report(study, args.out)
    print(markdown_table(study))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    print(f"reproduce with: {study['command']}")
    return 0
