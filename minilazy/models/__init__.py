"""The networks a checkpoint holds: Llama decoder, CLIP and SigLIP vision towers, and their connectors.

Each class takes the checkpoint's tensors under canonical names (see weights/layouts.py) with its own
prefix removed; `with_prefix` cuts one part out of the full set.
"""

from __future__ import annotations

import torch


def with_prefix(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix`, with the prefix removed."""
    return {name.removeprefix(prefix): w for name, w in weights.items() if name.startswith(prefix)}
