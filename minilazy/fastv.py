"""FastV token pruning (Chen et al., ECCV 2024) and Visual Token Withdrawal, the baselines Lazy Attention
is compared with.

FastV: in prefill, layer K-1 scores every image token by the attention the last
prompt token (or a chosen position) gives it, averaged over heads; before layer K, only the top
`round(n_img * (1 - R))` image tokens and every text token are kept, in their
original order and with their original RoPE positions (all three with
multimodal RoPE). Layers K and later see and cache only the kept tokens; decode
steps attend to the kept set.

VTW (Lin et al., "Boosting Multimodal Large Language Models with Visual Tokens
Withdrawal for Rapid Inference", AAAI 2025): from layer K on, no image tokens
at all. It is FastV with every image token dropped (R = 1), so no layer has to
score them, and K may be L (nothing withdrawn: the plain model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minilazy.hooks import ForwardContext
from minilazy.errors import InputError
from minilazy.step import Step, take_tokens, zero_padding


PAPER_LAYER = 2  # FastV's K in its paper, the baselines' default


def ratio_saving(saved: int, num_layers: int, layer: int, lazy_from_layer: int = 0) -> float:
    """FastV's share R of image tokens (dropped from `layer` = K on) that saves `saved` layers' worth of image
    keys: what `saved` lazy visual layers save. FastV saves the dropped tokens' keys and values in each of the
    L - K layers from K on, 2 R (L - K) in those units, less R for each of `lazy_from_layer` lazy visual layers
    from K on, which keep no image keys to drop: R = saved / (2 (L - K) - lazy_from_layer). Not rounded."""
    return saved / (2 * (num_layers - layer) - lazy_from_layer)


@dataclass(frozen=True)
class FastV:
    layer: int  # K: the first layer that sees the pruned sequence
    ratio: float  # R: share of image tokens dropped

    def __post_init__(self):
        if self.layer < 1:
            raise InputError(f"{type(self).__name__} layer must be at least 1, got {self.layer}")
        if not 0 <= self.ratio <= 1:
            raise InputError(f"FastV ratio must be in [0, 1], got {self.ratio}")

    def kept(self, n_img: torch.Tensor) -> torch.Tensor:
        """Image tokens kept per sequence, `[B]`."""
        return torch.round(n_img.double() * (1 - self.ratio)).long()

    @property
    def scores_tokens(self) -> bool:
        """Whether layer K-1 must rank the image tokens: not when every one of them is dropped."""
        return self.ratio < 1


@dataclass(frozen=True)
class VTW(FastV):
    """Visual Token Withdrawal from layer K on: FastV at layer K with every image token dropped."""

    ratio: float = 1.0  # every image token withdrawn

    def __post_init__(self):
        super().__post_init__()
        if self.ratio != 1:
            raise InputError(f"VTW withdraws every image token (ratio 1), got ratio {self.ratio}; FastV keeps a share")


class FastVScorer:
    """Wraps the attention of layer K-1: in prefill it also scores every key by the attention of the last prompt
    token, or of the token at prompt position `position` when given."""

    def __init__(self, inner, position: int | None = None):
        self.inner, self.position = inner, position
        self.scores: torch.Tensor | None = None  # [B, S]

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        out = self.inner.forward(x, ctx)
        step = ctx.step
        if step.is_decode:
            return out
        batch = torch.arange(x.shape[0], device=x.device)
        last = step.q_len.long() - 1 if self.position is None else torch.full_like(batch, self.position)
        seen = torch.minimum(step.kv_len, step.q_start + last + 1)  # [B] the keys up to the ranking token
        logits = self.inner.cached_logits(x[batch, last][:, None], step.positions[batch, last][:, None],
                                          ctx.cache[self.inner.layer].k, seen)  # [B, H, 1, S]
        self.scores = logits[:, :, 0].softmax(-1).mean(1)  # [B, S]
        return out


class FastVPruning:
    """The `before_layer` hook of FastV: before layer K, prune the prefill sequence, and map decode steps
    onto the pruned caches."""

    def __init__(self, fastv: FastV, is_image: torch.Tensor, scorer: FastVScorer | None, on_prune=None):
        """`scorer`: layer K-1's attention, which ranks the image tokens (None when every one is dropped)."""
        self.fastv, self.is_image, self.scorer, self.on_prune = fastv, is_image, scorer, on_prune
        self.dropped: torch.Tensor | None = None  # [B] tokens dropped per sequence
        self.kept_slots: torch.Tensor | None = None  # [B, T'] original slot of each kept token

    def __call__(self, layer: int, h: torch.Tensor, residual: torch.Tensor, ctx: ForwardContext):
        if layer != self.fastv.layer:
            return h, residual, ctx
        step = ctx.step
        if step.is_decode:
            if self.dropped is None:
                raise RuntimeError("FastV: decode step before the prompt was pruned")
            d = self.dropped.to(step.slots.dtype)
            pruned = Step(step.positions, torch.where(step.slots >= 0, step.slots - d[:, None], -1),
                          (step.q_start - d).int(), step.q_len, (step.kv_len - d).int())
            return h, residual, ctx.with_step(pruned)
        if int(step.q_start.max()) != 0:
            raise RuntimeError("FastV needs the whole prompt in one prefill step")
        valid = step.slots >= 0
        image = valid & self.is_image.gather(1, step.slots.clamp(min=0))  # [B, T]
        keep = valid & ~image
        if self.scorer is not None:
            scores = self.scorer.scores.gather(1, step.slots.clamp(min=0)).masked_fill(~image, float("-inf"))
            rank = scores.argsort(dim=1, descending=True).argsort(dim=1)  # [B, T] rank of each image token
            keep |= image & (rank < self.fastv.kept(image.sum(1))[:, None])
        n_kept = keep.sum(1)
        width = int(n_kept.max())
        order = torch.argsort((~keep).int(), dim=1, stable=True)[:, :width]  # [B, T'] kept tokens, in order
        columns = torch.arange(width, device=h.device)[None, :]
        inside = columns < n_kept[:, None]
        self.dropped = step.q_len.long() - n_kept
        self.kept_slots = torch.where(inside, step.slots.gather(1, order), -1)
        if self.on_prune is not None:
            self.on_prune(image.gather(1, order) & inside)
        pruned = Step(zero_padding(take_tokens(step.positions, order), inside), torch.where(inside, columns, -1),
                      torch.zeros_like(step.q_start), n_kept.int(), n_kept.int())
        return take_tokens(h, order), take_tokens(residual, order), ctx.with_step(pruned)

    def placed(self, values: torch.Tensor, width: int) -> torch.Tensor:
        """Per-token `values [B, T', ...]` of the kept tokens, in order, back at their prompt positions:
        `[B, width, ...]`, NaN where a token was dropped."""
        rows, columns = (self.kept_slots >= 0).nonzero(as_tuple=True)
        placed = values.new_full((values.shape[0], width, *values.shape[2:]), float("nan"))  # [B, width, ...]
        placed[rows, self.kept_slots[rows, columns]] = values[rows, columns]
        return placed
