"""The study's outputs: study.json, a markdown table, the accuracy-versus-KV-saved plot and the heatmap."""

from __future__ import annotations

from pathlib import Path

import torch

from minilazy.config import write_json
from minilazy.lazy.calibrate import plan_for_ratio
from minilazy.lazy.heatmap import plot_divergence
from minilazy.lazy.plan import LayerPlan

HEATMAP_RATIO = 0.5  # the heatmap shows the anchors of this lazy ratio
KIND_STYLES = {  # kind -> (marker, colour, legend label)
    "full": ("*", "black", "full attention"),
    "lazy": ("o", "tab:blue", "Lazy Attention (visual scope)"),
    "lazy-all": ("s", "tab:orange", "Lazy Attention (scope all, ablation)"),
    "fastv": ("^", "tab:red", "FastV"),
    "lazy+fastv": ("D", "tab:green", "Lazy Attention + FastV"),
    "vtw": ("v", "tab:purple", "VTW"),
}


def markdown_table(study: dict) -> str:
    """One row per run: its lazy layers and KV figures, the first metric, the per-group scores, the other metrics."""
    runs = study["runs"]
    first, *others = study["metrics"]
    groups = list(runs[0][study["groups"]]) if runs else []
    header = ["run", "lazy layers", "KV bytes", "KV saved", first["column"], *groups, *(m["column"] for m in others),
              "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        layers = len(run["plan"]["anchors"]) if run["plan"] else len(study["divergence"])
        cells = [run["name"], f"{run['lazy_layers']}/{layers}", f"{run['kv_cache_bytes']:,}",
                 f"{run['kv_saved_percent']:.1f}%", f"{run[first['key']]:.1%}",
                 *(f"{run[study['groups']][g]:.1%}" for g in groups), *(f"{run[m['key']]:.1%}" for m in others),
                 f"{run['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_study(study: dict, path: str | Path) -> None:
    """Each metric of the study (accuracy, F1) versus KV cache saved, one labelled marker per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = study["metrics"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 5.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for kind, (marker, colour, legend) in KIND_STYLES.items():
            runs = sorted((r for r in study["runs"] if r["settings"]["kind"] == kind), key=lambda r: r["kv_saved_percent"])
            if not runs:
                continue
            xs, ys = [r["kv_saved_percent"] for r in runs], [100 * r[metric["key"]] for r in runs]
            ax.plot(xs, ys, marker=marker, color=colour, label=legend, markersize=8,
                    linestyle="-" if len(runs) > 1 else "none", alpha=0.85)
            for run, x, y in zip(runs, xs, ys):
                # labels of nearby points are staggered vertically by the run's position so they stay readable
                lift = 4 + 9 * (study["runs"].index(run) % 4)
                ax.annotate(run["name"], (x, y), textcoords="offset points", xytext=(4, lift), fontsize=7)
    save_metric_axes(fig, axes[0], metrics, f"KV cache saved vs accuracy on {study['subject']}", path)


def save_metric_axes(fig, axes, metrics: list[dict], title: str, path: str | Path, legend_size: int = 8) -> None:
    """Label one axis per metric against KV saved, title the figure, write it to `path` and close it."""
    import matplotlib.pyplot as plt

    for ax, metric in zip(axes, metrics):
        ax.set_xlabel("KV cache saved vs full attention (%, allocated bytes)")
        ax.set_ylabel(f"{metric['axis']} (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    axes[0].legend(fontsize=legend_size, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(study: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write study.json, study.md, study.png and heatmap.png into `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / file for name, file in
             (("json", "study.json"), ("md", "study.md"), ("png", "study.png"), ("heatmap", "heatmap.png"))}
    write_json(paths["json"], study)
    command = study.get("command", "")
    paths["md"].write_text(f"# KV cache saved vs accuracy\n\nOn {study['subject']}. Reproduce with `{command}`.\n\n"
                           + markdown_table(study) + "\n")
    plot_study(study, paths["png"])
    js = torch.tensor(study["divergence"])
    swept = [run["plan"] for run in study["runs"]
             if run["settings"]["kind"] == "lazy" and run["settings"]["lazy_ratio"] == HEATMAP_RATIO]
    # the plan the sweep ran at that ratio (the walk's own, or one chosen by its effect)
    plan = LayerPlan(swept[0]["anchors"], swept[0]["depth"], swept[0]["scope"]) if swept else \
        plan_for_ratio(js, HEATMAP_RATIO)[0]
    plot_divergence(js, plan, paths["heatmap"])
    return paths
