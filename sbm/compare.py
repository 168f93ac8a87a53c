"""Compare DVC experiments: one table of params and metrics, the best of each marked, and
their training-loss curves side by side — written to reports/compare.md (+ PNG).

Rows come from `dvc.api.exp_show()` (the workspace, the baseline commit and every
experiment derived from it). A metric's direction (lower or higher is better) comes from
`DIRECTIONS`; metrics not listed there are shown but not ranked. Loss curves are read
from each experiment's git commit (dvclive's TSV is kept in git, `cache: false`), so no
DVC remote is needed.
"""

from __future__ import annotations

import io as _io
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

LOSS_TSV = "reports/live/train_score/plots/metrics/loss.tsv"

#: metric name (suffix after the metrics file) -> "min" or "max" is better
DIRECTIONS = {
    "swd": "min", "swd_ratio": "min", "mmd": "min", "score_rel_err_mean": "min", "score_rel_err_max": "min",
    "score_mse_mean": "min", "weight_err_max": "min", "weight_tv": "min", "logp_gap": "min",
    "logp_samples": "max", "nll": "min", "nll_gap": "min", "bpd": "min", "fid": "min", "accuracy": "max",
    "final_loss": None, "train_seconds": "min", "wall_time_s": "min", "seconds_per_sample": "min",
}
#: params shown in the table (others are shown only when they differ between rows)
KEY_PARAMS = ("loss", "process.name", "sampler.name", "train.steps")


def collect(repo: str | None = None) -> pd.DataFrame:
    """One row per experiment (and the baseline/workspace), columns = params + metrics."""
    import dvc.api

    rows = dvc.api.exp_show(repo=repo)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    keep = [c for c in df.columns if ":" in c or c in ("Experiment", "rev")]
    df = df[keep].copy()
    name = df["Experiment"].where(df["Experiment"].notna() & (df["Experiment"] != ""), df["rev"])
    df.insert(0, "name", name)
    return df.drop(columns=[c for c in ("Experiment",) if c in df.columns])


def _short(col: str) -> str:
    """'reports/metrics.json:swd' -> 'swd'; 'params.yaml:train.steps' -> 'train.steps'."""
    return col.split(":", 1)[1] if ":" in col else col


def summarize(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The comparison table (params that matter + scalar metrics) and, per ranked metric,
    the row index of the best value."""
    params = [c for c in df.columns if c.startswith("params.yaml:")]
    shown_params = [c for c in params if _short(c) in KEY_PARAMS
                    or df[c].astype(str).nunique(dropna=False) > 1]
    metrics = [c for c in df.columns if c.startswith("reports/") and pd.api.types.is_numeric_dtype(df[c])]
    metrics = [c for c in metrics if _short(c) in DIRECTIONS or not _short(c).startswith("score_rel_err_l")]
    table = df[["name", "rev", *shown_params, *metrics]].copy()
    table.columns = ["name", "rev", *(_short(c) for c in shown_params), *(_short(c) for c in metrics)]
    table = table.loc[:, ~table.columns.duplicated()]
    best = {}
    for col in table.columns:
        direction = DIRECTIONS.get(col)
        values = pd.to_numeric(table[col], errors="coerce")
        if direction and values.notna().sum() > 1:
            best[col] = int(values.idxmin() if direction == "min" else values.idxmax())
    return table, best


def to_markdown(table: pd.DataFrame, best: dict[str, int]) -> str:
    """Markdown table with the best value of each ranked metric in bold."""
    shown = table.copy().astype(object)
    for col in shown.columns:
        for i in shown.index:
            v = shown.at[i, col]
            if isinstance(v, float):
                v = f"{v:.4g}"
            shown.at[i, col] = f"**{v}**" if best.get(col) == i else v
    return shown.to_markdown(index=False)


def _loss_curve(rev: str, repo: str | None) -> pd.DataFrame | None:
    try:
        text = subprocess.run(["git", "show", f"{rev}:{LOSS_TSV}"], cwd=repo, check=True,
                              capture_output=True, text=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    return pd.read_csv(_io.StringIO(text), sep="\t")


def plot_curves(table: pd.DataFrame, png: Path, repo: str | None = None) -> bool:
    """Training-loss curves of every row, side by side in one PNG; False if none found."""
    curves = []
    for _, row in table.iterrows():
        rev = row["rev"] if row["rev"] != "workspace" else None
        curve = _loss_curve(rev, repo) if rev else None
        if curve is None and rev is None:
            path = Path(repo or ".") / LOSS_TSV
            curve = pd.read_csv(path, sep="\t") if path.exists() else None
        if curve is not None and {"step", "loss"} <= set(curve.columns):
            label = f"{row['name']} ({row['loss']})" if "loss" in row else str(row["name"])
            curves.append((label, curve))
    if not curves:
        return False
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    for ax, (label, curve) in zip(axes[0], curves):
        ax.plot(curve["step"], curve["loss"])
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("training loss")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True


def write_report(out: str | Path = "reports/compare.md", repo: str | None = None) -> str:
    """Collect, rank and write the comparison; returns the markdown."""
    out = Path(out)
    df = collect(repo)
    if df.empty:
        text = "# Experiment comparison\n\nNo experiments found (run `dvc exp run`).\n"
    else:
        table, best = summarize(df)
        png = out.with_suffix(".png")
        lines = ["# Experiment comparison", "",
                 "One row per experiment (`dvc exp show`); the best value of each ranked metric is bold "
                 "(lower is better for distances, errors and NLL).", "", to_markdown(table, best), ""]
        if plot_curves(table, png, repo):
            lines += ["## Training loss", "", f"![loss curves]({png.name})", ""]
        text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text
