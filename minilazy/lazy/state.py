"""Per-generation state shared by the layers of a lazy plan.

- The **Q Cache**: one ring buffer `[R, T_max, H, d]` allocated once per call;
  an anchor's RoPE kernel writes its queries straight into its ring slot and
  lazy layers read that slot in place.
- Which cache slots hold image tokens (`image_slots`, fixed by the prompt)
  and which hold text tokens (`text_slots`, growing as tokens are generated),
  so lazy layers can attend the two key sets separately.
- For the decode fast path, each anchor's logits for the newest token over
  every cache slot, `[B, H, S]`, whose image slots its lazy layers reuse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minilazy.step import Step, take_tokens


@dataclass
class ImageRows:
    """The image tokens among one step's new tokens."""

    is_image: torch.Tensor  # [B, T] which new tokens are image tokens
    write: torch.Tensor  # [B, T] their rank among their sequence's image tokens, -1 for the others


@dataclass
class TextRows:
    """The text tokens among one step's new tokens."""

    gather: torch.Tensor | None  # [B, Tt] index into the step's T new tokens (0 for padding); None: all of them
    positions: torch.Tensor  # [B, Tt] (or [B, Tt, 3]) their RoPE positions
    write: torch.Tensor  # [B, Tt] their row in a text-only key cache, -1 for padding
    count: torch.Tensor  # [B] int32 text keys cached once this step is written
    image_rows: int  # the step's image tokens, whose key projections lazy layers skip


