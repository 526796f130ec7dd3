"""Choosing lazy layers: attention similarity over image keys, measured with full attention.

For every layer, the attention that text queries (the prompt's tokens after
the image, and the generated tokens) give to the image keys is averaged over
heads and renormalised over the image keys. The Jensen-Shannon divergence
between every pair of layers (averaged over queries and samples) says how
similar their visual attention is. The plan walks the layers: a layer becomes
lazy when its divergence to one of the last `depth` active layers is under a
threshold (inheriting from the closest), otherwise it becomes active. A target
lazy ratio picks the threshold.

`calibrate(..., method="rank" | "greedy")` chooses the plan by its measured effect on the model's
answers instead (minilazy/lazy/effect.py).

`per_head=True` compares head h of one layer with head h of the other and
averages the divergences over heads instead: a lazy layer inherits each head's
logits from the same head of its anchor, which the head average cannot see.
"""

from __future__ import annotations

import torch

from tqdm import tqdm

from minilazy.errors import InputError
from minilazy.full_attention import FullAttention
from minilazy.generate import generate
from minilazy.hooks import DecoderSetup
from minilazy.lazy.effect import ANSWER_NEW_TOKENS, SEARCHES, calibrate_by_effect
from minilazy.lazy.mass_correction import image_lse_means, with_mass_offsets
from minilazy.lazy.plan import LayerPlan
from minilazy.sampler import SamplingParams

