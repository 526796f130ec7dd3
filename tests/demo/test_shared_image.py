"""Shared-image batches: each question after one pass over its image gives the loss and gradients of asking
every question alone, as inference does."""

from pathlib import Path

import pytest
import torch

from minilazy.config import parse_config
from minilazy.demo import train
from minilazy.demo.dataset import SceneStream, conversation_ids, pad_batch
from minilazy.demo.initialization import demo_config, init_weights
from minilazy.demo.shared_image import shared_image_batch, shared_image_loss
from minilazy.demo.tokenizer import IMAGE, PAD
from minilazy.image_processing.clip import ClipImageProcessor
from minilazy.model import Model
from minilazy.pipeline import load_tokenizer

DEMO = Path(__file__).resolve().parents[2] / "weights" / "demo"


@pytest.fixture(scope="module")
def tiny():
    """A random two-layer demo model, its weights (leaves that require grad) and a stream with descriptions."""
    tokenizer = load_tokenizer(DEMO)
    config_dict = demo_config(tokenizer.get_vocab_size(), tokenizer.token_to_id(IMAGE), tokenizer.token_to_id(PAD),
                              layers=2, hidden=64, vision_hidden=32, vision_layers=2)
    weights = {n: w.requires_grad_() for n, w in init_weights(config_dict, seed=3).items()}
    model = Model.from_weights(parse_config(config_dict), weights, backend="torch")
    processor = ClipImageProcessor.from_config(None, model.config.vision.image_size)
    return model, weights, tokenizer, SceneStream(tokenizer, processor, seed=7, batch_size=4, questions_per_image=3,
                                                  describe_prob=0.5)


def alone_loss(model, tokenizer, pixels, conversations):
    """Every question its own single-turn sequence with its image: the mean loss of all answer tokens."""
    sequences = [conversation_ids(tokenizer, [qa]) for qas in conversations for qa in qas]
    image = torch.tensor([b for b, qas in enumerate(conversations) for _ in qas])
    return train.answer_loss(model, pad_batch(tokenizer, sequences, pixels[image]))


def gradients(loss, weights):
    return torch.autograd.grad(loss, list(weights.values()), allow_unused=True)


def test_shared_image_loss_and_gradients_equal_asking_each_question_alone(tiny):
    model, weights, tokenizer, stream = tiny
    pixels, conversations = stream.conversations(max_objects=5)
    families = {qa.family == "describe" for qas in conversations for qa in qas}
    assert families == {True, False}, "the batch should hold both groups for this test to mean anything"
    batch = shared_image_batch(tokenizer, conversations, pixels)
    assert [len(t.image) for t in batch.groups] == [sum(len(q) for q in conversations if q[0].family != "describe"),
                                                    sum(len(q) for q in conversations if q[0].family == "describe")]
    shared, alone = shared_image_loss(model, batch), alone_loss(model, tokenizer, pixels, conversations)
    torch.testing.assert_close(shared, alone)
    for got, want in zip(gradients(shared, weights), gradients(alone, weights)):
        if want is not None:
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)