class LazyState:
    def __init__(self, is_image: torch.Tensor, q_cache: torch.Tensor, text_capacity: int | None = None,
                 fast_decode_anchors=()):
        """`is_image [B, S]` marks the slots that hold image tokens; `q_cache [R, T_max, H, d]` is the ring.

        `text_capacity` (default: the most text slots of any sequence) sizes the text-slot table.
        """
        batch, _ = is_image.shape
        device = is_image.device
        image_width = max(int(is_image.sum(1).max()), 1)  # columns of image_slots
        text_capacity = text_capacity or int((~is_image).sum(1).max())
        with torch.inference_mode(False):  # normal tensors: their version counters tell the CPU path a new step's logits
            image_logits = {a: torch.zeros(batch, q_cache.shape[2], is_image.shape[1], dtype=torch.float32,
                                           device=device) for a in fast_decode_anchors}
        self.attach(is_image, q_cache, torch.zeros(batch, text_capacity, dtype=torch.int32, device=device),
                    torch.zeros(batch, dtype=torch.int32, device=device), image_logits, image_width)

    @classmethod
    def over(cls, is_image: torch.Tensor, q_cache: torch.Tensor, text_slots: torch.Tensor, n_text: torch.Tensor,
             image_logits: dict[int, torch.Tensor], image_width: int) -> LazyState:
        """A state over tables kept elsewhere (a serving engine's rows, as views), which it updates in place:
        `text_slots [B, C]` and `n_text [B]` as they stand, `image_logits[a] [B, H, S]` (normal tensors), for
        up to `image_width` image tokens per sequence."""
        state = cls.__new__(cls)
        state.attach(is_image, q_cache, text_slots, n_text, image_logits, image_width)
        return state

    def attach(self, is_image, q_cache, text_slots, n_text, image_logits, image_width) -> None:
        self.image_width = image_width
        self.set_image_mask(is_image)
        self.text_capacity = text_slots.shape[1]
        self.text_slots, self.n_text = text_slots, n_text  # [B, C] slot of each text key, [B] text keys so far
        self.q_cache = q_cache
        self.image_logits = image_logits
        self.image_keys: dict[int, torch.Tensor] = {}  # lazy layer -> its own image keys, during prefill only
        self._step, self._rows = None, None
        self.projection_rows = {"wq_skipped": 0, "wk_skipped": 0}  # token rows, summed over layers

    @classmethod
    def sized_for(cls, n_images: torch.Tensor, slots: int, q_cache: torch.Tensor, fast_decode_anchors=()) -> LazyState:
        """A state for `n_images [B]` image tokens per sequence in caches of `slots` slots, whose image slots
        are placed later (`place_image_tokens`: FastV knows them only once it has pruned)."""
        counts_only = torch.arange(slots, device=n_images.device)[None, :] < n_images[:, None]  # [B, S]
        return cls(counts_only, q_cache, int((slots - n_images).max()), fast_decode_anchors)

    def place_image_tokens(self, is_image: torch.Tensor) -> None:
        """Mark the image tokens among the first `T'` slots, `is_image [B, T']` (FastV's kept tokens)."""
        mask = torch.zeros_like(self.is_image)
        mask[:, : is_image.shape[1]] = is_image
        self.set_image_mask(mask)

    def set_image_mask(self, is_image: torch.Tensor) -> None:
        """Mark which slots hold image tokens (FastV moves them when it prunes; counts must not grow)."""
        self.is_image = is_image
        self.n_img = is_image.sum(1).int()  # [B]
        if int(self.n_img.max()) > self.image_width:
            raise ValueError("more image tokens than the lazy state was sized for")
        # slots of the image tokens, in order, padded past n_img[b] (never read)
        order = torch.argsort((~is_image).int(), dim=1, stable=True)  # image slots first
        self.image_slots = order[:, : self.image_width].int().contiguous()  # [B, N_img]

    def q_slot(self, ring_slot: int, batch: int, tokens: int) -> torch.Tensor:
        """A view of ring slot `ring_slot` as `[B, T, H, d]` (no copy)."""
        if batch * tokens > self.q_cache.shape[1]:
            raise ValueError(f"a step of {batch}x{tokens} tokens exceeds the Q Cache ({self.q_cache.shape[1]} rows)")
        flat = self.q_cache[ring_slot, : batch * tokens]  # [B*T, H, d]
        return flat.view(batch, tokens, *flat.shape[1:])  # [B, T, H, d]

    def image_rows(self, step: Step) -> ImageRows:
        """The image tokens of `step` and their rank in their sequence's image-key list."""
        slot = step.slots.clamp(min=0)
        is_image = (step.slots >= 0) & self.is_image.gather(1, slot)  # [B, T]
        rank = (self.is_image.int().cumsum(1) - 1).gather(1, slot)  # [B, T] image tokens before, in slot order
        return ImageRows(is_image, torch.where(is_image, rank, -1))

    def prefill_image_keys(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        """Layer `layer`'s own image keys for this prefill, `[B, N_img, G, d]` in image order (made on first use)."""
        if layer not in self.image_keys:
            batch, _, heads, head_dim = like.shape
            self.image_keys[layer] = like.new_zeros(batch, self.image_width, heads, head_dim)
        return self.image_keys[layer]

    def text_rows(self, step: Step) -> TextRows:
        """The text tokens of `step`, registered in `text_slots` once per step."""
        if self._step is step:
            return self._rows
        if step.is_decode:  # prefill is over: the image keys of exact rows go (a text-only chunk keeps them)
            self.image_keys.clear()
        valid = step.slots >= 0
        is_text = valid & ~self.is_image.gather(1, step.slots.clamp(min=0))  # [B, T]
        rank = is_text.int().cumsum(1) - 1  # [B, T] order among this step's text tokens
        write = torch.where(is_text, self.n_text[:, None] + rank, -1)  # [B, T] text-cache row or -1
        count = (self.n_text + is_text.sum(1)).int()
        image_rows = int(step.q_len.sum()) - int(is_text.sum())
        if bool(is_text.all()):  # every new token is text (a decode step): no table to build
            rows = TextRows(None, step.positions, write, count, image_rows)
        else:
            width = max(int(is_text.sum(1).max()), 1)
            # move each text token to column `rank` of a [B, Tt] table
            order = torch.argsort((~is_text).int(), dim=1, stable=True)[:, :width]  # [B, Tt]
            rows = TextRows(order, take_tokens(step.positions, order), write.gather(1, order), count, image_rows)
        b_idx, t_idx = is_text.nonzero(as_tuple=True)
        self.text_slots[b_idx, write[b_idx, t_idx]] = step.slots[b_idx, t_idx].int()
        self.n_text.copy_(rows.count)  # in place: the table may be a serving engine's row
        self._step, self._rows = step, rows
        return rows
