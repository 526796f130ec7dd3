"""The layer plan: which decoder layers are lazy, and which active layer each inherits from.

`anchors[l] == l` makes layer l active; `anchors[l] == a < l` makes it lazy,
inheriting its attention over image keys (scope `visual`) or over every key
(scope `all`) from active layer a. Active layers write their queries into a Q
Cache ring of `depth` slots, so a lazy layer may only inherit from one of the
last `depth` active layers before it. Stored as JSON.

`mass_offsets` (optional, scope `visual`): for each layer, one offset per query head added to the
log-sum-exp of the inherited image part before it is merged with the layer's own text part, so that
the share of attention the image gets matches what the layer's own logits would give it
(docs/lazy_attention.md); `()` for an active layer. Plans written without them load as before.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from minilazy.config import write_json
from minilazy.errors import InputError

SCOPES = ("visual", "all")


@dataclass(frozen=True)
class LayerPlan:
    anchors: tuple[int, ...]
    depth: int = 1  # Q Cache ring slots (R)
    scope: str = "visual"
    mass_offsets: tuple[tuple[float, ...], ...] = ()  # per layer, one per head; () everywhere: no correction

    def __post_init__(self):
        object.__setattr__(self, "anchors", tuple(int(a) for a in self.anchors))
        object.__setattr__(self, "mass_offsets", tuple(tuple(float(b) for b in o) for o in self.mass_offsets))
        if self.scope not in SCOPES:
            raise InputError(f"plan scope {self.scope!r} is not one of {', '.join(SCOPES)}")
        if self.depth < 1:
            raise InputError(f"plan depth (Q Cache slots) must be at least 1, got {self.depth}")
        if not self.anchors:
            raise InputError("plan has no layers")
        if self.anchors[0] != 0:
            raise InputError("layer 0 must be active: there is no earlier layer to inherit from")
        for layer, anchor in enumerate(self.anchors):
            if anchor == layer:
                continue
            if not 0 <= anchor < layer or self.anchors[anchor] != anchor:
                raise InputError(f"layer {layer} inherits from layer {anchor}, which is not an earlier active layer")
            newer = sum(1 for a in range(anchor + 1, layer) if self.anchors[a] == a)
            if newer >= self.depth:
                raise InputError(
                    f"layer {layer} inherits from layer {anchor}, but {newer} active layers come between them and "
                    f"the Q Cache keeps only the last {self.depth}; raise depth or pick a nearer anchor"
                )

        self._check_mass_offsets()

    def _check_mass_offsets(self) -> None:
        if not self.mass_offsets:
            return
        if self.scope != "visual" or len(self.mass_offsets) != self.num_layers:
            raise InputError(f"mass offsets need scope 'visual' and one entry per layer ({self.num_layers}), got "
                             f"scope {self.scope!r} and {len(self.mass_offsets)} entries")
        heads = {len(o) for l, o in enumerate(self.mass_offsets) if self.is_lazy(l)}
        if len(heads) > 1 or 0 in heads or any(self.mass_offsets[l] for l in range(self.num_layers)
                                                if not self.is_lazy(l)):
            raise InputError("mass offsets must give every lazy layer one value per head and active layers none")

    def mass_offset(self, layer: int) -> tuple[float, ...]:
        """Layer `layer`'s offsets, one per query head (`()` without a correction)."""
        return self.mass_offsets[layer] if self.mass_offsets else ()

    def without_mass_correction(self) -> LayerPlan:
        return replace(self, mass_offsets=())

    @classmethod
    def full(cls, num_layers: int) -> LayerPlan:
        """Every layer active: the plain model."""
        return cls(tuple(range(num_layers)))

    @property
    def num_layers(self) -> int:
        return len(self.anchors)

    def is_lazy(self, layer: int) -> bool:
        return self.anchors[layer] != layer

    @property
    def lazy_layers(self) -> list[int]:
        return [l for l in range(self.num_layers) if self.is_lazy(l)]

    @property
    def lazy_ratio(self) -> float:
        return len(self.lazy_layers) / self.num_layers

    @property
    def anchor_layers(self) -> list[int]:
        """Active layers that some lazy layer inherits from."""
        return sorted({self.anchors[l] for l in self.lazy_layers})

    def ring_slot(self, active_layer: int) -> int:
        """The Q Cache slot an active layer writes: its rank among active layers, modulo depth."""
        return sum(1 for a in range(active_layer) if self.anchors[a] == a) % self.depth

    def check_layers(self, num_layers: int) -> None:
        if num_layers != self.num_layers:
            raise InputError(f"the plan is for {self.num_layers} layers but the model has {num_layers}")

    def inheritance(self) -> str:
        """The lazy layers and their anchors, `"3<-2 5<-4"` ("none" without lazy layers)."""
        return " ".join(f"{l}<-{self.anchors[l]}" for l in self.lazy_layers) or "none"

    def to_dict(self) -> dict:
        """The plan as stored: its fields plus the lazy layers, for readers of the JSON."""
        return {**asdict(self), "anchors": list(self.anchors), "lazy_layers": self.lazy_layers}

    def save(self, path: str | Path, **extra) -> None:
        """Write the plan as JSON, with `extra` fields (calibration details) after it."""
        write_json(path, {**self.to_dict(), **extra})

    @classmethod
    def load(cls, path: str | Path) -> LayerPlan:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: no such plan file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{path}: not a JSON layer plan ({err})") from None
        data = data if isinstance(data, dict) else {}
        anchors, depth = data.get("anchors"), data.get("depth", 1)
        if not isinstance(anchors, list) or not all(type(a) is int for a in anchors):
            raise InputError(f"{path}: a layer plan needs an 'anchors' list of layer numbers")
        if type(depth) is not int:
            raise InputError(f"{path}: the plan's 'depth' must be a whole number, got {depth!r}")
        offsets = data.get("mass_offsets", [])
        if not isinstance(offsets, list) or not all(
                isinstance(o, list) and all(isinstance(b, (int, float)) for b in o) for o in offsets):
            raise InputError(f"{path}: the plan's 'mass_offsets' must be a list of lists of numbers")
        return cls(tuple(anchors), depth, data.get("scope", "visual"), tuple(map(tuple, offsets)))
