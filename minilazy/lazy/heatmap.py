"""A picture of calibration: layer-to-layer divergence of visual attention, with the chosen anchors."""

from __future__ import annotations

from pathlib import Path

import torch

from minilazy.lazy.plan import LayerPlan


def plot_divergence(js: torch.Tensor, plan: LayerPlan, path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = js.shape[0]
    fig, ax = plt.subplots(figsize=(6 + n / 8, 5 + n / 8))
    image = ax.imshow(js.numpy(), cmap="viridis_r", origin="upper")
    fig.colorbar(image, ax=ax, label="Jensen-Shannon divergence of attention over image keys")
    lazy = plan.lazy_layers
    ax.scatter([plan.anchors[l] for l in lazy], lazy, marker="o", s=60, facecolors="none", edgecolors="red",
               linewidths=1.5, label="lazy layer (row) -> its anchor (column)")
    ax.set_xlabel("candidate anchor layer")
    ax.set_ylabel("layer")
    ax.set_title(title or f"{len(lazy)} of {n} layers lazy (scope {plan.scope}, Q Cache depth {plan.depth})")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
