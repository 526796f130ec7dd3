"""Perplexity under full attention, calibrated lazy plans and the baselines, on windows of text.

Each window is `span + tail` tokens. The first `span` tokens stand in for an
image: their keys are the "image keys" of the visual scope, and calibration
measures the attention that the tail's queries give to them. Perplexity is
measured on the tail's tokens from its second on, each predicted at a tail
position from every token before it (FastV and VTW drop span positions, among
them the one that predicts the first tail token), for every run alike, so the
numbers compare directly. Plans come from the divergence walk (`method="js"`)
or from their effect on the tail's next-token distributions (`"rank"`,
`"greedy"`: minilazy/lazy/effect.py). With `baselines`, FastV, VTW and lazy
layers with FastV run at the KV saving of each lazy visual plan; FastV ranks
the span's tokens by the attention of the first tail token, the last one
before any scored prediction. The KV saving of a run is read from the cache
LazyRuntime allocates for it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from minilazy.errors import InputError
from minilazy.fastv import PAPER_LAYER, VTW, FastV, ratio_saving
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


@dataclass
class BaselineResult:
    name: str  # e.g. "VTW K=27"
    kind: str  # "fastv", "vtw" or "lazy+fastv"
    matches: float  # the lazy ratio asked for whose visual plan's KV saving this run matches (VTW: the nearest)
    fastv_layer: int  # K: the first layer without the dropped span tokens
    fastv_ratio: float  # R: share of the span's tokens dropped from layer K on (VTW: 1)
    anchors: list[int]  # the lazy plan (lazy+fastv; otherwise every layer its own anchor)
    lazy_layers: list[int]
    kv_bytes: int
    kv_saved: float
    perplexity: float
    increase: float


def span_mask(batch: int, span: int, window: int) -> torch.Tensor:
    """`[B, window]`: True on the leading span, the tokens that stand in for an image."""
    return (torch.arange(window) < span)[None, :].expand(batch, window)


def check_windows(windows: torch.Tensor, span: int) -> None:
    if windows.dim() != 2:
        raise InputError(f"windows must be [N, T] token ids, got shape {tuple(windows.shape)}")
    if not 1 <= span < windows.shape[1] - 1:
        raise InputError(f"the span must leave at least two tokens of the {windows.shape[1]}-token window, got {span}")


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
    """Negative log-likelihood `[B, tail - 1]` of the tail's tokens from its second on, each from the logits at
    the tail position before it; `logits [B, T', V]` end with the tail's positions (FastV and VTW drop span
    positions only)."""
    tail = ids.shape[1] - span
    log_probs = logits[:, -tail:-1].double().log_softmax(-1)  # [B, tail - 1, V]
    return -log_probs.gather(-1, ids[:, span + 1 :, None])[..., 0]  # [B, tail - 1]


def window_runtime(span: int, batch: int, width: int, plan: LayerPlan | None, fastv: FastV | None,
                   exact_image_rows: bool, device) -> LazyRuntime | None:
    """The runtime of `plan` and `fastv` on windows whose leading `span` tokens are the image (None: the plain
    model); FastV ranks the span by the attention of the first tail token."""
    if plan is None and fastv is None:
        return None
    return LazyRuntime(plan, image_mask=span_mask(batch, span, width).to(device), fastv=fastv,
                       exact_image_rows=exact_image_rows, fastv_rank_position=span)


@torch.inference_mode()
def perplexity(model, windows: torch.Tensor, span: int, plan: LayerPlan | None = None, batch_size: int = 8,
               progress: bool = True, desc: str = "full", exact_image_rows: bool = False,
               fastv: FastV | None = None) -> float:
    """exp(mean NLL of the tail's tokens from its second on) over `windows [N, T]`, under `plan` and `fastv`
    (FastV or VTW); neither runs the plain model."""
    check_windows(windows, span)
    total, count = 0.0, 0
    for start in tqdm(range(0, windows.shape[0], batch_size), desc=desc, unit="batch", disable=not progress):
        ids = windows[start : start + batch_size].to(model.device)
        batch, width = ids.shape
        runtime = window_runtime(span, batch, width, plan, fastv, exact_image_rows, ids.device)
        logits = model.forward_logits(ids, None, torch.full((batch,), width, device=ids.device), decoder_setup=runtime)
        kept = None if runtime is None or runtime.pruning is None else runtime.pruning.kept_slots  # [B, T'] or None
        tail = torch.arange(span, width, device=ids.device)  # [tail] the tail's positions
        if kept is not None and not bool((kept[:, span - width :] == tail).all()):
            raise RuntimeError("the logits do not end with the tail's positions")  # every window prunes alike
        nll = tail_nll(logits, ids, span)
        total, count = total + float(nll.sum()), count + nll.numel()
    return math.exp(total / count)


def kv_bytes(model, plan: LayerPlan | None, span: int, window: int, fastv: FastV | None = None) -> int:
    """Bytes of the KV cache LazyRuntime allocates for one window under `plan` and `fastv`."""
    ids = torch.zeros(1, window, dtype=torch.long, device=model.device)
    runtime = LazyRuntime(plan, image_mask=span_mask(1, span, window).to(model.device), fastv=fastv)
    return runtime(model, ids, torch.tensor([window], device=model.device), window, window).cache.nbytes


def matched_baselines(lazy_layers: int, ratio: float, planner, num_layers: int,
                      fastv_layer: int) -> list[tuple[str, str, LayerPlan | None, FastV]]:
    """`(name, kind, plan, FastV or VTW)` of the runs that save the KV bytes of `lazy_layers` lazy visual layers
    (the plan asked for as `ratio`): FastV's R by `ratio_saving`; VTW from K saves 2 (L - K) layers' worth of the
    span's keys, so L - K = n / 2, rounded to the nearest layer (an odd n: half a layer more); lazy + FastV is
    the plan of `ratio / 2` (chosen with FastV's layer by `planner(ratio, scope, fastv_layer)`, which gives a plan
    and its threshold) with FastV's R saving the rest. A run that cannot match (R outside [0, 1]) is left out."""
    runs = []
    ratio_fastv = round(ratio_saving(lazy_layers, num_layers, fastv_layer), 4)
    if ratio_fastv <= 1:
        runs.append((f"FastV K={fastv_layer} R={ratio_fastv:g}", "fastv", None, FastV(fastv_layer, ratio_fastv)))
    vtw = num_layers - math.floor(lazy_layers / 2 + 0.5)
    runs.append((f"VTW K={vtw}", "vtw", None, VTW(vtw)))
    half, _ = planner(ratio / 2, "visual", fastv_layer)
    after = sum(layer >= fastv_layer for layer in half.lazy_layers)
    ratio_fastv = round(ratio_saving(lazy_layers - len(half.lazy_layers), num_layers, fastv_layer, after), 4)
    if 0 <= ratio_fastv <= 1:
        runs.append((f"lazy {ratio / 2:g} + FastV K={fastv_layer} R={ratio_fastv:g}", "lazy+fastv", half,
                     FastV(fastv_layer, ratio_fastv)))
    return runs


def kv_saving_formula(plan: LayerPlan, span: int, window: int) -> float:
    """KV saving by the formula of docs/lazy_attention.md: `f * n_img / (2 n)` for scope visual, `f / 2` for scope all."""
    image_share = span / window if plan.scope == "visual" else 1.0
    return plan.lazy_ratio * image_share / 2


def run_perplexity_study(model, evaluation: torch.Tensor, calibration: torch.Tensor, span: int, ratios, scopes=SCOPES,
              depth: int = 1, batch_size: int = 8, progress: bool = True, per_head: bool = False,
              method: str = "js", mass_correction: bool = False, exact_image_rows: bool = False,
              baselines: bool = False, fastv_layer: int = PAPER_LAYER) -> dict:
    """Calibrate on `calibration`, then perplexity on `evaluation` for full attention and every (scope, ratio),
    with plans chosen by `method` (the divergence matrix is measured with every method), lazy visual layers
    with their mass offsets and exact image rows when asked; with `baselines`, FastV (at `fastv_layer`), VTW
    and lazy + FastV at the KV saving of each lazy visual plan."""
    for ratio in ratios:
        if not 0 <= ratio < 1:
            raise InputError(f"lazy ratios must be in [0, 1), got {ratio}")
    for scope in scopes:
        if scope not in SCOPES:
            raise InputError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    check_windows(evaluation, span)
    num_layers = model.config.text.num_hidden_layers
    if baselines and not 1 <= fastv_layer < num_layers:
        raise InputError(f"the FastV layer must be in [1, {num_layers - 1}] for this {num_layers}-layer model, "
                         f"got {fastv_layer}")
    window = evaluation.shape[1]
    if calibration.shape[1] != window:
        raise InputError(f"calibration windows have {calibration.shape[1]} tokens, evaluation windows {window}")
    started = time.perf_counter()
    js, image_lse = calibrate(model, calibration, span, progress, per_head)
    effect = None
    if method != "js":
        divergence = OutputDivergence(model, window_batches(calibration.to(model.device), span, batch_size),
                                      image_lse if mass_correction else None, exact_image_rows)
        effect = EffectPlanner(divergence, num_layers, method, progress)
    calibration_seconds = time.perf_counter() - started
    full_bytes = kv_bytes(model, LayerPlan.full(num_layers), span, window)
    full = perplexity(model, evaluation, span, None, batch_size, progress, "full attention")

    def planner(ratio: float, scope: str, fastv: int | None = None) -> tuple[LayerPlan, float | None]:
        plan, threshold = plan_for_ratio(js, ratio, depth, scope, fastv) if effect is None else \
            (effect.plan(ratio, depth, scope, fastv), None)
        return (with_mass_offsets(plan, image_lse) if mass_correction else plan), threshold

    results, baseline_results = [], []
    for scope in scopes:
        for ratio in ratios:
            plan, threshold = planner(ratio, scope)
            ppl = perplexity(model, evaluation, span, plan, batch_size, progress, f"{scope} {ratio:g}",
                             exact_image_rows)
            used = kv_bytes(model, plan, span, window)
            results.append(PlanResult(scope, ratio, list(plan.anchors), plan.lazy_layers, threshold, used,
                                      1 - used / full_bytes, kv_saving_formula(plan, span, window), ppl, ppl / full - 1))
    for lazy in [r for r in results if baselines and r.scope == "visual" and r.lazy_layers]:
        for name, kind, plan, fastv in matched_baselines(len(lazy.lazy_layers), lazy.ratio, planner, num_layers,
                                                         fastv_layer):
            ppl = perplexity(model, evaluation, span, plan, batch_size, progress, name, exact_image_rows, fastv)
            used = kv_bytes(model, plan, span, window, fastv)
            layers = plan or LayerPlan.full(num_layers)
            baseline_results.append(BaselineResult(name, kind, lazy.ratio, fastv.layer, fastv.ratio,
                                                   list(layers.anchors), layers.lazy_layers, used,
                                                   1 - used / full_bytes, ppl, ppl / full - 1))
    return {
        "span": span, "tail": window - span, "window": window, "depth": depth, "method": method,
        "divergence_per_head": per_head, "mass_correction": mass_correction, "exact_image_rows": exact_image_rows,
        "evaluation_windows": evaluation.shape[0], "calibration_windows": calibration.shape[0],
        "scored_tokens": evaluation.shape[0] * (window - span - 1), "num_layers": num_layers,
        "full": {"perplexity": full, "kv_bytes": full_bytes},
        "plans": [asdict(r) for r in results],
        "baselines": [asdict(r) for r in baseline_results], "fastv_layer": fastv_layer if baselines else None,
        "divergence": js.tolist(),
        "seconds": {"calibration": calibration_seconds, "total": time.perf_counter() - started},
    }
