"""The position probe: its targets match the questions, and its probes read what the states hold."""

from pathlib import Path

import pytest

from experiments.position_probe import (
    BY_RELATION, TARGETS, format_table, position_probe, relation_items, targets,
)
from minilazy.demo.dataset import EVAL_SEED_START
from minilazy.demo.questions import relation_subject
from minilazy.pipeline import Pipeline

MODEL_DIR = Path(__file__).resolve().parents[2] / "weights" / "demo"


def test_targets_give_each_question_its_answer():
    for seed, qa in relation_items(200, 0):
        row_a, col_a, row_b, col_b, yes = targets(seed, qa)
        _, relation, _ = relation_subject(qa.question)
        assert yes == (col_a < col_b if relation == "left of" else row_a < row_b), qa
        assert {row_a, col_a, row_b, col_b} <= {0, 1, 2} and (row_a, col_a) != (row_b, col_b)


def test_probes_are_at_chance_on_the_embeddings_and_read_the_first_row_later():
    result = position_probe(Pipeline.load(MODEL_DIR), n=60)
    assert len(result["layers"]) == 12 and set(result["layers"][0]) == {*TARGETS, *BY_RELATION}
    # every prompt ends in the same token, so the first layer's input is one state: the probe can only
    # give one class to every question, and scores that class's share of the held-out questions
    held_out = relation_items(60, EVAL_SEED_START)
    classes = {name: [targets(seed, qa)[TARGETS.index(name)] for seed, qa in held_out] for name in TARGETS}
    for name in TARGETS:
        shares = {c: classes[name].count(c) / len(held_out) for c in set(classes[name])}
        assert any(abs(result["layers"][0][name] - share) < 1e-9 for share in shares.values()), name
    assert result["layers"][0]["row a"] == result["majority"]["row a"]  # no tie among its classes
    assert max(row["row a"] for row in result["layers"]) > result["majority"]["row a"] + 0.25
    assert len(format_table(result).splitlines()) == 12 + 3


def test_too_few_questions_is_a_clear_error():
    from experiments.position_probe import main

    with pytest.raises(SystemExit, match="at least 10"):
        main(["--n", "5"])


def test_a_model_that_is_not_a_demo_model_is_a_clear_error(tmp_path):
    from experiments.position_probe import main
    from tests.runtime.tiny_models import save_llama, save_tokenizer

    with pytest.raises(SystemExit, match="no such model directory"):
        main(["--model", str(tmp_path / "missing")])
    save_llama(tmp_path)
    save_tokenizer(tmp_path)
    with pytest.raises(SystemExit, match="not a demo model"):
        main(["--model", str(tmp_path)])
