"""Pictures of samples (a scatter for 2-D data, an image grid for images (N, C, H, W)),
class histograms and guidance curves."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from torch import Tensor  # noqa: E402


def _as_images(x: Tensor) -> Tensor | None:
    """(N, C, H, W) with C ∈ {1, 3} as is; flat (N, D) with D a square > 4 as (N, 1, √D, √D); else None."""
    if x.dim() == 4 and x.shape[1] in (1, 3):
        return x
    flat = x.flatten(1)
    side = math.isqrt(flat.shape[1])
    if flat.shape[1] != 2 and side * side == flat.shape[1] and side > 2:
        return flat.reshape(len(x), 1, side, side)
    return None


def _show(ax, img: Tensor) -> None:
    """One (C, H, W) image in [-1, 1]: grey (dark strokes on white, like the digits) or RGB."""
    img = img.float().clamp(-1, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray_r", vmin=-1, vmax=1)
    else:
        ax.imshow(((img.permute(1, 2, 0) + 1) / 2).numpy())
    ax.axis("off")


def image_grid(rows: list[Tensor], path: str | Path, *, title: str = "", row_titles: list[str] | None = None) -> None:
    """A PNG with one row of images per entry of `rows` (each (n, C, H, W) in [-1, 1])."""
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.8, len(rows) * 0.9), squeeze=False)
    for i, r in enumerate(rows):
        for j in range(n):
            if j < len(r):
                _show(axes[i, j], r[j].cpu())
            else:
                axes[i, j].axis("off")
        if row_titles:
            axes[i, 0].set_title(row_titles[i], fontsize=7, loc="left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_samples(samples: Tensor, path: str | Path, *, reference: Tensor | None = None, title: str = "") -> None:
    """Write a PNG of `samples`: a grid of up to 64 images for images (N, C, H, W) (or flat
    square images (N, D)), values in [-1, 1]; a scatter (next to `reference`) for 2-D points;
    else a scatter of the first two dimensions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = samples.detach().float().cpu()
    imgs = _as_images(x)
    if imgs is not None:
        n = min(64, len(imgs))
        cols = int(math.ceil(math.sqrt(n)))
        fig, axes = plt.subplots(cols, cols, figsize=(cols * 0.8, cols * 0.8), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, img in zip(axes.flat, imgs[:n]):
            _show(ax, img)
    else:
        x = x.flatten(1)
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


def samples_picture(samples: Tensor, *, pixels: int = 32):
    """One picture of `samples` for a training monitor (dvclive `log_image`), cheap enough for every
    checkpoint: images (N, C, H, W) (or flat square (N, D)) in [-1, 1] tiled ⌈√N⌉ to a row with a
    one-pixel border, each image enlarged to about `pixels` wide (grey drawn dark on white, like
    `plot_samples`) -> an (H', W', 3) uint8 array; 2-D points -> a scatter (a matplotlib figure);
    anything else -> None (no picture)."""
    x = samples.detach().float().cpu()
    imgs = _as_images(x)
    if imgs is None:
        if x.flatten(1).shape[1] != 2:
            return None
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_aspect("equal")
        fig.tight_layout()
        return fig
    n, c, h, w = imgs.shape
    scale = max(1, pixels // max(h, w))
    v = (imgs.clamp(-1, 1) + 1) / 2  # [0, 1]
    v = (1 - v).expand(n, 3, h, w) if c == 1 else v  # grey: dark strokes on white
    v = v.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    hs, ws = h * scale + 1, w * scale + 1
    grid = torch.full((3, rows * hs + 1, cols * ws + 1), 0.5)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[:, 1 + r * hs : (r + 1) * hs, 1 + k * ws : (k + 1) * ws] = v[i]
    return (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def plot_class_histogram(counts: list[int], path: str | Path, *, reference: list[float] | None = None,
                         title: str = "") -> None:
    """Bar chart of how many samples the evaluator puts in each class, with the expected
    count under `reference` class frequencies (e.g. the training split's) as a dashed line."""
    fig, ax = plt.subplots(figsize=(5, 3))
    k = torch.arange(len(counts))
    ax.bar(k.numpy(), counts, color="tab:blue", label="samples")
    if reference is not None:
        total = sum(counts)
        ax.step(k.numpy(), [total * r for r in reference], where="mid", color="k", ls="--", lw=1,
                label="expected (train frequencies)")
        ax.legend(fontsize=7)
    ax.set_xticks(k.numpy())
    ax.set_xlabel("class predicted by the evaluator")
    ax.set_ylabel("samples")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def placeholder(path: str | Path, text: str) -> None:
    """A small PNG that only says `text` (a declared picture whose content does not apply)."""
    fig, ax = plt.subplots(figsize=(4, 1.2))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    ax.axis("off")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_guidance(rows, png: str | Path) -> None:
    """Evaluator accuracy on the conditional samples and their FID against the guidance
    strength (classifier scale s or CFG weight w), one line per method: the means over the
    sampling seeds with ±sd error bars (none for one seed). rows: the typed rows of
    sbm.pipeline.outputs (GuidanceRow, CfgRow): method, scale, accuracy and fid (mean, sd), fid_floor."""
    fig, (ax_acc, ax_fid) = plt.subplots(1, 2, figsize=(9, 3.5))
    for method in dict.fromkeys(r.method for r in rows):
        pts = sorted(((r.scale, r.accuracy, r.fid) for r in rows if r.method == method), key=lambda p: p[0])
        scales = [p[0] for p in pts]
        for ax, k in ((ax_acc, 1), (ax_fid, 2)):
            ax.errorbar(scales, [p[k].mean for p in pts], yerr=_yerr([p[k].sd for p in pts]), marker="o", capsize=3,
                        label=method)
    floors = [r.fid_floor for r in rows if r.fid_floor is not None]
    if floors:
        ax_fid.axhline(floors[0], color="k", ls="--", lw=1, label="FID(train, test)")
    ax_acc.axhline(0.1, color="grey", ls=":", lw=1, label="chance (10 classes)")
    ax_acc.set(xlabel="guidance strength", ylabel="evaluator accuracy on the samples", ylim=(0, 1.02))
    ax_fid.set(xlabel="guidance strength", ylabel="FID to test")
    for ax in (ax_acc, ax_fid):
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _yerr(sds: list[float | None]) -> list[float] | None:
    """Error bar half-lengths: the sds (0 where a value has none); None when no value has one (one seed)."""
    return None if all(sd is None for sd in sds) else [0.0 if sd is None else sd for sd in sds]


def _log_tick(value: float, _pos=None) -> str:
    """A log-axis tick label: the plain number at 1, 2 and 5 × 10^k, nothing elsewhere."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if round(mantissa, 6) in (1.0, 2.0, 5.0) else ""


def plot_quality_vs_nfe(points: list[tuple[str, int, float | None, float | None, float | None]], png: str | Path,
                        metric: str = "swd") -> None:
    """Quality (lower is better) against NFE, one line per sampler, the real-data floor dashed.
    points: (line, NFE, mean over the seeds or None, its sd or None (one seed), floor or None) per
    run (`SamplerComparison.points()`, `DistillDetail.points()`), drawn as the mean with ±sd error
    bars; metric: what the value is (fid, swd), for the axis label."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(p[0] for p in points):
        pts = sorted((nfe, v, sd) for line, nfe, v, sd, _ in points if line == name and v is not None)
        if pts:
            nfes, values, sds = zip(*pts)
            ax.errorbar(nfes, values, yerr=_yerr(list(sds)), marker="o", capsize=3, label=name)
    floors = [floor for *_, floor in points if floor is not None]
    if floors:
        ax.axhline(sum(floors) / len(floors), color="k", ls="--", lw=1, label="real-data floor")
    if not points:
        ax.text(0.5, 0.5, "no sampler runs (eval.compare_samplers is empty)", ha="center", transform=ax.transAxes)
    else:
        ax.set_xscale("log")
        values = [v for _, _, v, _, _ in points if v is not None]
        if values and min(values) > 0:
            ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers at 1, 2, 5 × 10^k instead of "2×10^0"
            if axis.get_scale() == "log":
                axis.set_major_formatter(FuncFormatter(_log_tick))
                axis.set_minor_formatter(FuncFormatter(_log_tick))
        ax.legend(fontsize=8)
    ax.set_xlabel("NFE (network evaluations)")
    label = {"fid": "FID", "swd": "sliced Wasserstein"}.get(metric, metric)
    ax.set_ylabel(f"{label} to test data (mean ± sd)")
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
