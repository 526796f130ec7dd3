"""Where the tokens of one forward step sit in the batch and in the caches.

A step processes `T` new tokens for each of `B` sequences (padded: sequence b
has `q_len[b] <= T` real ones). Every layer reads the same `Step`: the RoPE
position ids, the cache slot each new token is written to, and the lengths the
attention kernels need (see docs/kernels.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from minilazy.mrope import MRopePositions


@dataclass
class Step:
    positions: torch.Tensor  # [B, T] int64 RoPE position ids, or [B, T, 3] (t, h, w) for multimodal RoPE
    slots: torch.Tensor  # [B, T] int64 cache slot per new token, -1 for padding
    q_start: torch.Tensor  # [B] int32 slot of the first new token
    q_len: torch.Tensor  # [B] int32 real new tokens
    kv_len: torch.Tensor  # [B] int32 cached tokens once this step is written

    @property
    def is_decode(self) -> bool:
        return self.slots.shape[1] == 1

    @classmethod
    def span(cls, start: torch.Tensor, length: torch.Tensor, width: int,
             mrope: MRopePositions | None = None) -> Step:
        """Tokens `start[b] .. start[b] + length[b] - 1` of each sequence, padded to `width`.

        A token's RoPE position is its slot, or its three positions in `mrope` (multimodal RoPE; FastV
        builds its own steps, where positions and slots differ).
        """
        offsets = torch.arange(width, device=start.device)
        slots = start[:, None].long() + offsets[None, :]  # [B, T]
        valid = offsets[None, :] < length[:, None]
        slots = torch.where(valid, slots, -1)
        return cls(
            positions=torch.where(valid, slots, 0) if mrope is None else mrope.at(slots),
            slots=slots,
            q_start=start.int(),
            q_len=length.int(),
            kv_len=(start + length).int(),
        )


def take_tokens(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows `index [B, T']` of the tokens of `t [B, T, ...]` (hidden states, positions on one or three axes)."""
    shape = (*index.shape, *[1] * (t.dim() - 2))  # [B, T', 1, ...]
    return t.gather(1, index.view(shape).expand(-1, -1, *t.shape[2:]))  # [B, T', ...]


def zero_padding(positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`positions [B, T]` or `[B, T, 3]` with the tokens outside `valid [B, T]` at position 0."""
    return torch.where(valid.view(*valid.shape, *[1] * (positions.dim() - 2)), positions, 0)
