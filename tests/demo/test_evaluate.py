"""The accuracy harness's per-family scoring: accuracy beside the majority baseline and the model's commonest answer."""

from minilazy.demo.evaluate import (EXIST_CASES, RELATION_CASES, exist_case, format_table, relation_case, score_cases,
                                    score_families)
from minilazy.demo.questions import FAMILIES, QA
from minilazy.demo.scenes import Scene, SceneObject


def test_a_model_that_always_says_no_scores_the_majority_baseline_and_is_seen_to():
    expected = ["no", "no", "yes", "no", "yes"]
    questions = [QA("relation", f"Is the red circle left of the square {i}?", a) for i, a in enumerate(expected)]
    questions += [QA("color", "What color is the circle?", "red"), QA("color", "What color is the cross?", "blue")]
    answers = ["no"] * 5 + ["red", "blue"]
    rows = score_families(questions, answers)
    assert set(rows) == set(FAMILIES)
    relation = rows["relation"]
    assert (relation["correct"], relation["total"]) == (3, 5)
    assert relation["accuracy"] == relation["majority_baseline"] == 0.6
    assert (relation["top_answer"], relation["top_answer_share"]) == ("no", 1.0)
    color = rows["color"]
    assert (color["accuracy"], color["majority_baseline"], color["top_answer_share"]) == (1.0, 0.5, 0.5)
    assert rows["count"] == {"correct": 0, "total": 0, "accuracy": 0.0, "majority_baseline": 0.0,
                             "top_answer": None, "top_answer_share": 0.0}


def test_table_shows_the_baseline_and_the_commonest_answer():
    questions = [QA("relation", "Is the red circle above the square?", "yes"), QA("describe", "Describe the image.", "x" * 40)]
    rows = score_families(questions, ["no", "x" * 40])
    table = format_table({"per_family": rows, "accuracy": 0.5, "n": 2,
                          "describe_objects": {"precision": 1.0, "recall": 1.0, "f1": 1.0}})
    relation_line = next(line for line in table.splitlines() if line.startswith("relation"))
    assert "0.0%" in relation_line and "100.0%" in relation_line and "'no' (100%)" in relation_line
    assert "..." in next(line for line in table.splitlines() if line.startswith("describe"))


def test_exist_cases_tell_what_the_scene_holds_of_the_object_asked_about():
    scene = Scene(0, (SceneObject("circle", "red", "large", 0, 0), SceneObject("square", "blue", "small", 1, 1)))
    assert exist_case(scene, "Is there a red circle?") == "present"
    assert exist_case(scene, "Is there a blue circle?") == "colour and shape elsewhere"
    assert exist_case(scene, "Is there a red cross?") == "one of them in the scene"
    assert exist_case(scene, "Is there a green cross?") == "neither in the scene"


def test_a_model_that_always_says_yes_fails_every_absent_case_and_the_table_says_so():
    rows = [("present", "yes", "yes"), ("neither in the scene", "no", "yes"), ("neither in the scene", "no", "yes"),
            ("colour and shape elsewhere", "no", "yes")]
    scores = score_cases(rows, EXIST_CASES)
    assert scores["present"] == {"correct": 1, "total": 1, "accuracy": 1.0, "yes_share": 1.0}
    assert (scores["neither in the scene"]["accuracy"], scores["neither in the scene"]["total"]) == (0.0, 2)
    assert scores["one of them in the scene"]["total"] == 0
    table = format_table({"per_family": score_families([], []), "accuracy": 0.0, "n": 4, "exist_by_case": scores,
                          "describe_objects": {"precision": 0.0, "recall": 0.0, "f1": 0.0}})
    line = next(line for line in table.splitlines() if line.startswith("exist by"))
    assert "present 100% of 1" in line and "neither in the scene 0% of 2" in line and "one of them" not in line


def test_relation_cases_tell_where_the_first_object_is_against_the_second():
    scene = Scene(0, (SceneObject("circle", "red", "large", 0, 0), SceneObject("square", "blue", "small", 0, 2),
                      SceneObject("cross", "green", "small", 2, 0)))
    assert relation_case(scene, "Is the circle left of the square?") == "left of: yes"
    assert relation_case(scene, "Is the square left of the circle?") == "left of: to its right"
    assert relation_case(scene, "Is the circle left of the cross?") == "left of: same column"
    assert relation_case(scene, "Is the circle above the cross?") == "above: yes"
    assert relation_case(scene, "Is the cross above the circle?") == "above: below it"
    assert relation_case(scene, "Is the square above the circle?") == "above: same row"


def test_relation_cases_are_scored_and_shown_beside_the_exist_cases():
    rows = [("left of: yes", "yes", "no"), ("left of: yes", "yes", "yes"), ("above: same row", "no", "no")]
    scores = score_cases(rows, RELATION_CASES)
    assert scores["left of: yes"] == {"correct": 1, "total": 2, "accuracy": 0.5, "yes_share": 0.5}
    table = format_table({"per_family": score_families([], []), "accuracy": 0.0, "n": 3, "relation_by_case": scores,
                          "describe_objects": {"precision": 0.0, "recall": 0.0, "f1": 0.0}})
    line = next(line for line in table.splitlines() if line.startswith("relation by case"))
    assert "left of: yes 50% of 2" in line and "above: same row 100% of 1" in line and "below it" not in line
