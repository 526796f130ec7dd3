"""The demo model, loaded once per test module, and the requests the serving tests send it."""

from pathlib import Path

import pytest

from minilazy.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "weights" / "demo"
EXAMPLES = ROOT / "examples"
# (image, question): prompts of different lengths, a text-only one among them, answers short and long
QUESTIONS = [
    (EXAMPLES / "scene_1.png", "What color is the triangle?"),
    (EXAMPLES / "scene_2.png", "Describe the image."),
    (None, "How many shapes are there?"),
    (EXAMPLES / "scene_3.png", "Is there a circle?"),
    (EXAMPLES / "scene_4.png", "Describe the image."),
]


@pytest.fixture(scope="module")
def pipeline():
    return Pipeline.load(MODEL_DIR, backend="torch")
