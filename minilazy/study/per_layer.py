"""The per-layer ablation: each decoder layer made lazy alone, to show which layers carry the cost.

Layer l (1 <= l < L) inherits from layer l - 1, every other layer stays active, and the questions of
a question set are answered as in the sweep (with the mass correction and exact image rows when
asked). `per_layer.json` keeps each layer's metrics (for the demo, accuracy and description F1)
beside full attention's; `per_layer.png` draws them as bars.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from minilazy.config import write_json
from minilazy.lazy.calibrate import record_attention
from minilazy.lazy.mass_correction import image_lse_means, with_mass_offsets
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime


def one_lazy_layer(num_layers: int, layer: int) -> LayerPlan:
    """The plan in which only `layer` is lazy, inheriting from the layer below."""
    return LayerPlan(tuple(layer - 1 if l == layer else l for l in range(num_layers)))


def run_per_layer(pipeline, questions, calib: int, batch_size: int = 50, max_new_tokens: int = 64,
                  mass_correction: bool = False, exact_image_rows: bool = False, progress: bool = True) -> dict:
    """Full attention, then every layer lazy alone, on the questions of `questions` (a question set)."""
    num_layers = pipeline.config.text.num_hidden_layers
    image_lse = None
    if mass_correction:  # the offsets come from full attention on the calibration samples, as in the sweep
        records = record_attention(pipeline, questions.calibration_samples(calib), progress=progress)
        image_lse = image_lse_means(records, num_layers)

    def scored(runtime):
        scores = questions.score(pipeline, runtime, batch_size, max_new_tokens, progress=False)
        return {metric.key: scores[metric.key] for metric in questions.metrics} | {
            "kv_saved_percent": 100 * scores["kv_saved"]}

    full = scored(None)
    layers = []
    for layer in tqdm(range(1, num_layers), desc="one lazy layer", unit="layer", disable=not progress):
        plan = one_lazy_layer(num_layers, layer)
        plan = with_mass_offsets(plan, image_lse) if mass_correction else plan
        layers.append({"layer": layer, "anchor": layer - 1,
                       **scored(LazyRuntime(plan, exact_image_rows=exact_image_rows))})
    return {
        "settings": {"model": str(pipeline.model_dir), **questions.settings(calib), "calib": calib,
                     "mass_correction": mass_correction, "exact_image_rows": exact_image_rows},
        "subject": questions.subject(calib),
        "metrics": [asdict(metric) for metric in questions.metrics],
        "full": full,
        "layers": layers,
    }


def write_per_layer(result: dict, out_dir: str | Path) -> list[Path]:
    """Write per_layer.json and per_layer.png (accuracy and description F1 per lazy layer) into `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "per_layer.json", out / "per_layer.png"
    write_json(json_path, result)
    metrics = result["metrics"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    layers = [row["layer"] for row in result["layers"]]
    for ax, metric in zip(axes[0], metrics):
        ax.bar(layers, [100 * row[metric["key"]] for row in result["layers"]], color="tab:blue", alpha=0.85)
        ax.axhline(100 * result["full"][metric["key"]], color="black", linestyle="--", label="full attention")
        ax.set_xticks(layers)
        ax.set_xlabel("the one lazy layer (inheriting from the layer below)")
        ax.set_ylabel(f"{metric['axis']} (%)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"One lazy layer at a time, {result['subject']}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return [json_path, png_path]
