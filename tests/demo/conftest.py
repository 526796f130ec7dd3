"""The random two-layer demo model the training tests share, built once per test module."""

from pathlib import Path

import pytest

from minilazy.config import parse_config
from minilazy.demo.initialization import demo_config, init_weights
from minilazy.demo.tokenizer import IMAGE, PAD
from minilazy.image_processing.clip import ClipImageProcessor
from minilazy.model import Model
from minilazy.pipeline import load_tokenizer

DEMO = Path(__file__).resolve().parents[2] / "weights" / "demo"


@pytest.fixture(scope="module")
def tiny_model():
    """The model (torch backend), its weights (fp32 leaves that require grad), the demo tokenizer and the processor."""
    tokenizer = load_tokenizer(DEMO)
    config_dict = demo_config(tokenizer.get_vocab_size(), tokenizer.token_to_id(IMAGE), tokenizer.token_to_id(PAD),
                              layers=2, hidden=64, vision_hidden=32, vision_layers=2)
    weights = {n: w.requires_grad_() for n, w in init_weights(config_dict, seed=3).items()}
    model = Model.from_weights(parse_config(config_dict), weights, backend="torch")
    return model, weights, tokenizer, ClipImageProcessor.from_config(None, model.config.vision.image_size)
