"""Writing canonical weights as a LLaVA checkpoint in the original llava-hf key layout.

The result (`config.json` + `model.safetensors`) loads both in minilazy and in
transformers' `LlavaForConditionalGeneration.from_pretrained`. CLIP layers past the feature
layer and the tower's post-LayerNorm are never used: when the weights lack them they are
written as zeros (LayerNorm weights as ones), so that transformers finds every tensor it has.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from minilazy.config import parse_config, write_json
from weights.layouts import LLAVA_ORIGINAL_PREFIXES, expected_shapes, unused_shapes

# canonical prefix -> original llava-hf prefix
_TO_ORIGINAL = {canonical: source for source, canonical in LLAVA_ORIGINAL_PREFIXES}


def original_llava_key(name: str) -> str:
    """The original llava-hf key of a canonical name (`text.norm.weight` -> `language_model.model.norm.weight`)."""
    for canonical, source in _TO_ORIGINAL.items():
        if name.startswith(canonical):
            return source + name[len(canonical):]
    raise ValueError(
        f"{name!r} is not a canonical LLaVA weight name (expected a text./lm_head./vision./projector. prefix)"
    )


def save_llava_checkpoint(out_dir: str | Path, config_dict: dict, weights: dict[str, torch.Tensor]) -> Path:
    """Write `config_dict` as config.json and `weights` (canonical names) as model.safetensors; return out_dir."""
    config = parse_config(config_dict)
    if config.model_type != "llava":
        raise ValueError(f"save_llava_checkpoint writes LLaVA checkpoints, got model_type {config.model_type!r}")
    needed, unused = expected_shapes(config), unused_shapes(config)
    missing = sorted(set(needed) - set(weights))
    unknown = sorted(set(weights) - set(needed) - set(unused))
    wrong = [
        f"{n} is {list(t.shape)}, expected {list(needed.get(n, unused.get(n)))}"
        for n, t in weights.items()
        if n in needed or n in unused
        if tuple(t.shape) != tuple(needed.get(n, unused.get(n)))
    ]
    if missing or unknown or wrong:
        raise ValueError(f"weights do not match the config: missing {missing}, unknown {unknown}, wrong shape {wrong}")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage (e.g. a tied head): give each its own copy.
    tensors = {original_llava_key(n): t.detach().to("cpu").contiguous().clone() for n, t in weights.items()}
    for name, shape in unused.items():
        if name.startswith("vision.") and name not in weights:
            fill = 1.0 if "norm" in name and name.endswith(".weight") else 0.0
            tensors[original_llava_key(name)] = torch.full(shape, fill)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    write_json(out_dir / "config.json", config_dict)
    return out_dir
