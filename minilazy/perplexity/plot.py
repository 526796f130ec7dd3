"""The perplexity study as a picture: perplexity against the KV cache saved, one line per method."""

from __future__ import annotations

from pathlib import Path

from minilazy.study.report import KIND_STYLES

SCOPE_KINDS = {"visual": "lazy", "all": "lazy-all"}  # a lazy plan's scope -> its kind in the study's styles


def curves(result: dict) -> dict[str, list[tuple[float, float]]]:
    """`(KV saved %, perplexity)` points per kind of run (the study's kinds: a lazy plan's by its scope)."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for p in result["plans"]:
        lines.setdefault(SCOPE_KINDS[p["scope"]], []).append((100 * p["kv_saved"], p["perplexity"]))
    for b in result.get("baselines", []):
        lines.setdefault(b["kind"], []).append((100 * b["kv_saved"], b["perplexity"]))
    return {name: sorted(points) for name, points in lines.items()}


def plot_perplexity(result: dict, path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    full = result["full"]["perplexity"]
    ax.axhline(full, color="black", linestyle="--", linewidth=1, label=f"full attention ({full:.2f})")
    values = [full]
    for kind, points in curves(result).items():
        x, y = zip(*points)
        values += y
        marker, colour, label = KIND_STYLES[kind]
        ax.plot(x, y, marker=marker, color=colour, label=label)
    if max(values) > 10 * min(values):  # a collapse would flatten every other point on a linear axis
        ax.set_yscale("log")
    ax.set_xlabel("KV cache saved (%)")
    ax.set_ylabel(f"perplexity of the last {result['tail'] - 1} tokens")
    ax.set_title(title or f"{result['evaluation_windows']} windows of {result['window']} tokens, "
                 f"span of {result['span']} keys")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
