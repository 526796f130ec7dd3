"""The benchmark's PNG: decode throughput per batch size, KV bytes per sequence, sequences in the KV budget."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_bench(summary: dict, batches: list[int], budget_gb: float, path: Path) -> None:
    names = list(summary)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    width, highest = 0.8 / len(batches), 0.0
    for i, b in enumerate(batches):
        values = [summary[n][f"decode_tokens_per_s_b{b}"] or 0 for n in names]
        axes[0].bar([x + i * width for x in range(len(names))], values, width, label=f"batch {b}")
        highest = max(highest, *values)
    axes[0].set_title("decode tokens/s")
    axes[0].set_ylim(0, 1.2 * highest or 1)  # room above the bars for the legend
    axes[0].legend(loc="upper left", ncol=len(batches))
    axes[1].bar(names, [summary[n]["kv_bytes_per_sequence"] / 2**20 for n in names], color="tab:orange")
    axes[1].set_title("KV cache per sequence (MiB)")
    axes[2].bar(names, [summary[n]["sequences_in_budget"] or 0 for n in names], color="tab:green")
    axes[2].set_title(f"sequences in a {budget_gb:g} GB KV budget")
    for ax in axes:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
