"""Perplexity under full attention and under calibrated lazy plans, on windows of text.

Each window is `span + tail` tokens. The first `span` tokens stand in for an
image: their keys are the "image keys" of the visual scope, and calibration
measures the attention that the tail's queries give to them. Perplexity is
measured on the tail's tokens only (each predicted from every token before
it), for full attention and for every plan, so the numbers compare directly.
Plans come from the divergence walk (`method="js"`) or from their effect on the
tail's next-token distributions (`"rank"`, `"greedy"`: minilazy/lazy/effect.py).
The KV saving of a plan is read from the cache LazyRuntime allocates for it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from minilazy.errors import InputError
from minilazy.lazy.calibrate import METHODS, divergence_matrix, plan_for_ratio, recording_setup
from minilazy.lazy.effect import EffectPlanner, OutputDivergence, window_batches
from minilazy.lazy.mass_correction import image_lse_means, with_mass_offsets
from minilazy.lazy.plan import SCOPES, LayerPlan
from minilazy.lazy.runtime import LazyRuntime


@dataclass
class PlanResult:
    scope: str
    ratio: float  # the lazy ratio asked for
    anchors: list[int]
    lazy_layers: list[int]
    threshold: float | None  # the walk's divergence threshold (None: chosen by its effect)
    kv_bytes: int  # allocated for one window under this plan
    kv_saved: float  # 1 - kv_bytes / full attention's
    kv_saved_formula: float  # the formula of docs/lazy_attention.md: f * n_img / (2 n) (visual) or f / 2 (all)
    perplexity: float
    increase: float  # perplexity / full attention's - 1


def span_mask(batch: int, span: int, window: int) -> torch.Tensor:
    """`[B, window]`: True on the leading span, the tokens that stand in for an image."""
    return (torch.arange(window) < span)[None, :].expand(batch, window)


def check_windows(windows: torch.Tensor, span: int) -> None:
    if windows.dim() != 2:
        raise InputError(f"windows must be [N, T] token ids, got shape {tuple(windows.shape)}")
    if not 1 <= span < windows.shape[1]:
        raise InputError(f"the span must leave at least one token of the {windows.shape[1]}-token window, got {span}")


@torch.inference_mode()
def calibrate(model, windows: torch.Tensor, span: int, progress: bool = True,
              per_head: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean JS divergence `[L, L]` of the attention the tail queries give to the span's keys (full attention),
    and the mean log-sum-exp of each layer's logits over them per head `[L, H]` (the mass offsets' measure)."""
    check_windows(windows, span)
    width = windows.shape[1]
    is_image, records = span_mask(1, span, width)[0], []
    lengths = torch.tensor([width])
    for ids in tqdm(windows, desc="calibrating", unit="window", disable=not progress):
        model.forward_logits(ids[None], None, lengths, decoder_setup=recording_setup(is_image, records))
    num_layers = model.config.text.num_hidden_layers
    return divergence_matrix(records, num_layers, per_head), image_lse_means(records, num_layers)


def tail_nll(logits: torch.Tensor, ids: torch.Tensor, span: int) -> torch.Tensor:
    """Negative log-likelihood `[B, T - span]` of each tail token, from the logits `[B, T, V]` before it."""
    log_probs = logits[:, span - 1 : -1].double().log_softmax(-1)  # [B, tail, V]
    return -log_probs.gather(-1, ids[:, span:, None])[..., 0]  # [B, tail]


@torch.inference_mode()
def perplexity(model, windows: torch.Tensor, span: int, plan: LayerPlan | None = None, batch_size: int = 8,
               progress: bool = True, desc: str = "full", exact_image_rows: bool = False) -> float:
    """exp(mean NLL of the tail tokens) over `windows [N, T]`; `plan=None` runs the plain model."""
    check_windows(windows, span)
    total, count = 0.0, 0
    for start in tqdm(range(0, windows.shape[0], batch_size), desc=desc, unit="batch", disable=not progress):
        ids = windows[start : start + batch_size].to(model.device)
        batch, width = ids.shape
        mask = span_mask(batch, span, width).to(ids.device)
        runtime = None if plan is None else LazyRuntime(plan, image_mask=mask, exact_image_rows=exact_image_rows)
        logits = model.forward_logits(ids, None, torch.full((batch,), width, device=ids.device), decoder_setup=runtime)
        nll = tail_nll(logits, ids, span)
        total, count = total + float(nll.sum()), count + nll.numel()
    return math.exp(total / count)


