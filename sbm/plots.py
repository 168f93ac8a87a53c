"""Pictures of samples: a scatter for 2-D data, an image grid for square images."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402


def plot_samples(samples: Tensor, path: str | Path, *, reference: Tensor | None = None, title: str = "") -> None:
    """Write a PNG of `samples` (N, D): scatter (next to `reference`) when D = 2,
    a grid of √D×√D images when D is a square (values in [-1, 1]), else the first two dims."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = samples.detach().float().flatten(1).cpu()
    side = math.isqrt(x.shape[1])
    if x.shape[1] != 2 and side * side == x.shape[1] and side > 2:
        n = min(64, len(x))
        cols = int(math.ceil(math.sqrt(n)))
        fig, axes = plt.subplots(cols, cols, figsize=(cols * 0.8, cols * 0.8))
        for ax, img in zip(axes.flat, x[:n]):
            ax.imshow(img.reshape(side, side).clamp(-1, 1), cmap="gray_r", vmin=-1, vmax=1)
        for ax in axes.flat:
            ax.axis("off")
    else:
        fig, axes = plt.subplots(1, 2 if reference is not None else 1, figsize=(10 if reference is not None else 5, 5),
                                 sharex=True, sharey=True, squeeze=False)
        panels = [(x, "samples")] + ([(reference.flatten(1).cpu(), "test data")] if reference is not None else [])
        for ax, (pts, name) in zip(axes[0], panels):
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4)
            ax.set_title(name)
            ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
