"""Compare DVC experiments: one table of params and metrics, the best of each marked, and
their training-loss curves side by side — written to reports/compare.md (+ PNG).

Rows come from `dvc exp show --json` (the workspace, the baseline commit and every
experiment derived from it). A metric's direction (lower or higher is better) comes from
`DIRECTIONS`; metrics not listed there are shown but not ranked. Loss curves are read
from each experiment's git commit (dvclive's TSV is kept in git, `cache: false`), so no
DVC remote is needed.
"""

from __future__ import annotations

import io as _io
import json
import math
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sbm.pipeline.outputs.evaluation import SCORE_LEVEL_KEY

LOSS_TSV = "reports/live/train_score/plots/metrics/loss.tsv"

#: metric name (suffix after the metrics file) -> "min" or "max" is better
DIRECTIONS = {
    "swd": "min", "swd_ratio": "min", "mmd": "min", "score_rel_err_mean": "min", "score_rel_err_max": "min",
    "score_mse_mean": "min", "weight_err_max": "min", "weight_tv": "min", "logp_gap": "min",
    "logp_samples": "max", "nll": "min", "nll_gap": "min", "bpd": "min", "fid": "min", "accuracy": "max",
    "final_loss": None, "train_seconds": "min", "wall_time_s": "min", "seconds_per_sample": "min",
    "cfg_unseen_acc": "max", "evaluator_acc": "max", "class_tv": "min", "bpd_bound": "min",
    "kid": "min", "precision": "max", "recall": "max",
}
#: the suffix of a metric's sd over the sampling seeds (guidance.json, text.json, distill_eval.json):
#: shown in the metric's cell as "mean ± sd", not as a column of its own
SD_SUFFIX = "_sd"
#: what every row's metrics are measured on
ONE_SAMPLE_SET = (
    "Each row's metrics.json columns (fid, kid, precision, recall, the distances) come from one sample set: the "
    "`sample` stage's samples, drawn with one sampling seed, so FID differences of a few points can be sampling "
    "noise (reports/samplers.json shows the spread over seeds). The guidance., text. and distill_eval. columns are "
    "means over eval.seeds sampling seeds, shown as mean ± sd.")
#: metric columns left out of the table: data description and bookkeeping
HIDDEN = ("prepare.", "train_score.steps", "train_score.resumed_from", "train_score.n_params", "train_score.loss",
          "train_score.world_size", "distill.steps", "distill.teacher_steps", "distill.distill.", "train_text.steps", "train_text.resumed_from", "train_text.encoder_dim",
          "train_text.scratch_vocabulary",
          "sample.n", "sample.seconds_per_sample", "n_samples", "n_eval", SCORE_LEVEL_KEY.prefix, "mmd_bandwidths")
#: params shown in the table (others are shown only when they differ between rows)
KEY_PARAMS = ("loss", "process.name", "sampler.name", "train.steps", "score.space", "text.encoder")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _row(name: str, rev: str, data: dict) -> dict:
    """Params as dotted names; metrics of reports/metrics.json by name, others as file.key."""
    row = {"name": name, "rev": rev}
    for file, content in (data.get("params") or {}).items():
        row.update({f"param:{k}": v for k, v in _flatten(content.get("data")).items()})
    for file, content in (data.get("metrics") or {}).items():
        stem = Path(file).stem
        prefix = "" if stem == "metrics" else f"{stem}."
        row.update({f"metric:{prefix}{k}": v for k, v in _flatten(content.get("data")).items()})
    return row


def finished(group: dict) -> bool:
    """Whether an experiment of `dvc exp show --json` has finished: run in the workspace (no executor)
    or by the queue with success. A queued, running or failed one (`dvc exp run --queue`) has no
    metrics of its own yet: its data are the workspace's or the stash's."""
    executor = group.get("executor")
    return not executor or executor.get("state") == "success"


def collect(repo: str | None = None) -> pd.DataFrame:
    """One row per baseline commit, workspace and finished experiment (`dvc exp show --json`; queued
    experiments once they have succeeded, like any other)."""
    out = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, check=True, capture_output=True,
                         text=True).stdout
    rows = []
    for base in json.loads(out):
        if base.get("data"):
            name = base.get("name") or (base["rev"] if base["rev"] == "workspace" else base["rev"][:7])
            rows.append(_row(name, base["rev"][:9], base["data"]))
        for group in base.get("experiments") or []:
            if not finished(group):
                continue
            for rev in group.get("revs") or []:
                if rev.get("data"):
                    rows.append(_row(rev.get("name") or group.get("name") or rev["rev"], rev["rev"][:7],
                                     rev["data"]))
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The comparison table (params that matter + scalar metrics) and, per ranked metric,
    the row index of the best value."""
    params = [c for c in df.columns if c.startswith("param:")]
    shown_params = [c for c in params if c[6:] in KEY_PARAMS or df[c].astype(str).nunique(dropna=False) > 1]
    metrics = [c for c in df.columns if c.startswith("metric:") and pd.api.types.is_numeric_dtype(df[c])
               and not c[7:].startswith(HIDDEN)]
    table = df[["name", "rev", *shown_params, *metrics]].copy()
    param_names = [c.split(":", 1)[1] for c in shown_params]
    # a metric named like a param (reports/distill.json's "steps" is distill.steps) keeps a suffix
    metric_names = [n if n not in param_names else f"{n} (metric)" for n in (c.split(":", 1)[1] for c in metrics)]
    table.columns = ["name", "rev", *param_names, *metric_names]
    best = {}
    for col in table.columns:
        direction = DIRECTIONS.get(col.rsplit(".", 1)[-1]) if col in metric_names else None
        values = pd.to_numeric(table[col], errors="coerce")
        if direction and values.notna().sum() > 1 and values.nunique() > 1:
            best[col] = int(values.idxmin() if direction == "min" else values.idxmax())
    return table, best


def to_markdown(table: pd.DataFrame, best: dict[str, int]) -> str:
    """Markdown table with the best value of each ranked metric in bold; a metric with an sd column
    (`SD_SUFFIX`: the sd over the sampling seeds) shows "mean ± sd" in one cell."""
    sds = {c: f"{c}{SD_SUFFIX}" for c in table.columns if f"{c}{SD_SUFFIX}" in table.columns}
    shown = table.drop(columns=list(sds.values())).astype(object)
    for col in shown.columns:
        for i in shown.index:
            v = shown.at[i, col]
            sd = table.at[i, sds[col]] if col in sds else None
            if isinstance(v, float):
                v = f"{v:.4g}" + (f" ± {sd:.2g}" if isinstance(sd, float) and not math.isnan(sd) else "")
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
        rev = row["rev"] if row["rev"] not in ("workspace", "") else None
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
                 "(lower is better for distances, errors and NLL).", "", ONE_SAMPLE_SET, "", to_markdown(table, best),
                 ""]
        if plot_curves(table, png, repo):
            lines += ["## Training loss", "", f"![loss curves]({png.name})", ""]
        text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text
