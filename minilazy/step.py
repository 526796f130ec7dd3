"""Where the tokens of one forward step sit in the batch and in the caches.

A step processes `T` new tokens for each of `B` sequences (padded: sequence b
has `q_len[b] <= T` real ones). Every layer reads the same `Step`: the RoPE
position ids, the cache slot each new token is written to, and the lengths the
attention kernels need (see docs/kernels.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Step:
    positions: torch.Tensor  # [B, T] int64 RoPE position ids
    slots: torch.Tensor  # [B, T] int64 cache slot per new token, -1 for padding
    q_start: torch.Tensor  # [B] int32 slot of the first new token
    q_len: torch.Tensor  # [B] int32 real new tokens
    kv_len: torch.Tensor  # [B] int32 cached tokens once this step is written

    @property
    def is_decode(self) -> bool:
        return self.slots.shape[1] == 1

    @classmethod
    def span(cls, start: torch.Tensor, length: torch.Tensor, width: int) -> Step:
        """Tokens `start[b] .. start[b] + length[b] - 1` of each sequence, padded to `width`.

        A token's RoPE position is its slot (FastV builds its own steps, where they differ).
        """
        offsets = torch.arange(width, device=start.device)
        slots = start[:, None].long() + offsets[None, :]  # [B, T]
        valid = offsets[None, :] < length[:, None]
        return cls(
            positions=torch.where(valid, slots, 0),
            slots=torch.where(valid, slots, -1),
            q_start=start.int(),
            q_len=length.int(),
            kv_len=(start + length).int(),
        )
