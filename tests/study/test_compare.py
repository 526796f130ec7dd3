"""`python cli.py compare-studies`: the lazy runs of each study as a curve, the baselines once, clear errors."""

import json

import pytest

import cli
from minilazy.errors import InputError
from minilazy.study.compare import comparison_table, curves, load_study, method_label

METRICS = [{"key": "accuracy", "column": "overall", "axis": "accuracy"}]
SUBJECT = "300 held-out questions"


def run(name, kind, saved, accuracy, lazy_layers=0):
    return {"name": name, "settings": {"kind": kind}, "kv_saved_percent": saved, "accuracy": accuracy,
            "lazy_layers": lazy_layers}


def study(method, refined, lazy, subject=SUBJECT):
    """A study.json's fields: full attention, lazy runs `[(saved, accuracy)]` and FastV."""
    runs = [run("full attention", "full", 0.0, 0.9), run("FastV K=2 R=0.5", "fastv", 21.2, 0.7)]
    runs += [run(f"lazy {i}", "lazy", saved, accuracy, i + 1) for i, (saved, accuracy) in enumerate(lazy)]
    return {"settings": {"lazy_method": method, "mass_correction": refined, "exact_image_rows": refined},
            "subject": subject, "metrics": METRICS, "runs": runs,
            "command": f"python cli.py study --lazy-method {method}"}


def test_a_curve_per_method_and_the_baselines_once():
    studies = [study("js", False, [(12.6, 0.5), (6.3, 0.6)]), study("greedy", True, [(6.3, 0.88)])]
    drawn = curves(studies)
    assert [(label, kind, [r["kv_saved_percent"] for r in runs], i) for label, kind, runs, i in drawn] == [
        ("Lazy Attention (visual scope), js, plain", "lazy", [6.3, 12.6], 0),
        ("Lazy Attention (visual scope), greedy, refined", "lazy", [6.3], 1),
        ("full attention", "full", [0.0], None),
        ("FastV", "fastv", [21.2], None),
    ]
    rows = comparison_table(studies).splitlines()[2:]
    assert len(rows) == 5 and rows[0].startswith("| 0.0% | full attention")
    assert [row.split(" | ")[0] for row in rows] == ["| 0.0%", "| 6.3%", "| 6.3%", "| 12.6%", "| 21.2%"]
    assert method_label({"settings": {"lazy_method": "rank", "mass_correction": True}}) == "rank, mass correction"


def test_studies_on_different_questions_or_models_are_refused():
    with pytest.raises(InputError, match="different questions"):
        curves([study("js", False, [(6.3, 0.6)]), study("rank", True, [(6.3, 0.8)], subject="my.jsonl")])
    other_model = study("rank", True, [(6.3, 0.8)])
    other_model["settings"]["model"] = "smolvlm"
    with pytest.raises(InputError, match="differ in model"):
        curves([study("js", False, [(6.3, 0.6)]), other_model])


def test_the_command_writes_the_table_and_the_plot(tmp_path, capsys):
    paths = []
    for method, refined in (("js", False), ("rank", True)):
        path = tmp_path / f"{method}.json"
        path.write_text(json.dumps(study(method, refined, [(6.3, 0.7), (12.6, 0.6)])))
        paths.append(str(path))
    assert cli.main(["compare-studies", *paths, "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "rank, refined" in table and "python cli.py study --lazy-method js" in table
    assert (tmp_path / "out" / "compare.png").stat().st_size > 10_000
    assert "written:" in capsys.readouterr().out


BAD_RUN = {"settings": {}, "subject": SUBJECT, "metrics": METRICS, "runs": [{"name": "x", "settings": {}}]}


@pytest.mark.parametrize("content, match", [(None, "no such file"), ("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
                                            ('{"runs": []}', "needs settings, subject"),
                                            (json.dumps({**BAD_RUN, "metrics": []}), "metrics are not"),
                                            (json.dumps(BAD_RUN), "run 0 is not a study's run")])
def test_bad_study_files_get_one_clear_error(tmp_path, capsys, content, match):
    path = tmp_path / "study.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=match):
        load_study(path)
    assert cli.main(["compare-studies", str(path), "--out", str(tmp_path / "out")]) == 2
    assert match in capsys.readouterr().err
