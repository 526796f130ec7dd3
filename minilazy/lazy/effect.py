"""Choosing lazy layers by their measured effect on the model's output distributions.

The divergence walk (minilazy/lazy/calibrate.py) asks how alike two layers' attention over image
keys is; what matters is how much inheriting changes what the model says. Here every candidate
plan runs teacher-forced over calibration samples and is scored by the mean KL(full || candidate)
of the next-token distributions at the scored positions:

- image+question samples: the full model's greedy answer is generated once per sample and the
  positions that predict it (its tokens and the token that ends it) are scored;
- text windows (the perplexity setting, a leading span standing in for the image): the positions
  that predict the tail's tokens.

Each candidate runs as it will be deployed: with the mass offsets it gets from full attention's
image log-sum-exp (minilazy/lazy/mass_correction.py) and exact image rows, when those are on.

Two searches build plans one lazy layer at a time:

- `rank` (L - 1 plans scored): each layer alone made lazy, inheriting from the layer below it; the
  k least harmful become lazy, each inheriting from its nearest active layer below.
- `greedy` (about k·L plans scored for k lazy layers, up to L²/2; times R with Q Cache depth R):
  at each step the layer whose inheritance, added to the plan so far, changes the outputs least.
  Its anchor is the nearest active layer below, or with depth R > 1 the best by KL of the last
  R active layers.

With FastV at layer K, layers K-1 and K stay active and layers from K on inherit only from layers
at or after K, as the divergence walk enforces; the outputs are measured without FastV.

`withdrawal_layer` is VTW's own criterion for its layer K (Lin et al., AAAI 2025): the smallest K whose
withdrawal of the image tokens keeps the output KL under a threshold (at most L - 1 passes per sample).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from minilazy.errors import InputError
from minilazy.fastv import VTW
from minilazy.generate import Request, generate, image_grids, padded_prompts
from minilazy.lazy.mass_correction import with_mass_offsets
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.sampler import SamplingParams

SEARCHES = ("rank", "greedy")
ANSWER_NEW_TOKENS = 64  # the longest answer scored per sample
VTW_KL_THRESHOLD = 0.05  # ours, not the VTW paper's: its value is not used here


@dataclass
class ScoredBatch:
    """Teacher-forced sequences and the positions whose next-token distributions are compared."""

    ids: torch.Tensor  # [B, T] right-padded token ids
    lengths: torch.Tensor  # [B]
    scored: torch.Tensor  # [B, T] True where the logits are compared
    pixel_values: torch.Tensor | None = None  # [N, 3, S, S] the batch's images, in order
    image_mask: torch.Tensor | None = None  # [B, T] tokens that count as image tokens (None: the image token id)
    image_grid: torch.Tensor | None = None  # [n_images, 3] Qwen2-VL's patch grids of the batch's images, in order


def answer_batches(pipeline, samples, max_new_tokens: int = ANSWER_NEW_TOKENS, batch_size: int = 16,
                   progress: bool = True) -> list[ScoredBatch]:
    """`samples`, a list of `(image, prompt)` pairs, each followed by the full model's greedy answer; the
    positions from the prompt's last token to the answer's last token are scored."""
    model, batches = pipeline.model, []
    starts = range(0, len(samples), batch_size)
    for start in tqdm(starts, desc="answering", unit="batch", disable=not progress):
        requests = [pipeline.request(prompt, image) for image, prompt in samples[start : start + batch_size]]
        answers = generate(model, requests, SamplingParams(max_new_tokens=max_new_tokens),
                           stop_ids=pipeline.stop_ids).tokens
        ids, lengths = padded_prompts(model, [Request(r.input_ids + a) for r, a in zip(requests, answers)])
        columns = torch.arange(ids.shape[1], device=ids.device)[None, :]
        prompt_lengths = torch.tensor([len(r.input_ids) for r in requests], device=ids.device)
        scored = (columns >= prompt_lengths[:, None] - 1) & (columns < lengths[:, None])  # [B, T]
        pixels = [r.pixel_values for r in requests if r.pixel_values is not None]
        batches.append(ScoredBatch(ids, lengths, scored, torch.cat(pixels) if pixels else None,
                                   image_grid=image_grids(requests)))
    return batches


def window_batches(windows: torch.Tensor, span: int, batch_size: int = 8) -> list[ScoredBatch]:
    """Text windows `[N, T]` whose leading `span` tokens stand in for an image; the tail's positions, which
    predict the tail's tokens from its second on, are scored (as in minilazy/perplexity/study.py)."""
    batches = []
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start : start + batch_size]
        batch, width = ids.shape
        columns = torch.arange(width, device=ids.device)[None, :].expand(batch, width)  # [B, T]
        batches.append(ScoredBatch(ids, torch.full((batch,), width, device=ids.device),
                                   (columns >= span) & (columns < width - 1), image_mask=columns < span))
    return batches


