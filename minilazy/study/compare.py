"""Several studies on the same questions in one table and one plot: a curve per method.

Each `study` run (`python cli.py study`) chooses its lazy plans one way (`--lazy-method`, with or
without the refinements); FastV, VTW and full attention do not depend on that choice. The lazy runs
of every study become one curve, labelled by how its plans were chosen; the baselines are drawn once,
from the first study that has them.
"""

from __future__ import annotations

import json
from pathlib import Path

from minilazy.config import read_json_object
from minilazy.errors import InputError
from minilazy.study.report import KIND_STYLES, save_metric_axes

SAME_SETTINGS = ("model", "n", "seed_offset", "data", "prompt_suffix", "calib", "max_new_tokens", "dtype")
LAZY_KINDS = ("lazy", "lazy-all", "lazy+fastv")  # the kinds whose runs depend on how plans are chosen
METHOD_COLOURS = ("tab:blue", "tab:cyan", "tab:olive", "tab:brown", "tab:pink", "tab:gray")  # not the baselines'


def load_study(path: str | Path) -> dict:
    """A study.json, checked for what the comparison reads."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file (give the study.json a `python cli.py study` run wrote)")
    study = read_json_object(Path(path))
    if not {"settings", "subject", "metrics", "runs"} <= set(study):
        raise InputError(f"{path}: not a study JSON (it needs settings, subject, metrics and runs)")
    metrics = study["metrics"]
    if not (isinstance(metrics, list) and metrics and all(isinstance(m, dict) and {"key", "column", "axis"} <= set(m)
                                                          for m in metrics)):
        raise InputError(f"{path}: its metrics are not a study's (a list of key, column and axis)")
    for i, run in enumerate(study["runs"] if isinstance(study["runs"], list) else [None]):
        fields = {"name", "settings", "kv_saved_percent", "lazy_layers", *(m["key"] for m in metrics)}
        if not (isinstance(run, dict) and fields <= set(run) and isinstance(run["settings"], dict)
                and "kind" in run["settings"]):
            raise InputError(f"{path}: run {i} is not a study's run (it needs {', '.join(sorted(fields))} and a kind)")
    return study


def method_label(study: dict) -> str:
    """How a study chose and ran its lazy plans, e.g. "greedy, refined" or "js, plain"."""
    settings = study["settings"]
    refinements = [name for key, name in (("mass_correction", "mass correction"), ("exact_image_rows", "exact rows"))
                   if settings.get(key)]
    how = {0: "plain", 2: "refined"}.get(len(refinements), " + ".join(refinements))
    return f"{settings.get('lazy_method') or 'js'}, {how}"


def curves(studies: list[dict]) -> list[tuple[str, str, list[dict], int | None]]:
    """`(label, kind, runs sorted by KV saved, study index)`: the lazy runs of each study (its index: one
    colour per way of choosing plans), then each baseline kind once (index None)."""
    subjects = {study["subject"] for study in studies}
    if len(subjects) > 1:
        raise InputError(f"the studies ran on different questions: {'; '.join(sorted(subjects))}")
    differ = [key for key in SAME_SETTINGS if len({str(s["settings"].get(key)) for s in studies}) > 1]
    if differ or len({json.dumps(s["metrics"]) for s in studies}) > 1:
        raise InputError(f"the studies differ in {', '.join(differ) or 'their metrics'}: compare runs of one model "
                         "on one question set")
    out = []
    for index, study in enumerate(studies):
        for kind in LAZY_KINDS:
            runs = [r for r in study["runs"] if r["settings"]["kind"] == kind]
            if runs:
                out.append((f"{KIND_STYLES[kind][2]}, {method_label(study)}", kind, runs, index))
    for kind in KIND_STYLES:
        if kind not in LAZY_KINDS:
            runs = next(([r for r in s["runs"] if r["settings"]["kind"] == kind] for s in studies
                         if any(r["settings"]["kind"] == kind for r in s["runs"])), [])
            if runs:
                out.append((KIND_STYLES[kind][2], kind, runs, None))
    return [(label, kind, sorted(runs, key=lambda r: r["kv_saved_percent"]), index)
            for label, kind, runs, index in out]


def comparison_table(studies: list[dict]) -> str:
    """One row per run of every curve, by KV saved: the curve, the run, its lazy layers and every metric."""
    metrics = studies[0]["metrics"]
    header = ["KV saved", "method", "run", "lazy layers", *(m["column"] for m in metrics)]
    rows = [(run["kv_saved_percent"], label, run) for label, _, runs, _ in curves(studies) for run in runs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for saved, label, run in sorted(rows, key=lambda row: row[0]):
        cells = [f"{saved:.1f}%", label, run["name"], str(run["lazy_layers"]),
                 *(f"{run[m['key']]:.1%}" for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_comparison(studies: list[dict], path: str | Path) -> None:
    """Each metric versus KV cache saved, a curve per method: a colour per study, a marker per kind of run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = studies[0]["metrics"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 5.5), squeeze=False)
    for label, kind, runs, index in curves(studies):
        marker, colour, _ = KIND_STYLES[kind]  # the kind's marker; a study's lazy runs share its colour
        colour = colour if index is None else METHOD_COLOURS[index % len(METHOD_COLOURS)]
        for ax, metric in zip(axes[0], metrics):
            ax.plot([r["kv_saved_percent"] for r in runs], [100 * r[metric["key"]] for r in runs], marker=marker,
                    color=colour, label=label, markersize=7, linestyle="-" if len(runs) > 1 else "none", alpha=0.85)
    save_metric_axes(fig, axes[0], metrics, f"KV cache saved vs accuracy on {studies[0]['subject']}, a curve per "
                     "method", path, legend_size=7)
