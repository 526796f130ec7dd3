"""The relation probe: transposing a scene and swapping "left of" with "above" keeps every answer right."""

import random
from pathlib import Path

import pytest
from PIL import Image

from minilazy.demo.evaluate import RELATION_CASES, relation_case
from minilazy.demo.questions import ask_relation
from experiments.relation_probe import format_table, probe, transposed_view
from minilazy.demo.scenes import Scene, SceneObject, make_scene, render
from minilazy.pipeline import Pipeline

MODEL_DIR = Path(__file__).resolve().parents[2] / "weights" / "demo"


def transposed(scene: Scene) -> Scene:
    """The scene with every object's row and column exchanged."""
    return Scene(scene.seed, tuple(SceneObject(o.shape, o.color, o.size, o.col, o.row) for o in scene.objects))


def test_transposed_view_swaps_the_relation_and_mirrors_the_image():
    image = Image.new("RGB", (4, 4))
    image.putpixel((3, 0), (255, 0, 0))  # top right
    question, view = transposed_view("Is the red circle left of the small square?", image)
    assert question == "Is the red circle above the small square?"
    assert view.getpixel((0, 3)) == (255, 0, 0)  # bottom left: row and column exchanged
    assert transposed_view("Is the cross above the red diamond?", image)[0] == "Is the cross left of the red diamond?"


def test_the_swapped_question_about_the_transposed_scene_keeps_its_case_and_answer():
    rng, checked = random.Random(5), 0
    for seed in range(40):
        scene = make_scene(seed)
        qa = ask_relation(scene, rng)
        if qa is None:
            continue
        question, _ = transposed_view(qa.question, render(scene))
        case = RELATION_CASES.index(relation_case(scene, qa.question))
        # "left of: yes" <-> "above: yes", "same column" <-> "same row", "to its right" <-> "below it"
        assert RELATION_CASES.index(relation_case(transposed(scene), question)) == (case + 3) % 6
        checked += 1
    assert checked > 20


def test_probe_runs_on_the_shipped_model_and_prints_both_views():
    result = probe(Pipeline.load(MODEL_DIR, backend="torch"), 12)
    assert result["n_relation"] == 2
    for view in ("as drawn", "transposed"):
        assert sum(row["total"] for row in result[view].values()) == 2
    assert "transposed" in format_table(result).splitlines()[0]


def test_too_few_questions_is_a_clear_error():
    from experiments.relation_probe import main

    with pytest.raises(SystemExit, match="at least 5"):
        main(["--n", "2"])
