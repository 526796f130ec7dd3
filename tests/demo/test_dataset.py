"""Training batches: descriptions asked first and alone, short questions drawn from the families given."""

from pathlib import Path

import pytest

from minilazy.demo.dataset import SceneStream
from minilazy.demo.questions import DESCRIBE_QUESTION
from minilazy.pipeline import load_tokenizer
from minilazy.image_processing.clip import ClipImageProcessor

MODEL_DIR = Path(__file__).resolve().parents[2] / "weights" / "demo"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MODEL_DIR)


def conversations(tokenizer, describe_prob, families=None, batch_size=6):
    extra = {} if families is None else {"families": families}
    stream = SceneStream(tokenizer, ClipImageProcessor.from_config(None, 72), 3, batch_size, 10, describe_prob, **extra)
    batch = stream.qa_batch(max_objects=4)
    return [tokenizer.decode(ids[:n].tolist(), skip_special_tokens=True)
            for ids, n in zip(batch.input_ids, batch.lengths)]


def test_a_description_is_asked_first_and_alone(tokenizer):
    for text in conversations(tokenizer, describe_prob=1.0):
        assert text.count("USER:") == 1 and DESCRIBE_QUESTION in text, text


def test_short_questions_come_from_the_families_given(tokenizer):
    questions = [turn.split(" ASSISTANT:")[0].strip()
                 for text in conversations(tokenizer, describe_prob=0.0, families=("color",))
                 for turn in text.split("USER:")[1:]]
    assert len(questions) > 6 and all(q.startswith("What color is the") for q in questions), questions
    mixed = " ".join(conversations(tokenizer, describe_prob=0.0))
    assert DESCRIBE_QUESTION not in mixed and "What color is the" in mixed and "How many" in mixed
