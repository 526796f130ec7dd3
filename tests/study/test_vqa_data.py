"""Reading a VQA data file (minilazy/study/vqa_data.py): the fields, and every bad input as a one-line error.

The errors come from `python cli.py study --data` with a model directory that does not exist: the data
file is checked in full before the model loads, so each error names the data file and its line.
"""

import json

import pytest
from PIL import Image

import cli
from minilazy.study import DataQuestions
from minilazy.study.vqa_data import VqaItem, load_vqa_data

GOOD = {"image": "images/red.png", "question": "What color is it?", "answers": ["red"]}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (16, 12), (255, 0, 0)).save(tmp_path / "images" / "red.png")
    (tmp_path / "images" / "notes.png").write_text("not an image")
    return tmp_path


def write_lines(folder, *lines: str):
    path = folder / "data.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_fields_are_read_relative_to_the_file(folder):
    long = {**GOOD, "question": "Describe it.", "answers": ["a red square", "red"], "long": True,
            "category": "describe", "question_id": 7}
    path = write_lines(folder, json.dumps(GOOD), "", "   ", json.dumps(long), json.dumps(GOOD))
    items = load_vqa_data(path)
    assert items[0] == VqaItem(1, folder / "images" / "red.png", "What color is it?", ("red",))
    assert items[1] == VqaItem(4, folder / "images" / "red.png", "Describe it.", ("a red square", "red"), True,
                               "describe")
    assert [item.line for item in load_vqa_data(path, limit=2)] == [1, 4]  # blank lines are skipped


def test_the_prompt_suffix_goes_after_short_questions_only(folder):
    long = {**GOOD, "question": "Describe it.", "long": True}
    path = write_lines(folder, json.dumps(GOOD), json.dumps(long))
    questions = DataQuestions(path, load_vqa_data(path), "Answer with one word.")
    assert [prompt for _, prompt in questions.calibration_samples(5)] == ["What color is it?\nAnswer with one word.",
                                                                         "Describe it."]
    assert [m.key for m in questions.metrics] == ["accuracy", "long_f1"]
    assert [m.key for m in DataQuestions(path, load_vqa_data(path, limit=1)).metrics] == ["accuracy"]


BAD_LINES = [
    ('{"image": "images/red.png",', "not valid JSON"),
    ('["images/red.png", "What?", ["red"]]', "expected a JSON object, got list"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "question"}), 'no "question" field'),
    (json.dumps({k: v for k, v in GOOD.items() if k != "image"}), 'no "image" field'),
    (json.dumps({k: v for k, v in GOOD.items() if k != "answers"}), 'no "answers" field'),
    (json.dumps({**GOOD, "question": 3}), '"question" must be a non-empty string'),
    (json.dumps({**GOOD, "question": "  "}), '"question" must be a non-empty string'),
    (json.dumps({**GOOD, "answers": "red"}), '"answers" must be a list of strings'),
    (json.dumps({**GOOD, "answers": ["red", 2]}), 'every entry of "answers" must be a non-empty string'),
    (json.dumps({**GOOD, "answers": []}), '"answers" is empty'),
    (json.dumps({**GOOD, "long": "yes"}), '"long" must be true or false'),
    (json.dumps({**GOOD, "category": ""}), '"category" must be a non-empty string'),
    (json.dumps({**GOOD, "image": "images/missing.png"}), "image file not found"),
    (json.dumps({**GOOD, "image": "images/notes.png"}), "not an image"),
]


def study_error(capsys, path) -> str:
    assert cli.main(["study", "--data", str(path), "--model", "no/such/model", "--backend", "torch"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("line, says", BAD_LINES)
def test_a_bad_line_is_a_one_line_error_naming_it(folder, capsys, line, says):
    path = write_lines(folder, json.dumps(GOOD), "", line, json.dumps(GOOD))
    error = study_error(capsys, path)
    assert f"{path}:3: " in error and says in error, error


@pytest.mark.parametrize("lines", [(), ("", "  ")])
def test_an_empty_file_is_an_error(folder, capsys, lines):
    path = write_lines(folder, *lines)
    assert f"{path}: no questions in the file" in study_error(capsys, path)


def test_a_missing_file_is_an_error(folder, capsys):
    assert "no such data file" in study_error(capsys, folder / "absent.jsonl")


@pytest.mark.parametrize("flags, says", [(["--prompt-suffix", "Short."], "--prompt-suffix only applies with --data"),
                                         (["--data", "x.jsonl", "--seed-offset", "3"], "does not apply with --data"),
                                         (["--only", "full", "--per-layer"], "--only picks variants of the sweep")])
def test_flags_that_do_not_go_together(capsys, flags, says):
    assert cli.main(["study", *flags, "--backend", "torch"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and says in err[0], err
