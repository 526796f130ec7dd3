"""The study's sweep: calibrate once, then score every runtime setting on the same questions.

The questions are a question set (minilazy/study/question_sets.py): the demo's held-out questions,
or a VQA data set of the user's. Calibration runs full attention on its calibration samples (for the
demo, `calib` training scenes, seeds 0, 1, ..., disjoint from the evaluation seeds, with the prompt
"Describe the image."; for a data set, the images and questions of its first `calib` lines) and
measures the Jensen-Shannon divergence between the layers' attention over image keys. With the
`js` method every lazy plan is picked from that one divergence matrix; with `rank` or `greedy` from
the plans' effect on the full model's answers to the same samples (minilazy/lazy/effect.py). Plans
combined with FastV are chosen with its layer, so they are valid for it. VTW runs withdraw the image
tokens from a few layers K on. Every setting then answers the same questions greedily, in a fixed
order, so the result is reproducible.
The KV figures are the bytes of the caches the generation actually allocated.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from tqdm import tqdm

from minilazy.fastv import PAPER_LAYER, VTW, FastV, ratio_saving
from minilazy.lazy.calibrate import divergence_matrix, plan_for_ratio, record_attention
from minilazy.lazy.effect import effect_planner
from minilazy.lazy.mass_correction import image_lse_means, with_mass_offsets
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime

LAZY_RATIOS = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9)
ALL_SCOPE_RATIOS = (0.25, 0.5)
FASTV_LAYER = PAPER_LAYER
FASTV_RATIOS = (0.5, 0.75)  # the paper's
MATCHED_LAZY_RATIOS = (0.25, 0.5, 0.75)  # FastV also runs at the KV savings of these shares of lazy layers
KINDS = ("full", "lazy", "lazy-all", "fastv", "lazy+fastv", "vtw")  # the plot draws the runs of each kind alike


@dataclass(frozen=True)
class RunSpec:
    """One runtime setting: a share of lazy layers (0: none) with a scope, and optionally FastV or VTW."""

    name: str
    kind: str  # one of KINDS
    lazy_ratio: float = 0.0
    scope: str = "visual"
    fastv_layer: int | None = None
    fastv_ratio: float | None = None
    vtw_layer: int | None = None


def fastv_ratios(num_layers: int) -> list[float]:
    """FastV's shares of image tokens dropped: the paper's, and those that save what `round(r L)` lazy visual
    layers save for r in MATCHED_LAZY_RATIOS (`ratio_saving`)."""
    matched = [] if num_layers <= FASTV_LAYER else [  # no layer after FastV's: nothing to match
        round(ratio_saving(round(r * num_layers), num_layers, FASTV_LAYER), 2) for r in MATCHED_LAZY_RATIOS]
    return sorted({r for r in [*matched, *FASTV_RATIOS] if 0 < r <= 1})


def default_runs(num_layers: int) -> list[RunSpec]:
    """Full attention, the lazy sweep, the scope-`all` ablation, FastV (`fastv_ratios`), Lazy Attention with
    FastV, and VTW from half, three quarters and all but one of the `num_layers` layers on."""
    runs = [RunSpec("full attention", "full")]
    runs += [RunSpec(f"lazy {r:g}", "lazy", r) for r in LAZY_RATIOS]
    runs += [RunSpec(f"lazy-all {r:g}", "lazy-all", r, scope="all") for r in ALL_SCOPE_RATIOS]
    runs += [RunSpec(f"FastV K={FASTV_LAYER} R={r:g}", "fastv", fastv_layer=FASTV_LAYER, fastv_ratio=r)
             for r in fastv_ratios(num_layers)]
    runs.append(RunSpec(f"lazy 0.5 + FastV K={FASTV_LAYER} R=0.5", "lazy+fastv", 0.5, fastv_layer=FASTV_LAYER,
                        fastv_ratio=0.5))
    runs += [RunSpec(f"VTW K={k}", "vtw", vtw_layer=k)
             for k in sorted({num_layers // 2, 3 * num_layers // 4, num_layers - 1})]
    return runs


def runtime_for(spec: RunSpec, planner, depth: int = 1,
                exact_image_rows: bool = False) -> tuple[LazyRuntime | None, LayerPlan | None, float | None]:
    """The cache layout of a setting, its plan and the divergence threshold that picked it (None: plain model,
    or a plan chosen by its effect); `planner(ratio, depth, scope, fastv_layer)` gives the plan and its threshold."""
    fastv = FastV(spec.fastv_layer, spec.fastv_ratio) if spec.fastv_layer is not None else None
    if spec.vtw_layer is not None:
        fastv = VTW(spec.vtw_layer)
    plan = threshold = None
    if spec.lazy_ratio > 0:
        plan, threshold = planner(spec.lazy_ratio, depth, spec.scope, spec.fastv_layer)
    if plan is None and fastv is None:
        return None, None, None
    return LazyRuntime(plan, fastv=fastv, exact_image_rows=exact_image_rows), plan, threshold


def run_record(spec: RunSpec, plan: LayerPlan | None, threshold: float | None, scores: dict) -> dict:
    """What the study keeps of one setting: its plan, then the figures of the question set's `score`."""
    figures = dict(scores)
    kv_saved = figures.pop("kv_saved")
    return {
        "name": spec.name, "settings": asdict(spec),
        "plan": None if plan is None else {**plan.to_dict(), "threshold": threshold},
        "lazy_layers": 0 if plan is None else len(plan.lazy_layers),
        "kv_saved_percent": 100 * kv_saved, **figures,
    }


