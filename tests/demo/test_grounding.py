"""The grounding loss: its labels sit where each answer is read and name the right cells, and it
reads the residual stream at the input of the layer asked for."""

import random

import pytest
import torch

from minilazy.demo import train
from minilazy.demo.dataset import SceneStream
from minilazy.demo.grounding import (
    IGNORE, SLOTS, StreamCapture, grounding_loss, grounding_targets, named_object, objects_named,
)
from minilazy.demo.questions import QA, ask
from minilazy.demo.scenes import CELL_NAMES, Scene, SceneObject, make_scene

FAMILIES = ("relation", "where", "color", "count", "exist", "shape")


@pytest.fixture(scope="module")
def grounded_batch(tiny_model):
    _, _, tokenizer, processor = tiny_model
    stream = SceneStream(tokenizer, processor, seed=7, batch_size=4, questions_per_image=6, describe_prob=0.25,
                         families=FAMILIES)
    batch, scenes, conversations = stream.scene_qa_batch(max_objects=6)
    return tokenizer, batch, scenes, conversations, grounding_targets(batch, scenes, conversations)


def test_labels_sit_on_the_token_before_each_answer_that_names_objects(grounded_batch):
    tokenizer, batch, _, conversations, targets = grounded_batch
    scored = (targets != IGNORE).any(-1)  # [B, T]
    naming = sum(qa.family in ("relation", "where", "color") for qas in conversations for qa in qas)
    assert naming > 0 and int(scored.sum()) == naming
    for row, t in scored.nonzero().tolist():
        assert tokenizer.decode(batch.input_ids[row, : t + 1].tolist()).endswith("ASSISTANT:")
        assert not batch.loss_mask[row, t] and batch.loss_mask[row, t + 1]


def test_labels_agree_with_the_answers(grounded_batch):
    """Where-answers name the labelled cell; relation answers follow from the labelled rows and columns."""
    _, batch, _, conversations, targets = grounded_batch
    reads = (batch.loss_mask[:, 1:] & ~batch.loss_mask[:, :-1]).nonzero().tolist()  # one per answer, in order
    by_row = {}
    for row, t in reads:
        by_row.setdefault(row, []).append(targets[row, t].tolist())
    checked = 0
    for row, qas in enumerate(conversations):
        for qa, (row_a, col_a, row_b, col_b) in zip(qas, by_row[row]):
            if qa.family in ("where", "color"):
                assert row_b == col_b == IGNORE and row_a >= 0 and col_a >= 0
            if qa.family == "where":
                assert qa.answer == CELL_NAMES[row_a][col_a]
                checked += 1
            elif qa.family == "relation":
                compared = (col_a, col_b) if " left of " in qa.question else (row_a, row_b)
                assert qa.answer == ("yes" if compared[0] < compared[1] else "no")
                checked += 1
            elif qa.family not in ("color",):
                assert row_a == IGNORE
    assert checked > 0


def test_named_object_finds_the_one_object_a_phrase_names():
    scene = Scene(0, (SceneObject("circle", "red", "large", 0, 0), SceneObject("circle", "blue", "small", 1, 2)))
    assert named_object(scene, "red circle") == scene.objects[0]
    assert named_object(scene, "small circle") == scene.objects[1]
    with pytest.raises(ValueError, match="names 2 objects"):
        named_object(scene, "circle")
    assert objects_named(scene, QA("count", "How many circles are there?", "2")) == []


def test_every_question_asked_in_training_resolves_its_objects():
    rng = random.Random(0)
    for seed in range(200):
        scene = make_scene(seed)
        for family in FAMILIES:
            if (qa := ask(scene, family, rng)) is not None:
                assert all(o in scene.objects for o in objects_named(scene, qa))


def test_capture_reads_the_input_of_its_layer_and_leaves_the_loss_unchanged(tiny_model, grounded_batch):
    model, weights, _, _ = tiny_model
    _, batch, _, _, targets = grounded_batch
    first = StreamCapture([0])
    with torch.no_grad():
        loss = train.answer_loss(model, batch, first)
        torch.testing.assert_close(loss, train.answer_loss(model, batch))
        torch.testing.assert_close(first.streams[0], model.embed(batch.input_ids, model.image_features(batch.pixel_values)))
    last = StreamCapture([1])
    train.answer_loss(model, batch, last)
    grounding_loss(last.streams[1], targets).backward()
    layer_0 = weights["text.layers.0.mlp.down_proj.weight"].grad
    layer_1 = [w.grad for n, w in weights.items() if n.startswith("text.layers.1.")]
    assert layer_0 is not None and layer_0.abs().sum() > 0, "the layers before the read must learn from it"
    assert all(g is None or g.abs().sum() == 0 for g in layer_1), "the layer read at its input must not"
    for w in weights.values():
        w.grad = None


def test_grounding_loss_is_zero_without_labels_and_near_chance_at_random():
    stream = torch.randn(2, 5, 16)
    assert grounding_loss(stream, torch.full((2, 5, len(SLOTS)), IGNORE)).item() == 0
    targets = torch.full((2, 5, len(SLOTS)), IGNORE)
    targets[:, 2] = torch.tensor([0, 1, 2, 0])
    assert 0.5 < grounding_loss(stream, targets).item() < 3.0  # 3 classes: ln 3 = 1.1 for an uninformed readout


def test_the_grounding_layer_defaults_to_8():
    assert train.parse_args(["--out", "out/x", "--grounding-weight", "0.3"]).grounding_layer == 8


@pytest.mark.slow
def test_a_tiny_run_with_the_grounding_loss_logs_it(tmp_path):
    out = tmp_path / "run"
    tiny = ["--out", str(out), "--threads", "1", "--layers", "2", "--hidden", "32", "--vision-hidden", "32",
            "--vision-steps", "0", "--steps", "25", "--batch-size", "2", "--questions-per-image", "3",
            "--warmup", "2", "--validation-size", "4", "--families", "relation", "where", "--describe-prob", "0",
            "--grounding-weight", "0.5"]
    with pytest.raises(SystemExit, match="--grounding-layer 2 is not a layer of this 2-layer decoder"):
        train.main(tiny + ["--grounding-layer", "2"])
    train.main(tiny + ["--grounding-layer", "1"])
    logged = [line for line in (out / "training_log.txt").read_text().splitlines() if "qa step 25 " in line]
    assert logged and " grounding " in logged[0] and "nan" not in logged[0]
