"""Multimodal RoPE positions (minilazy/mrope.py) against transformers' `get_rope_index`."""

import pytest
import torch

from minilazy.errors import InputError
from minilazy.mrope import MRopePositions
from tests.runtime.tiny_qwen_models import IMAGE_TOKEN, SPECIAL_IDS, qwen_model

START, END = SPECIAL_IDS["vision_start_token_id"], SPECIAL_IDS["vision_end_token_id"]


def prompt(*parts) -> list[int]:
    """Text runs (a number of text tokens) and images (a `(t, h, w)` grid, merge 2) in order."""
    ids = []
    for part in parts:
        if isinstance(part, int):
            ids += [5 + i % 50 for i in range(part)]
        else:
            ids += [START] + [IMAGE_TOKEN] * (part[0] * part[1] * part[2] // 4) + [END]
    return ids


CASES = {
    "one image": ([prompt(3, (1, 4, 6), 5)], [[1, 4, 6]]),
    "two images": ([prompt(2, (1, 8, 4), 3, (1, 2, 10), 4)], [[1, 8, 4], [1, 2, 10]]),
    "text only": ([prompt(9)], None),
    "batch of two": ([prompt(4, (1, 6, 6), 7), prompt(2, (1, 4, 2))], [[1, 6, 6], [1, 4, 2]]),
}


@pytest.fixture(scope="module")
def reference():
    return qwen_model("qwen2_vl", text=dict(layers=1)).model


@pytest.mark.parametrize("case", list(CASES))
def test_positions_equal_get_rope_index(reference, case):
    prompts, grids = CASES[case]
    lengths = torch.tensor([len(p) for p in prompts])
    ids = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, : len(p)] = torch.tensor(p)
    mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]  # right padding: the batch is left-aligned
    grid = None if grids is None else torch.tensor(grids)
    with torch.no_grad():
        expected, deltas = reference.get_rope_index(ids, (ids == IMAGE_TOKEN).int(), image_grid_thw=grid,
                                                    attention_mask=mask.long())
    got = MRopePositions.of_prompts(ids, lengths, IMAGE_TOKEN, grid, merge=2)
    assert torch.equal(got.prompt, expected.permute(1, 2, 0) * mask[:, :, None])
    assert got.delta.tolist() == deltas[:, 0].tolist()
    # the decode tokens after each prompt: slot + delta on every axis
    slots = lengths[:, None] + torch.arange(3)[None, :]  # [B, 3]
    assert torch.equal(got.at(slots), (slots + deltas)[:, :, None].expand(-1, -1, 3))
    assert torch.equal(got.at(torch.arange(ids.shape[1]).expand(len(prompts), -1).where(mask, -1)), got.prompt)


def test_image_tokens_must_match_the_grids():
    ids = torch.tensor([prompt(2, (1, 4, 4), 2)])
    with pytest.raises(InputError, match="gives 6 tokens, but the prompt has 4"):
        MRopePositions.of_prompts(ids, torch.tensor([ids.shape[1]]), IMAGE_TOKEN, torch.tensor([[1, 4, 6]]), 2)
    with pytest.raises(InputError, match="more image grids"):
        MRopePositions.of_prompts(ids, torch.tensor([ids.shape[1]]), IMAGE_TOKEN, torch.tensor([[1, 4, 4]] * 2), 2)
