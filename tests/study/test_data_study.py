"""`python cli.py study --data` end to end: the bundled demo model answers a small VQA file built here.

The file holds held-out demo questions and their generated scenes saved as PNG files, one of them
long (a description, scored by token F1) and one whose accepted answers need the normalisation. The
tests check the report's fields, that the answers are the model's own (full attention, asked one by
one), that every accuracy and F1 is what the answers give, and the per-layer ablation on the file.
"""

import json
from pathlib import Path

import pytest

import cli
from minilazy.demo.vqa_export import export_questions
from minilazy.pipeline import Pipeline
from minilazy.study import default_runs
from minilazy.study.normalize import normalize_answer, token_f1

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "weights" / "demo"
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The exported held-out questions of four families; the colour question's answers need normalising."""
    path = export_questions(6, tmp_path_factory.mktemp("vqa"))
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    entries = [entry for entry in entries if entry["category"] in ("color", "shape", "count", "describe")]
    color = entries[0]
    color["answers"] = ["not a colour", f"The {color['answers'][0].title()}."]  # article, case, period
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    return path, entries


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
    assert report["runs"][0]["per_category"]["color"] == 1.0  # the full model's colour, accepted after normalising


def test_per_layer_ablation_on_data(data, tmp_path):
    assert cli.main(["study", "--data", str(data[0]), "--per-layer", "--calib", "2", "--max-new-tokens", "4",
                     "--backend", "torch", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "per_layer.json").read_text())
    assert [m["key"] for m in result["metrics"]] == ["accuracy", "long_f1"]
    assert [row["layer"] for row in result["layers"]] == list(range(1, 12))
    for row in [result["full"], *result["layers"]]:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["long_f1"] <= 1
    assert (tmp_path / "per_layer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
