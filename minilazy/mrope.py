"""Position ids of Qwen2-VL's multimodal RoPE: three axes (t, h, w) per token.

The tokens of an image get their grid's coordinates: with the image's patch grid `(t, h, w)` merged by
`merge` (the vision tower's patch merger, 2x2 patches per token), the token at `(i, j, k)` of the
`t x h/merge x w/merge` grid, starting at position `s`, has positions `(s + i, s + j, s + k)`. Text
tokens advance all three axes together: the first text token after an image sits at `s + max(h, w) /
merge`, the next one 1 further, and so on. A sequence's `delta` is its largest position + 1 minus its
length, so a token at cache slot `n` past the prompt (a generated one) has position `n + delta` on every
axis. This is transformers' `Qwen2VLModel.get_rope_index` (5.x, for images; Qwen2.5-VL's is the same).

A text-only sequence gets `(n, n, n)` at slot n, which rotates exactly as plain RoPE at n does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minilazy.errors import InputError


def image_positions(start: int, grid: list[int], merge: int) -> torch.Tensor:
    """Positions `[t * h/merge * w/merge, 3]` of one image's tokens, row-major, from position `start`."""
    t, h, w = grid[0], grid[1] // merge, grid[2] // merge
    axes = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")  # 3 x [t, h, w]
    return torch.stack(axes, dim=-1).reshape(-1, 3) + start  # [t*h*w, 3]


def sequence_positions(is_image: torch.Tensor, grids, merge: int) -> tuple[torch.Tensor, int]:
    """Positions `[T, 3]` of one sequence whose image tokens are `is_image [T]`, each run of image tokens one
    image of `grids` (an iterator over `(t, h, w)` lists, consumed in order); returns them and the delta."""
    runs = torch.nonzero(is_image[1:] != is_image[:-1])[:, 0].tolist()  # last index of each run but the final one
    bounds = zip([0] + [r + 1 for r in runs], [r + 1 for r in runs] + [is_image.shape[0]])
    parts, pos = [], 0
    for start, end in bounds:
        if not bool(is_image[start]):
            parts.append(torch.arange(pos, pos + end - start)[:, None].expand(-1, 3))  # [n, 3]
            pos += end - start
            continue
        grid = next(grids, None)
        if grid is None:
            raise InputError("the prompt has more images (runs of image tokens) than image grids")
        part = image_positions(pos, grid, merge)
        if part.shape[0] != end - start:
            raise InputError(f"an image of grid {grid} gives {part.shape[0]} tokens, but the prompt has "
                             f"{end - start} image tokens in a row there")
        parts.append(part)
        pos += max(grid[1], grid[2]) // merge
    positions = torch.cat(parts) if parts else torch.zeros(0, 3, dtype=torch.long)  # [T, 3]
    delta = int(positions.max()) + 1 - positions.shape[0] if parts else 0
    return positions, delta


@dataclass
class MRopePositions:
    """The three-axis positions of every cache slot of a batch: the prompts' from their images' grids,
    then slot + delta on every axis for the tokens generated after them."""

    prompt: torch.Tensor  # [B, W, 3] the prompts' positions (0 past a prompt's end)
    lengths: torch.Tensor  # [B] prompt lengths
    delta: torch.Tensor  # [B] the position of slot n past the prompt is n + delta

    @classmethod
    def of_prompts(cls, ids: torch.Tensor, lengths: torch.Tensor, image_token_id: int | None,
                   grids: torch.Tensor | None, merge: int) -> MRopePositions:
        """Right-padded prompts `ids [B, W]` (real lengths `lengths [B]`) whose images have the patch grids
        `grids [n_images, 3]`, in order over the whole batch (transformers takes them so)."""
        batch, width = ids.shape
        remaining = iter([] if grids is None else grids.tolist())
        prompt = torch.zeros(batch, width, 3, dtype=torch.long)
        delta = torch.zeros(batch, dtype=torch.long)
        for b in range(batch):
            n = int(lengths[b])
            prompt[b, :n], delta[b] = sequence_positions((ids[b, :n] == image_token_id).cpu(), remaining, merge)
        if next(remaining, None) is not None:
            raise InputError("more image grids than images (runs of image tokens) in the prompts")
        return cls(prompt.to(ids.device), lengths, delta.to(ids.device))

    @classmethod
    def after_prompts(cls, delta: torch.Tensor) -> MRopePositions:
        """Positions of the slots past prompts whose deltas are `delta [B]` (decode steps only)."""
        batch = delta.shape[0]
        return cls(delta.new_zeros(batch, 1, 3), delta.new_zeros(batch), delta)

    def at(self, slots: torch.Tensor) -> torch.Tensor:
        """Positions `[B, T, 3]` of the cache slots `slots [B, T]` (-1: padding, position 0)."""
        index = slots.clamp(0, self.prompt.shape[1] - 1)[:, :, None].expand(-1, -1, 3)  # [B, T, 3]
        in_prompt = (slots >= 0) & (slots < self.lengths[:, None])  # [B, T]
        later = torch.where(slots >= 0, slots + self.delta[:, None], 0)[:, :, None].expand(-1, -1, 3)  # [B, T, 3]
        return torch.where(in_prompt[:, :, None], self.prompt.gather(1, index), later)