class OutputDivergence:
    """Mean KL(full || candidate) of the next-token distributions at the scored positions of `batches`,
    over every scored position; the full model's distributions are computed once. Candidates are measured
    as they will run: lazy visual layers with the mass offsets of `image_lse [L, H]` (None: without them)
    and, when `exact_image_rows`, the image tokens' own attention."""

    def __init__(self, model, batches: list[ScoredBatch], image_lse: torch.Tensor | None = None,
                 exact_image_rows: bool = False):
        self.model, self.batches = model, batches
        self.image_lse, self.exact_image_rows = image_lse, exact_image_rows
        self.reference = [self.log_probs(batch, None) for batch in batches]

    @torch.inference_mode()
    def log_probs(self, batch: ScoredBatch, runtime: LazyRuntime | None) -> torch.Tensor:
        """fp32 log-probabilities `[N, V]` at the scored positions of `batch` under `runtime`; NaN rows for
        positions that FastV or VTW dropped."""
        logits = self.model.forward_logits(batch.ids, batch.pixel_values, batch.lengths, decoder_setup=runtime,
                                           image_grid=batch.image_grid)
        if runtime is not None and runtime.pruning is not None:  # the logits `[B, T', V]` of the kept tokens
            logits = runtime.pruning.placed(logits, batch.ids.shape[1])  # [B, T, V]
        return logits[batch.scored].log_softmax(-1)

    def __call__(self, plan: LayerPlan | None = None, fastv=None) -> float:
        """The mean KL over the scored positions that `plan` and `fastv` (FastV or VTW) keep."""
        if plan is not None and self.image_lse is not None:
            plan = with_mass_offsets(plan, self.image_lse)
        total, count = 0.0, 0
        for batch, reference in zip(self.batches, self.reference):
            runtime = LazyRuntime(plan, image_mask=batch.image_mask, fastv=fastv,
                                  exact_image_rows=self.exact_image_rows)
            candidate = self.log_probs(batch, runtime)
            present = ~candidate[:, 0].isnan()  # [N]
            kl = (reference.exp() * (reference - candidate))[present].sum(-1)  # [N']
            total, count = total + float(kl.sum()), count + kl.numel()
        return total / count


def nearest_active_below(anchors, layer: int) -> int:
    return max(a for a in range(layer) if anchors[a] == a)


def with_lazy(anchors: tuple[int, ...], layer: int, anchor: int) -> tuple[int, ...]:
    """`anchors` with `layer` inheriting from `anchor`; layers that inherited from `layer` move to their
    nearest active layer below (always within the Q Cache's reach)."""
    new = list(anchors)
    new[layer] = anchor
    for later in range(layer + 1, len(new)):
        if new[later] == layer:
            new[later] = nearest_active_below(new, later)
    return tuple(new)


