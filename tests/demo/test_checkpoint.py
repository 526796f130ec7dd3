"""The shipped demo checkpoint: its shape is as documented, and it answers held-out questions by looking."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minilazy.config import load_config
from minilazy.demo.evaluate import greedy_answers, held_out_questions
from minilazy.demo.scenes import make_scene, render
from minilazy.pipeline import Pipeline

MODEL_DIR = Path(__file__).resolve().parents[2] / "weights" / "demo"
SAMPLE_OFFSET = 7_000_000  # a fixed held-out sample, apart from the default evaluation range
# The shipped checkpoint answers 48 of these 50, and 16 with each question asked about the wrong
# image. The bar is the one the demo model is held to: 80%.
MIN_CORRECT = 40


@pytest.fixture(scope="module")
def pipeline():
    assert (MODEL_DIR / "model.safetensors").is_file(), f"the demo checkpoint is missing from {MODEL_DIR}"
    return Pipeline.load(MODEL_DIR, backend="torch")


@pytest.fixture(scope="module")
def sample():
    return held_out_questions(50, SAMPLE_OFFSET)


def test_checkpoint_layout():
    config = load_config(MODEL_DIR)
    raw = json.loads((MODEL_DIR / "config.json").read_text())
    assert config.model_type == "llava" and raw["vision_feature_layer"] == -2
    assert config.text.num_hidden_layers >= 12
    assert config.text.num_key_value_heads < config.text.num_attention_heads
    assert config.image_tokens_per_image >= 64
    assert (MODEL_DIR / "model.safetensors").stat().st_size <= 50 * 2**20
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"):
        assert (MODEL_DIR / name).is_file(), name


@pytest.mark.slow
def test_answers_most_held_out_questions(pipeline, sample):
    answers = greedy_answers(pipeline, sample, max_new_tokens=64)
    wrong = [(qa.question, qa.answer, got) for (_, qa), got in zip(sample, answers) if got != qa.answer]
    assert len(sample) - len(wrong) >= MIN_CORRECT, f"{len(wrong)} of 50 wrong, e.g. {wrong[:5]}"


def test_answers_depend_on_the_image(pipeline, sample):
    # each question about the next question's scene: a model that ignores the image would not notice
    swapped = [(sample[(i + 1) % len(sample)][0], qa) for i, (_, qa) in enumerate(sample)]
    answers = greedy_answers(pipeline, swapped, max_new_tokens=64)
    right = sum(got == qa.answer for (_, qa), got in zip(swapped, answers))
    assert right <= 30, f"{right} of 50 right with the wrong images"


def test_transformers_gives_the_same_greedy_answers(pipeline, sample):
    # one question of each family; transformers' own image processor makes its pixel values
    transformers = pytest.importorskip("transformers")
    reference, loading = transformers.LlavaForConditionalGeneration.from_pretrained(MODEL_DIR, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"], loading
    reference.eval()
    processor = transformers.CLIPImageProcessor.from_pretrained(MODEL_DIR)
    for seed, qa in sample[:6]:
        request = pipeline.request(qa.question, render(make_scene(seed)))
        pixels = processor(images=render(make_scene(seed)), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = reference.generate(input_ids=torch.tensor([request.input_ids]), pixel_values=pixels,
                                     attention_mask=torch.ones(1, len(request.input_ids), dtype=torch.long),
                                     max_new_tokens=64, do_sample=False, eos_token_id=sorted(pipeline.stop_ids),
                                     pad_token_id=pipeline.tokenizer.token_to_id("<pad>"))
        expected = out[0, len(request.input_ids):].tolist()
        got = greedy_answers(pipeline, [(seed, qa)], max_new_tokens=64)[0]
        assert got == pipeline.decode(expected), (qa.question, got, pipeline.decode(expected))


def test_readme_quick_start_gets_the_right_answer():
    repo = MODEL_DIR.parents[1]
    command = 'python cli.py --image examples/scene_1.png --prompt "What color is the triangle?"'
    assert command in (repo / "README.md").read_text(), "the README's quick start changed: update this test"
    key = [line.split("\t") for line in (repo / "examples" / "questions.txt").read_text().splitlines()
           if line and not line.startswith("#")]
    assert ["scene_1.png", "What color is the triangle?", "red"] in key
    result = subprocess.run([sys.executable, "cli.py", "--image", "examples/scene_1.png", "--prompt",
                             "What color is the triangle?"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "red"
