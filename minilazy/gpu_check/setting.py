"""What a part runs on: the device, the backend under test and what it is compared with, real or dry run.

On a CUDA machine the backend under test is `triton` on the GPU. Without CUDA (a dry run on a CPU)
the `reference` backend stands in for it, and its comparisons are made against the `torch` backend,
so that every comparison still compares two different code paths.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Setting:
    dry_run: bool
    budget_s: float  # this part's time limit, so that it can stop early and keep what it measured

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def subject(self) -> str:
        """The backend under test."""
        return "triton" if self.device.type == "cuda" else "reference"

    @property
    def baseline(self) -> str:
        """The backend it is checked against, always on the CPU."""
        return "reference" if self.subject != "reference" else "torch"


def machine() -> dict:
    """What ran the check: the GPU (if any) and the versions that matter."""
    import triton

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count(), "gpu": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_bytes": props.total_memory, "multiprocessors": props.multi_processor_count}
    return info


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a part killed at its time limit leaves the last complete file, never half of one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)
