"""The per-layer ablation: each decoder layer made lazy alone, to show which layers carry the cost.

Layer l (1 <= l < L) inherits from layer l - 1, every other layer stays active, and the held-out
questions are answered as in the sweep (with the mass correction and exact image rows when asked).
`per_layer.json` keeps each layer's accuracy and description F1 beside full attention's;
`per_layer.png` draws them as bars.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from minilazy.config import write_json
from minilazy.demo.evaluate import evaluate
from minilazy.lazy.calibrate import record_attention
from minilazy.lazy.mass_correction import image_lse_means, with_mass_offsets
from minilazy.lazy.plan import LayerPlan
from minilazy.lazy.runtime import LazyRuntime
from minilazy.study.sweep import calibration_samples


def one_lazy_layer(num_layers: int, layer: int) -> LayerPlan:
    """The plan in which only `layer` is lazy, inheriting from the layer below."""
    return LayerPlan(tuple(layer - 1 if l == layer else l for l in range(num_layers)))


def run_per_layer(pipeline, model_dir: str, n: int, calib: int, seed_offset: int = 0, batch_size: int = 50,
                  max_new_tokens: int = 64, mass_correction: bool = False, exact_image_rows: bool = False,
                  progress: bool = True) -> dict:
    """Full attention, then every layer lazy alone, on the same `n` held-out questions."""
    num_layers = pipeline.config.text.num_hidden_layers
    image_lse = None
    if mass_correction:  # the offsets come from full attention on the calibration scenes, as in the sweep
        records = record_attention(pipeline, calibration_samples(calib), progress=progress)
        image_lse = image_lse_means(records, num_layers)

    def scored(runtime):
        return evaluate(model_dir, n, seed_offset, batch_size, max_new_tokens, decoder_setup=runtime,
                        pipeline=pipeline, progress=False)

    full = scored(None)
    layers = []
    for layer in tqdm(range(1, num_layers), desc="one lazy layer", unit="layer", disable=not progress):
        plan = one_lazy_layer(num_layers, layer)
        plan = with_mass_offsets(plan, image_lse) if mass_correction else plan
        result = scored(LazyRuntime(plan, exact_image_rows=exact_image_rows))
        layers.append({"layer": layer, "anchor": layer - 1, "accuracy": result["accuracy"],
                       "describe_f1": result["describe_objects"]["f1"], "kv_saved_percent": 100 * result["kv_saved"]})
    return {
        "settings": {"model": str(model_dir), "n": n, "calib": calib, "seed_offset": seed_offset,
                     "mass_correction": mass_correction, "exact_image_rows": exact_image_rows},
        "full": {"accuracy": full["accuracy"], "describe_f1": full["describe_objects"]["f1"]},
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
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    layers = [row["layer"] for row in result["layers"]]
    for ax, key, label in ((axes[0], "accuracy", "accuracy, all questions"),
                           (axes[1], "describe_f1", "description object F1")):
        ax.bar(layers, [100 * row[key] for row in result["layers"]], color="tab:blue", alpha=0.85)
        ax.axhline(100 * result["full"][key], color="black", linestyle="--", label="full attention")
        ax.set_xticks(layers)
        ax.set_xlabel("the one lazy layer (inheriting from the layer below)")
        ax.set_ylabel(f"{label} (%)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"One lazy layer at a time, {result['settings']['n']} held-out questions")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return [json_path, png_path]
