"""`python cli.py study --data` end to end: the bundled demo model answers a small VQA file built here.

The file holds generated scenes saved as PNG files and held-out demo questions, one of them long
(a description, scored by token F1) and one whose accepted answers need the normalisation. The test
checks the report's fields, that the answers are the model's own (full attention, asked one by one),
and that every accuracy and F1 is what the answers give.
"""

import json
from pathlib import Path

import pytest

import cli
from minilazy.demo.evaluate import held_out_questions
from minilazy.demo.scenes import make_scene, render
from minilazy.pipeline import Pipeline
from minilazy.study import default_runs
from minilazy.study.normalize import normalize_answer, token_f1

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "weights" / "demo"
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("vqa")
    (folder / "scenes").mkdir()
    entries = []
    for seed, qa in [item for item in held_out_questions(6) if item[1].family in ("color", "shape", "count",
                                                                                    "describe")]:
        render(make_scene(seed)).save(folder / "scenes" / f"{seed}.png")
        answers = [qa.answer]
        if qa.family == "color":  # correct only once normalised: article, case, period
            answers = ["not a colour", f"The {qa.answer.title()}."]
        entries.append({"image": f"scenes/{seed}.png", "question": qa.question, "answers": answers,
                        "long": qa.family == "describe", "category": qa.family, "seed": seed})
    (folder / "data.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    return folder / "data.jsonl", entries


@pytest.fixture(scope="module")
def study(data, tmp_path_factory):
    path, _ = data
    out = tmp_path_factory.mktemp("study")
    status = cli.main(["study", "--data", str(path), "--only", "full", "lazy", "--calib", "2", "--batch-size", "4",
                       "--max-new-tokens", str(NEW_TOKENS), "--backend", "torch", "--out", str(out)])
    return status, out, json.loads((out / "study.json").read_text())


def test_report_fields(study, data):
    status, out, report = study
    assert status == 0
    settings = report["settings"]
    assert settings["data"] == str(data[0]) and (settings["n"], settings["short"], settings["long"]) == (4, 3, 1)
    assert settings["calibration_questions"] == 2 and "--data" in report["command"]
    assert [m["key"] for m in report["metrics"]] == ["accuracy", "long_f1"] and report["groups"] == "per_category"
    kinds = [spec for spec in default_runs(12) if spec.kind in ("full", "lazy")]
    assert [run["name"] for run in report["runs"]] == [spec.name for spec in kinds]
    for run in report["runs"]:
        assert list(run["per_category"]) == ["color", "shape", "count", "describe"]
        assert (run["kv_saved_percent"] > 0) == (run["lazy_layers"] > 0)
    table = (out / "study.md").read_text()
    assert "| short accuracy | color | shape | count | describe | long F1 |" in table
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_answers_are_the_models_own(study, data):
    _, _, report = study
    pipeline = Pipeline.load(DEMO, backend="torch")
    asked = [pipeline.ask(entry["question"], data[0].parent / entry["image"], max_new_tokens=NEW_TOKENS).text
             for entry in data[1]]
    assert report["runs"][0]["answers"] == asked


def test_scores_are_what_the_answers_give(study, data):
    _, _, report = study
    entries = data[1]
    for run in report["runs"]:
        scores = [max(token_f1(answer, a) for a in entry["answers"]) if entry["long"] else
                  float(normalize_answer(answer) in {normalize_answer(a) for a in entry["answers"]})
                  for entry, answer in zip(entries, run["answers"], strict=True)]
        short = [s for s, entry in zip(scores, entries) if not entry["long"]]
        assert run["accuracy"] == pytest.approx(sum(short) / len(short)), run["name"]
        assert run["long_f1"] == pytest.approx(scores[3]) == pytest.approx(run["per_category"]["describe"])
        assert run["per_category"]["color"] == scores[0]