def kv_bytes(model, plan: LayerPlan, span: int, window: int) -> int:
    """Bytes of the KV cache LazyRuntime allocates for one window under `plan`."""
    ids = torch.zeros(1, window, dtype=torch.long, device=model.device)
    runtime = LazyRuntime(plan, image_mask=span_mask(1, span, window).to(model.device))
    return runtime(model, ids, torch.tensor([window], device=model.device), window, window).cache.nbytes


def kv_saving_formula(plan: LayerPlan, span: int, window: int) -> float:
    """KV saving by the formula of docs/lazy_attention.md: `f * n_img / (2 n)` for scope visual, `f / 2` for scope all."""
    image_share = span / window if plan.scope == "visual" else 1.0
    return plan.lazy_ratio * image_share / 2


def run_perplexity_study(model, evaluation: torch.Tensor, calibration: torch.Tensor, span: int, ratios, scopes=SCOPES,
              depth: int = 1, batch_size: int = 8, progress: bool = True, per_head: bool = False,
              method: str = "js", mass_correction: bool = False, exact_image_rows: bool = False) -> dict:
    """Calibrate on `calibration`, then perplexity on `evaluation` for full attention and every (scope, ratio),
    with plans chosen by `method` (the divergence matrix is measured with every method), lazy visual layers
    with their mass offsets and exact image rows when asked."""
    for ratio in ratios:
        if not 0 <= ratio < 1:
            raise InputError(f"lazy ratios must be in [0, 1), got {ratio}")
    for scope in scopes:
        if scope not in SCOPES:
            raise InputError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    check_windows(evaluation, span)
    window = evaluation.shape[1]
    if calibration.shape[1] != window:
        raise InputError(f"calibration windows have {calibration.shape[1]} tokens, evaluation windows {window}")
    started = time.perf_counter()
    js, image_lse = calibrate(model, calibration, span, progress, per_head)
    num_layers = model.config.text.num_hidden_layers
    effect = None
    if method != "js":
        divergence = OutputDivergence(model, window_batches(calibration.to(model.device), span, batch_size),
                                      image_lse if mass_correction else None, exact_image_rows)
        effect = EffectPlanner(divergence, num_layers, method, progress)
    calibration_seconds = time.perf_counter() - started
    full_bytes = kv_bytes(model, LayerPlan.full(num_layers), span, window)
    full = perplexity(model, evaluation, span, None, batch_size, progress, "full attention")
    results = []
    for scope in scopes:
        for ratio in ratios:
            plan, threshold = plan_for_ratio(js, ratio, depth, scope) if effect is None else \
                (effect.plan(ratio, depth, scope), None)
            plan = with_mass_offsets(plan, image_lse) if mass_correction else plan
            ppl = perplexity(model, evaluation, span, plan, batch_size, progress, f"{scope} {ratio:g}",
                             exact_image_rows)
            used = kv_bytes(model, plan, span, window)
            results.append(PlanResult(scope, ratio, list(plan.anchors), plan.lazy_layers, threshold, used,
                                      1 - used / full_bytes, kv_saving_formula(plan, span, window), ppl, ppl / full - 1))
    return {
        "span": span, "tail": window - span, "window": window, "depth": depth, "method": method,
        "divergence_per_head": per_head, "mass_correction": mass_correction, "exact_image_rows": exact_image_rows,
        "evaluation_windows": evaluation.shape[0], "calibration_windows": calibration.shape[0],
        "scored_tokens": evaluation.shape[0] * (window - span), "num_layers": num_layers,
        "full": {"perplexity": full, "kv_bytes": full_bytes},
        "plans": [asdict(r) for r in results],
        "divergence": js.tolist(),
        "seconds": {"calibration": calibration_seconds, "total": time.perf_counter() - started},
    }
