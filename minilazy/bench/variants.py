"""The attention variants the benchmark compares, and the layer plans they use.

Plans are either calibrated on the bench image (`minilazy.lazy.calibrate`; with
random vision weights the divergences are arbitrary but the plan is valid) or
evenly spaced (active layers spread evenly, each lazy layer inheriting from the
nearest active layer below it).
"""

from __future__ import annotations

from dataclasses import dataclass

from minilazy.errors import InputError
from minilazy.fastv import VTW, FastV
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime

FASTV = FastV(layer=2, ratio=0.5)  # the FastV paper's default K and R
PLAN_KINDS = ("calibrated", "even")


@dataclass(frozen=True)
class Variant:
    name: str
    plan: LayerPlan | None = None
    fast_decode: bool = True
    fastv: FastV | None = None

    def runtime(self) -> LazyRuntime | None:
        """The `decoder_setup` hook of `generate` (None: plain attention, the default path)."""
        if self.plan is None and self.fastv is None:
            return None
        return LazyRuntime(self.plan, fast_decode=self.fast_decode, fastv=self.fastv)

    def describe(self) -> dict:
        return {
            "lazy_layers": self.plan.lazy_layers if self.plan else [],
            "anchors": list(self.plan.anchors) if self.plan else None,
            "fast_decode": self.fast_decode if self.plan else None,
            "fastv": {"layer": self.fastv.layer, "ratio": self.fastv.ratio} if self.fastv else None,
            "withdrawal": type(self.fastv).__name__ if self.fastv else None,  # "FastV" or "VTW"
        }


def even_plan(num_layers: int, ratio: float, fastv_layer: int | None = None) -> LayerPlan:
    """About `ratio` of the layers lazy, the active ones evenly spaced (depth-1 Q Cache).

    With FastV at layer K, layers K-1 and K are kept active, so no lazy layer inherits across K.
    """
    if not 0 <= ratio < 1:
        raise InputError(f"lazy ratio must be in [0, 1), got {ratio}")
    n_active = max(1, num_layers - round(ratio * num_layers))
    active = {round(i * num_layers / n_active) for i in range(n_active)} | {0}
    if fastv_layer is not None:
        active |= {fastv_layer - 1, fastv_layer}
    anchors, last = [], 0
    for layer in range(num_layers):
        last = layer if layer in active else last
        anchors.append(last)
    return LayerPlan(tuple(anchors))


def build_plans(kind: str, ratios, num_layers: int, divergence=None) -> dict:
    """`{(ratio, with_fastv): LayerPlan}`; `divergence [L, L]` is needed for calibrated plans."""
    from minilazy.lazy.calibrate import plan_for_ratio

    if kind not in PLAN_KINDS:
        raise InputError(f"unknown plan kind {kind!r}; choose one of {', '.join(PLAN_KINDS)}")
    plans = {}
    for ratio in ratios:
        for fastv_layer in (None, FASTV.layer):
            if kind == "even":
                plan = even_plan(num_layers, ratio, fastv_layer)
            else:
                plan, _ = plan_for_ratio(divergence, ratio, 1, "visual", fastv_layer)
            plans[(ratio, fastv_layer is not None)] = plan
    return plans


def variants(plans: dict, ratios, vtw_layer: int | None = None) -> list[Variant]:
    """Full attention; each lazy plan with the decode fast path on and off; FastV; the largest plan + FastV;
    and VTW from `vtw_layer` on when it is given."""
    out = [Variant("full")]
    for ratio in ratios:
        out.append(Variant(f"lazy-{ratio:g}", plans[(ratio, False)]))
        out.append(Variant(f"lazy-{ratio:g}-nofast", plans[(ratio, False)], fast_decode=False))
    out.append(Variant("fastv", fastv=FASTV))
    top = max(ratios)
    out.append(Variant(f"lazy-{top:g}+fastv", plans[(top, True)], fastv=FASTV))
    if vtw_layer is not None:
        out.append(Variant(f"vtw-{vtw_layer}", fastv=VTW(vtw_layer)))
    return out