class EffectPlanner:
    """Plans chosen by their effect on `divergence` (an `OutputDivergence`), one search per
    (depth, scope, FastV layer), reused and extended across lazy ratios."""

    def __init__(self, divergence, num_layers: int, method: str = "greedy", progress: bool = True):
        if method not in SEARCHES:
            raise InputError(f"unknown effect search {method!r}; choose one of {', '.join(SEARCHES)}")
        self.divergence, self.num_layers, self.method, self.progress = divergence, num_layers, method, progress
        self.walks: dict[tuple, list[LayerPlan]] = {}

    def plan(self, ratio: float, depth: int = 1, scope: str = "visual", fastv_layer: int | None = None) -> LayerPlan:
        """The plan with `round(ratio * L)` lazy layers (fewer when FastV keeps too many active)."""
        if not 0 <= ratio < 1:
            raise InputError(f"the lazy ratio must be in [0, 1), got {ratio}")
        target = round(ratio * self.num_layers)
        key = (depth, scope, fastv_layer)
        walk = self.walks.setdefault(key, [LayerPlan(tuple(range(self.num_layers)), depth, scope)])
        free = self.candidates(fastv_layer)
        if self.method == "rank" and len(walk) == 1 and target > 0:
            walk += self.ranked(free, depth, scope)
        while self.method == "greedy" and len(walk) <= min(target, len(free)):
            walk.append(self.greedy_step(walk[-1], free, fastv_layer))
        return walk[min(target, len(walk) - 1)]

    def candidates(self, fastv_layer: int | None) -> list[int]:
        """Layers that may become lazy: not layer 0, nor (with FastV at K) layers K-1 and K."""
        fixed = {0} if fastv_layer is None else {0, fastv_layer - 1, fastv_layer}
        return [layer for layer in range(self.num_layers) if layer not in fixed]

    def ranked(self, free: list[int], depth: int, scope: str) -> list[LayerPlan]:
        """The plans with the 1, 2, ... least harmful layers lazy, each layer measured alone."""
        full = tuple(range(self.num_layers))
        bar = tqdm(free, desc="rank", unit="plan", disable=not self.progress)
        harm = {layer: self.divergence(LayerPlan(with_lazy(full, layer, layer - 1), depth, scope)) for layer in bar}
        plans, anchors = [], full
        for layer in sorted(free, key=lambda l: (harm[l], l)):
            anchors = with_lazy(anchors, layer, nearest_active_below(anchors, layer))
            plans.append(LayerPlan(anchors, depth, scope))
        return plans

    def greedy_step(self, plan: LayerPlan, free: list[int], fastv_layer: int | None) -> LayerPlan:
        """`plan` with one more lazy layer: the (layer, anchor) whose addition changes the outputs least."""
        anchors, options = plan.anchors, []
        for layer in free:
            if plan.is_lazy(layer):
                continue
            reach = [a for a in range(layer) if anchors[a] == a][-plan.depth:]  # the Q Cache's last R active layers
            options += [(layer, a) for a in reach if fastv_layer is None or layer < fastv_layer or a >= fastv_layer]
        bar = tqdm(options, desc=f"greedy {len(plan.lazy_layers) + 1}", unit="plan", disable=not self.progress)
        scored = [(self.divergence(LayerPlan(with_lazy(anchors, l, a), plan.depth, plan.scope)), l, a) for l, a in bar]
        _, layer, anchor = min(scored)
        return LayerPlan(with_lazy(anchors, layer, anchor), plan.depth, plan.scope)


def calibrate_by_effect(pipeline, samples, ratio: float, method: str = "greedy", depth: int = 1,
                        scope: str = "visual", fastv_layer: int | None = None, progress: bool = True,
                        max_new_tokens: int = ANSWER_NEW_TOKENS, image_lse: torch.Tensor | None = None,
                        exact_image_rows: bool = True) -> LayerPlan:
    """The plan with `ratio` of the layers lazy, chosen by `method` (`rank` or `greedy`) from its effect on the
    full model's answers to `samples`, a list of `(image, prompt)` pairs; candidates measured with the
    refinements they will run with (`OutputDivergence`)."""
    planner = effect_planner(pipeline, samples, method, max_new_tokens, progress, image_lse, exact_image_rows)
    return planner.plan(ratio, depth, scope, fastv_layer)


def effect_planner(pipeline, samples, method: str = "greedy", max_new_tokens: int = ANSWER_NEW_TOKENS,
                   progress: bool = True, image_lse: torch.Tensor | None = None,
                   exact_image_rows: bool = True) -> EffectPlanner:
    """An `EffectPlanner` over the full model's answers to `samples`, a list of `(image, prompt)` pairs."""
    batches = answer_batches(pipeline, samples, max_new_tokens, progress=progress)
    divergence = OutputDivergence(pipeline.model, batches, image_lse, exact_image_rows)
    return EffectPlanner(divergence, pipeline.config.text.num_hidden_layers, method, progress)


def withdrawal_layer(divergence: OutputDivergence, num_layers: int, threshold: float = VTW_KL_THRESHOLD,
                     progress: bool = True) -> int:
    """The smallest VTW layer K whose output KL is under `threshold` (L, the plain model, when none is)."""
    for layer in tqdm(range(1, num_layers), desc="VTW layer", unit="plan", disable=not progress):
        if divergence(fastv=VTW(layer)) < threshold:
            return layer
    return num_layers