def run_study(pipeline, questions, calib: int = 64, batch_size: int = 50, max_new_tokens: int = 64,
              runs: list[RunSpec] | None = None, progress: bool = True, method: str = "js",
              mass_correction: bool = False, exact_image_rows: bool = False) -> dict:
    """Calibrate once, score every run in order on `questions` (a question set: `DemoQuestions` or
    `DataQuestions`); returns the settings, the divergence matrix, what the report shows, and the runs.
    `method` chooses the lazy plans: `js` (the divergence walk), `rank` or `greedy` (their effect); lazy
    visual layers get their mass offsets and exact image rows when asked (docs/lazy_attention.md)."""
    runs = default_runs(pipeline.config.text.num_hidden_layers) if runs is None else runs
    start = time.time()
    samples = questions.calibration_samples(calib)
    num_layers = pipeline.config.text.num_hidden_layers
    attention = record_attention(pipeline, samples, progress=progress)
    js, image_lse = divergence_matrix(attention, num_layers), image_lse_means(attention, num_layers)
    effect = None if method == "js" else effect_planner(pipeline, samples, method, progress=progress,
                                                        image_lse=image_lse if mass_correction else None,
                                                        exact_image_rows=exact_image_rows)

    def planner(ratio, depth, scope, fastv_layer):
        if effect is None:
            plan, threshold = plan_for_ratio(js, ratio, depth, scope, fastv_layer)
        else:
            plan, threshold = effect.plan(ratio, depth, scope, fastv_layer), None
        return (with_mass_offsets(plan, image_lse) if mass_correction else plan), threshold

    calibration_seconds = time.time() - start
    records = []
    for spec in runs:
        runtime, plan, threshold = runtime_for(spec, planner, exact_image_rows=exact_image_rows)
        if progress:
            tqdm.write(f"[{len(records) + 1}/{len(runs)}] {spec.name}")
        scores = questions.score(pipeline, runtime, batch_size, max_new_tokens, progress)
        records.append(run_record(spec, plan, threshold, scores))
    return {
        "settings": {"model": str(pipeline.model_dir), **questions.settings(calib), "calib": calib,
                     "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                     "calibration_seconds": calibration_seconds, "lazy_method": method,
                     "mass_correction": mass_correction, "exact_image_rows": exact_image_rows,
                     "backend": pipeline.model.ops.backend,
                     "dtype": str(pipeline.model.dtype).removeprefix("torch."), "q_cache_depth": 1},
        "subject": questions.subject(calib),
        "metrics": [asdict(metric) for metric in questions.metrics],
        "groups": questions.groups,
        "divergence": js.tolist(),
        "runs": records,
    }