METHODS = ("js", *SEARCHES)
JS_NEW_TOKENS = 16  # tokens generated per sample, whose queries are measured too


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (natural log) between distributions on the last axis."""
    m = 0.5 * (p + q)

    def kl(a, b):
        return torch.where(a > 0, a * (a.clamp_min(1e-30).log() - b.clamp_min(1e-30).log()), 0).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


class RecordingAttention(FullAttention):
    """Plain attention that also records, per text query and head, its attention over image keys and the
    log-sum-exp of its logits over them (the mass correction's measure, minilazy/lazy/mass_correction.py):
    `records` gets `(layer, probabilities [Tq, H, N_img], image_lse [Tq, H])`."""

    def __init__(self, cfg, weights, ops, layer, is_image: torch.Tensor, records: list):
        super().__init__(cfg, weights, ops, layer)
        self.is_image, self.records = is_image, records  # is_image [S] for batch 0

    def forward(self, x, ctx):
        out = super().forward(x, ctx)
        step, cache = ctx.step, ctx.cache[self.layer]
        n_keys = int(step.kv_len[0])
        image = self.is_image[:n_keys]
        if not bool(image.any()):
            return out
        slots = step.slots[0]
        text_queries = (slots >= 0) & ~self.is_image[slots.clamp(min=0)] & (slots > image.nonzero().max())
        if not bool(text_queries.any()):
            return out
        logits = self.cached_logits(x[:1, text_queries], step.positions[:1, text_queries], cache.k[:1, :n_keys],
                                    step.kv_len[:1])[0]  # [H, Tq, S]
        probs = logits.softmax(-1)[:, :, image]  # [H, Tq, N_img]; renormalised over the image keys later
        image_lse = logits[:, :, image].logsumexp(-1)  # [H, Tq]
        self.records.append((self.layer, probs.transpose(0, 1), image_lse.transpose(0, 1)))
        return out


def recording_setup(is_image: torch.Tensor, records: list):
    """A `DecoderSetupHook` for one request that records every layer's attention to the image."""

    def setup(model, ids, lengths, total, chunk):
        cfg = model.config.text
        mask = torch.zeros(total, dtype=torch.bool, device=ids.device)
        mask[: is_image.shape[0]] = is_image
        recorders = [RecordingAttention(cfg, w, model.ops, i, mask, records) for i, w in enumerate(model.decoder.layers)]
        return DecoderSetup.plain(model, 1, total, layer_attention=recorders)

    return setup


def divergence_matrix(records: list, num_layers: int, per_head: bool = False) -> torch.Tensor:
    """Mean JS divergence `[L, L]` between layers over every recorded query (and head, with `per_head`).

    Every layer records the same steps in the same order, so its k-th record pairs with every other layer's
    k-th; records of different samples may differ in image tokens (Qwen2-VL's images of any size)."""

    def distributions(r):  # [Q, H, N] -> [Q, H or 1, N], renormalised over the image keys
        r = r if per_head else r.mean(1, keepdim=True)
        return r / r.sum(-1, keepdim=True)

    per_layer = [[distributions(r) for layer, r, _ in records if layer == l] for l in range(num_layers)]
    js = torch.zeros(num_layers, num_layers)
    for i in range(num_layers):
        for j in range(i):
            pairs = zip(per_layer[i], per_layer[j])
            js[i, j] = js[j, i] = torch.cat([js_divergence(a, b).reshape(-1) for a, b in pairs]).mean()
    return js


def walk(js: torch.Tensor, threshold: float, depth: int = 1, scope: str = "visual",
         fastv_layer: int | None = None) -> LayerPlan:
    """Lazy when close enough to one of the last `depth` active layers, else active.

    With FastV at layer K, layers K-1 and K stay active and layers from K on
    inherit only from layers at or after K (the token set changes at K).
    """
    anchors, active = [0], [0]
    for layer in range(1, js.shape[0]):
        candidates = active[-depth:]
        if fastv_layer is not None and layer >= fastv_layer:
            candidates = [a for a in candidates if a >= fastv_layer]
        forced = fastv_layer is not None and layer in (fastv_layer - 1, fastv_layer)
        best = min(candidates, key=lambda a: float(js[layer, a])) if candidates else None
        if not forced and best is not None and float(js[layer, best]) < threshold:
            anchors.append(best)
        else:
            anchors.append(layer)
            active.append(layer)
    return LayerPlan(tuple(anchors), depth, scope)


def plan_for_ratio(js: torch.Tensor, ratio: float, depth: int = 1, scope: str = "visual",
                   fastv_layer: int | None = None) -> tuple[LayerPlan, float]:
    """The plan whose lazy ratio is closest to `ratio` (ties: the smaller threshold); returns it and its threshold."""
    num_layers = js.shape[0]
    target = round(ratio * num_layers)
    thresholds = sorted({0.0, *js[js > 0].tolist()}) + [float("inf")]
    best = None
    for t in thresholds:
        # a threshold just above a divergence value admits that value
        thr = t if t == float("inf") else t * (1 + 1e-6) + 1e-12
        plan = walk(js, thr, depth, scope, fastv_layer)
        gap = abs(len(plan.lazy_layers) - target)
        if best is None or gap < best[0]:
            best = (gap, plan, thr)
        if gap == 0:
            break
    return best[1], best[2]


def calibrate(pipeline, samples, ratio: float, depth: int = 1, scope: str = "visual",
              fastv_layer: int | None = None, progress: bool = True, method: str = "js",
              max_new_tokens: int | None = None, mass_correction: bool = True,
              exact_image_rows: bool = True) -> LayerPlan:
    """The plan with `ratio` of the layers lazy, chosen over `samples`, a list of `(image, prompt)` pairs:
    by the divergence walk (`method="js"`: the divergence of recorded attention, then `plan_for_ratio`) or by
    the plans' effect on the full model's answers (`"rank"`, `"greedy"`: minilazy/lazy/effect.py), with its
    mass offsets (minilazy/lazy/mass_correction.py) when `mass_correction`. `max_new_tokens`: the tokens
    generated per sample (default: `JS_NEW_TOKENS` for js, `ANSWER_NEW_TOKENS` for the others). The effect
    searches measure their candidates with the mass offsets (when `mass_correction`) and, when
    `exact_image_rows` (as `Pipeline.ask` runs plans by default), exact image rows."""
    if not 0 <= ratio < 1:
        raise InputError(f"the lazy ratio must be in [0, 1), got {ratio}")
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    num_layers = pipeline.model.config.text.num_hidden_layers
    records = None
    if method == "js" or mass_correction:  # attention recorded with full attention
        tokens = (max_new_tokens if method == "js" else None) or JS_NEW_TOKENS
        records = record_attention(pipeline, samples, tokens, progress)
    image_lse = image_lse_means(records, num_layers) if mass_correction else None
    if method == "js":
        plan, _ = plan_for_ratio(divergence_matrix(records, num_layers), ratio, depth, scope, fastv_layer)
    else:
        plan = calibrate_by_effect(pipeline, samples, ratio, method, depth, scope, fastv_layer, progress,
                                   max_new_tokens or ANSWER_NEW_TOKENS, image_lse, exact_image_rows)
    return with_mass_offsets(plan, image_lse) if mass_correction else plan


def measure_divergence(pipeline, samples, max_new_tokens: int = JS_NEW_TOKENS, progress: bool = True,
                       per_head: bool = False) -> torch.Tensor:
    """Mean JS divergence `[L, L]` over `samples`, a list of `(image, prompt)` pairs (image: path, PIL or None);
    the prompt's image tokens are the keys compared."""
    records = record_attention(pipeline, samples, max_new_tokens, progress)
    return divergence_matrix(records, pipeline.model.config.text.num_hidden_layers, per_head)


def record_attention(pipeline, samples, max_new_tokens: int = JS_NEW_TOKENS, progress: bool = True) -> list:
    """The records of `RecordingAttention` over `samples` with full attention, generating `max_new_tokens`."""
    model = pipeline.model
    records = []
    for i, (image, prompt) in enumerate(tqdm(samples, desc="calibrating", unit="sample", disable=not progress)):
        request = pipeline.request(prompt, image)
        ids = torch.tensor(request.input_ids)
        is_image = ids == model.config.image_token_id
        if not bool(is_image.any()):
            raise InputError(f"calibration sample {i} has no image tokens: calibration needs image+prompt pairs")
        generate(model, [request], SamplingParams(max_new_tokens=max_new_tokens), stop_ids=pipeline.stop_ids,
                 decoder_setup=recording_setup(is_image, records))
    return records
