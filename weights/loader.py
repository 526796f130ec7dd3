"""Reading a Hugging Face safetensors checkpoint into canonical minilazy weight names.

A model directory holds either one `model.safetensors` or shards listed in
`model.safetensors.index.json`. Files are opened memory-mapped with
safetensors' `safe_open` and only the tensors the model needs are read. Every
problem with the tensors (missing, unexpected, wrong shape) is collected and
reported in one error, so a broken checkpoint is diagnosed in one run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from minilazy.kernels.backend import FLOAT_DTYPES
from minilazy.config import ModelConfig
from minilazy.errors import InputError
from weights.layouts import canonical_name, expected_shapes, is_ignored, unused_shapes

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def checkpoint_files(model_dir: str | Path) -> list[Path]:
    """The safetensors files of a model directory (one file, or the shards of the index)."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            names = sorted(set(weight_map.values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"{index}: not a valid safetensors index ({err!r})") from None
        missing = [n for n in names if not (model_dir / n).is_file()]
        if missing:
            raise InputError(f"{index} lists shards that are not in {model_dir}: {', '.join(missing)}")
        return [model_dir / n for n in names]
    if (model_dir / SINGLE_FILE).is_file():
        return [model_dir / SINGLE_FILE]
    others = sorted(p.name for p in model_dir.glob("*.bin")) if model_dir.is_dir() else []
    hint = f" (found {', '.join(others)}: only safetensors checkpoints are supported)" if others else ""
    raise InputError(f"{model_dir}: no weights, expected {SINGLE_FILE} or {INDEX_FILE}{hint}")


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable safetensors file ({err})") from None


def _describe_problems(missing, unexpected, misshaped) -> str:
    lines = []
    if missing:
        lines.append(f"missing {len(missing)}: " + ", ".join(f"{n} {list(s)}" for n, s in missing))
    if unexpected:
        lines.append(f"unexpected {len(unexpected)}: " + ", ".join(f"{k} {list(s)}" for k, s in unexpected))
    if misshaped:
        lines.append(
            f"wrong shape {len(misshaped)}: "
            + ", ".join(f"{n} is {list(got)}, expected {list(want)}" for n, got, want in misshaped)
        )
    return "\n  ".join(lines)


def load_weights(
    model_dir: str | Path,
    config: ModelConfig,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Read every weight `config` needs as `{canonical name: tensor of dtype}`."""
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"unsupported weight dtype {dtype}; expected one of {FLOAT_DTYPES}")
    needed, accepted = expected_shapes(config), unused_shapes(config)

    found: dict[str, tuple[Path, str]] = {}  # canonical name -> (file, checkpoint key)
    unexpected, misshaped = [], []
    for path in checkpoint_files(model_dir):
        with _open(path) as f:
            for key in f.keys():
                if is_ignored(key):
                    continue
                name = canonical_name(config.model_type, key)
                want = needed.get(name, accepted.get(name))
                try:
                    shape = tuple(f.get_slice(key).get_shape())
                except SafetensorError as err:
                    raise InputError(f"{path}: cannot read tensor {key!r} ({err})") from None
                if want is None:
                    unexpected.append((key, shape))
                elif name in found:
                    raise InputError(
                        f"{model_dir}: {key!r} and {found[name][1]!r} are the same weight {name!r} "
                        "under two key layouts"
                    )
                else:
                    found[name] = (path, key)
                    if shape != tuple(want):
                        misshaped.append((key, shape, want))
    missing = [(n, s) for n, s in needed.items() if n not in found]
    if missing or unexpected or misshaped:
        problems = _describe_problems(missing, unexpected, misshaped)
        raise InputError(f"{model_dir}: the checkpoint does not match config.json ({config.model_type}):\n  {problems}")

    weights = {}
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for name in needed:
        path, key = found[name]
        by_file.setdefault(path, []).append((name, key))
    for path, entries in by_file.items():
        with _open(path) as f:
            for name, key in entries:
                try:
                    weights[name] = f.get_tensor(key).to(dtype)
                except SafetensorError as err:
                    raise InputError(f"{path}: cannot read tensor {key!r} ({err})") from None
    return weights
