"""Shared-image batches: each question after one pass over its image gives the loss and gradients of asking
every question alone, as inference does."""

import pytest
import torch

from minilazy.demo import train
from minilazy.demo.dataset import SceneStream, conversation_ids, pad_batch
from minilazy.demo.shared_image import shared_image_batch, shared_image_loss


@pytest.fixture(scope="module")
def tiny(tiny_model):
    """The tiny model, its weights, the tokenizer and a stream where half the conversations are descriptions."""
    model, weights, tokenizer, processor = tiny_model
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
    pixels, _, conversations = stream.conversations(max_objects=5)
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
