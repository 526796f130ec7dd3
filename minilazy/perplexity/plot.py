"""The perplexity study as a picture: perplexity against the lazy ratio, one line per scope."""

from __future__ import annotations

from pathlib import Path

SCOPE_LABELS = {"visual": "lazy, scope visual (inherit over span keys)", "all": "lazy, scope all (inherit over every key)"}


def plot_perplexity(result: dict, path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    full = result["full"]["perplexity"]
    ax.axhline(full, color="black", linestyle="--", linewidth=1, label=f"full attention ({full:.2f})")
    values = [full]
    for scope in dict.fromkeys(p["scope"] for p in result["plans"]):
        plans = sorted((p for p in result["plans"] if p["scope"] == scope), key=lambda p: p["ratio"])
        x = [len(p["lazy_layers"]) / result["num_layers"] for p in plans]  # the plan's ratio, not the one asked for
        y = [p["perplexity"] for p in plans]
        values += y
        ax.plot(x, y, marker="o", label=SCOPE_LABELS.get(scope, scope))
    if max(values) > 10 * min(values):  # a collapse would flatten every other point on a linear axis
        ax.set_yscale("log")
    ax.set_xlabel("share of lazy layers")
    ax.set_ylabel(f"perplexity of the last {result['tail']} tokens")
    ax.set_title(title or f"{result['evaluation_windows']} windows of {result['window']} tokens, "
                 f"span of {result['span']} keys")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
