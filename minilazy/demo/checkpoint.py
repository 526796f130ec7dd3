"""The demo training's checkpoint files: where a run starts from, and what it writes.

A checkpoint directory is a Hugging Face LLaVA checkpoint (config, safetensors, tokenizer and
preprocessor configs) plus `training_info.json`, the list of every training run that led to it
(command, arguments, minutes, stage and validation score), so a chained or phased checkpoint
records its whole history.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from minilazy.config import parse_config, read_json_object, write_json
from minilazy.image_processing.clip import CLIP_MEAN, CLIP_STD
from minilazy.pipeline import load_tokenizer
from weights.loader import load_weights
from weights.saver import save_llava_checkpoint


CHECKPOINT_FILES = ("config.json", "model.safetensors")


def refuse_to_overwrite(out: Path, overwrite: bool) -> None:
    """Exit with status 2 and a one-line message on stderr if `out` already holds a checkpoint and
    `overwrite` is off: training writes over the files of the directory it is given."""
    if not overwrite and any((out / name).exists() for name in CHECKPOINT_FILES):
        print(f"error: {out} already holds a checkpoint ({' or '.join(CHECKPOINT_FILES)}); pass --overwrite to "
              "write over it", file=sys.stderr)
        raise SystemExit(2)


def earlier_runs(model_dir: Path | None) -> list[dict]:
    """The training runs recorded in a checkpoint's training_info.json (none for a fresh start)."""
    path = model_dir / "training_info.json" if model_dir else None
    return read_json_object(path)["runs"] if path and path.exists() else []


def load_start(model_dir: Path) -> tuple:
    """Tokenizer, config dict and fp32 weights of an earlier checkpoint, to train further from it."""
    config_dict = read_json_object(model_dir / "config.json")
    weights = load_weights(model_dir, parse_config(config_dict), dtype=torch.float32)
    return load_tokenizer(model_dir), config_dict, {n: w.clone() for n, w in weights.items()}


def save_checkpoint(out: Path, config_dict: dict, weights: dict, runs: list[dict]) -> None:
    """The weights as a LLaVA checkpoint, and the runs so far (this one last) in training_info.json."""
    save_llava_checkpoint(out, config_dict, {n: w.detach() for n, w in weights.items()})
    write_json(out / "training_info.json", {"runs": runs})


def write_preprocessor_config(out: Path, image_size: int) -> None:
    """The CLIP image processor settings the demo's images are made for (bicubic, centre crop, CLIP norm)."""
    config = {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": image_size},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "do_convert_rgb": True,
    }
    write_json(out / "preprocessor_config.json", config)
