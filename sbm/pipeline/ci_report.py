"""The CI report: reports/ci.md and its pictures under reports/ci/, for a few DVC experiments.

It holds, for the experiments named (CI's queued sweep):

- the experiment table: `dvc exp show --md` with the columns that matter (`KEEP`), restricted to
  those experiments and their baseline commit;
- `dvc metrics diff BASE --md`: the committed metrics of the workspace against BASE (the previous
  commit in CI);
- per training stage, its loss and quality curves (dvclive's TSVs under
  reports/live/<stage>/plots/metrics/) with every experiment overlaid, one panel per metric,
  drawn with matplotlib (Agg: offline, no browser, no CDN);
- the sample grids of every experiment side by side: the last monitor picture of train_score and
  train_text (reports/live/<stage>/plots/images/samples/<step>.png), reports/samples.png and
  reports/prompt_samples.png.

Every experiment's files are read from its git commit (`git show REV:PATH`): the reports are DVC
outputs with `cache: false`, kept in git, so no DVC remote and no `dvc exp apply` is needed, and the
workspace is not touched. A file an experiment lacks is named in the report, never an error.
"""

from __future__ import annotations

import io as _io
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sbm.pipeline.experiments import finished  # noqa: E402

#: the training stages whose dvclive curves are drawn (a stage without TSVs is named as missing)
TRAINING_STAGES = ("train_score", "train_text", "train_classifier", "train_vae")
#: where a training stage's dvclive TSVs live (loss.tsv, lr.tsv, quality/<metric>.tsv)
METRICS_DIR = "reports/live/{stage}/plots/metrics"
#: where a training stage's monitor pictures live (samples/<step>.png, one per checkpoint)
IMAGES_DIR = "reports/live/{stage}/plots/images/samples"
#: TSVs not drawn (the learning-rate schedule is the same for every experiment)
SKIPPED_CURVES = ("lr",)
#: the sample pictures shown side by side: (file name under reports/ci/<experiment>/, row title, path
#: in the experiment's commit); "{last}" is the highest <step> of a stage's monitor pictures
SAMPLE_PICTURES = (
    ("train_score_last.png", "train_score monitor, last checkpoint",
     IMAGES_DIR.format(stage="train_score") + "/{last}.png"),
    ("samples.png", "stage sample: reports/samples.png", "reports/samples.png"),
    ("train_text_last.png", "train_text monitor, last checkpoint",
     IMAGES_DIR.format(stage="train_text") + "/{last}.png"),
    ("prompt_samples.png", "stage sample, text prompts: reports/prompt_samples.png", "reports/prompt_samples.png"),
)
#: the columns of `dvc exp show` kept in the table (regexes on its column names; a name DVC finds in
#: two files carries the file as a prefix, e.g. reports/metrics.json:fid, so the prefix is optional)
KEEP = (r"Experiment", r"Created", r"State", r"(params\.yaml:)?loss", r"text\.encoder", r"train\.steps",
        r"(reports/metrics\.json:)?(fid|fid_ratio|kid|precision|recall|bpd)",
        r"reports/train_score\.json:(final_loss|train_seconds)", r"cfg_unseen_acc",
        r"student_over_teacher_fid_\d+")


def _run(args: list[str], repo: str | Path | None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=repo, capture_output=True, text=True)


@dataclass(frozen=True)
class Source:
    """One experiment's files: those of git commit `rev` of `repo`, or (rev None) the files under
    directory `repo` itself (the workspace; the tests' synthetic experiments)."""

    rev: str | None = None
    repo: str | Path | None = None

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None if it does not exist there."""
        if self.rev is None:
            file = Path(self.repo or ".") / path
            return file.read_bytes() if file.is_file() else None
        out = subprocess.run(["git", "show", f"{self.rev}:{path}"], cwd=self.repo, capture_output=True)
        return out.stdout if out.returncode == 0 else None

    def list(self, folder: str) -> list[str]:
        """Paths of the files under `folder` (recursively), sorted."""
        if self.rev is None:
            root = Path(self.repo or ".")
            return sorted(str(p.relative_to(root)) for p in (root / folder).rglob("*") if p.is_file())
        out = _run(["git", "ls-tree", "-r", "--name-only", self.rev, "--", folder], self.repo)
        return sorted(out.stdout.splitlines()) if out.returncode == 0 else []


def experiment_sources(names: list[str] | None = None, repo: str | Path | None = None
                       ) -> tuple[dict[str, Source], list[str]]:
    """The experiments of the current baseline (`dvc exp show --json`) by name -> their commit, in the
    order of `names` (all of them when None); and the names asked for but not found or not finished
    (queued, running or failed: `finished`)."""
    out = _run(["dvc", "exp", "show", "--json"], repo)
    if out.returncode != 0:
        raise RuntimeError(f"dvc exp show --json failed: {out.stderr.strip()}")
    found: dict[str, Source] = {}
    for base in json.loads(out.stdout):
        for group in base.get("experiments") or []:
            if not finished(group):
                continue
            for rev in group.get("revs") or []:
                name = rev.get("name") or group.get("name") or rev["rev"][:7]
                if rev.get("data") and not rev.get("error") and name not in found:
                    found[name] = Source(rev["rev"], repo)
    if names is None:
        return found, []
    return {n: found[n] for n in names if n in found}, [n for n in names if n not in found]


def experiment_table(names: list[str], repo: str | Path | None = None) -> str:
    """`dvc exp show --md` with the `KEEP` columns, only the rows of `names` and their baseline."""
    keep = "^(" + "|".join(KEEP) + ")$"
    out = _run(["dvc", "exp", "show", "--md", "--no-pager", "--hide-workspace", "--hide-queued",
                "--drop", ".*", "--keep", keep], repo)
    if out.returncode != 0:
        return f"`dvc exp show` failed: {out.stderr.strip()}"
    return filter_rows(out.stdout, names)


def filter_rows(markdown: str, names: list[str]) -> str:
    """The rows of a `dvc exp show --md` table that are a baseline commit (no tree prefix) or one of
    `names` (shown as `├── 1a2b3c4 [name]`); header and separator kept."""
    lines = [line for line in markdown.splitlines() if line.strip()]
    wanted = {f"[{n}]" for n in names}
    kept = lines[:2]
    for line in lines[2:]:
        cell = line.split("|")[1].strip() if line.count("|") > 1 else ""
        if not cell.startswith(("├", "└", "│")) or any(w in cell for w in wanted):
            kept.append(line)
    return "\n".join(kept)


def metrics_diff(base: str | None, repo: str | Path | None = None) -> str:
    """`dvc metrics diff BASE --md` (the workspace against BASE), or why there is none."""
    if not base or _run(["git", "rev-parse", "-q", "--verify", f"{base}^{{commit}}"], repo).returncode != 0:
        return f"No commit {base!r} to compare with (the first commit?)."
    out = _run(["dvc", "metrics", "diff", base, "--md"], repo)
    if out.returncode != 0:
        return f"`dvc metrics diff {base}` failed: {out.stderr.strip()}"
    table = out.stdout.strip()
    return table if len(table.splitlines()) > 2 else f"No metric differs from {base}."  # > header + separator


def read_curves(source: Source, stage: str) -> dict[str, pd.DataFrame]:
    """A training stage's dvclive curves in one experiment: metric name (the TSV's path under the
    metrics folder, without .tsv: "loss", "quality/fid") -> its table (columns step and the value)."""
    folder = METRICS_DIR.format(stage=stage)
    curves = {}
    for path in source.list(folder):
        name = path[len(folder) + 1:].removesuffix(".tsv")
        if not path.endswith(".tsv") or name in SKIPPED_CURVES:
            continue
        data = source.read(path)
        table = pd.read_csv(_io.BytesIO(data), sep="\t") if data else None
        if table is not None and "step" in table.columns and len(table.columns) > 1 and len(table):
            curves[name] = table
    return curves


def plot_stage(stage: str, curves: dict[str, dict[str, pd.DataFrame]], png: Path) -> bool:
    """One PNG for a training stage: a panel per metric (loss first), every experiment a line in it.
    `curves`: experiment -> metric -> table. False (no file) if no experiment has a curve."""
    metrics = sorted({m for per_exp in curves.values() for m in per_exp}, key=lambda m: (m != "loss", m))
    if not metrics:
        return False
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for exp, per_exp in curves.items():
            if metric in per_exp:
                table = per_exp[metric]
                value = [c for c in table.columns if c != "step"][0]
                ax.plot(table["step"], table[value], marker="." if len(table) < 20 else None, label=exp)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(stage, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return True


def picture_path(source: Source, pattern: str) -> str:
    """The path of a `SAMPLE_PICTURES` entry in one experiment: "{last}" becomes the highest step of
    the pictures in that folder (left as "<step>" when there is none)."""
    if "{last}" not in pattern:
        return pattern
    folder = pattern.rsplit("/", 1)[0]
    steps = [p.rsplit("/", 1)[-1][:-4] for p in source.list(folder) if p.endswith(".png")]
    steps = [s for s in steps if s.isdigit()]
    return pattern.format(last=max(steps, key=int) if steps else "<step>")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_pictures(sources: dict[str, Source], out_dir: Path, link_root: Path) -> tuple[list[str], list[str]]:
    """Copy every experiment's sample pictures under out_dir/<experiment>/ and return the markdown
    table (a row per picture, a column per experiment; links relative to link_root) and the list of
    pictures an experiment lacks."""
    rows, missing = [], []
    header = ["| picture | " + " | ".join(sources) + " |", "|---" * (len(sources) + 1) + "|"]
    for name, title, pattern in SAMPLE_PICTURES:
        cells = []
        for exp, source in sources.items():
            path = picture_path(source, pattern)
            data = source.read(path) if "<step>" not in path else None
            if data is None:
                missing.append(f"{exp}: no {path}")
                cells.append("(missing)")
                continue
            file = out_dir / _safe(exp) / name
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(data)
            step = f" step {int(path.rsplit('/', 1)[-1][:-4])}" if "{last}" in pattern else ""
            cells.append(f"![{exp}{step}]({file.relative_to(link_root).as_posix()}){step}")
        rows.append(f"| {title} | " + " | ".join(cells) + " |")
    return header + rows, missing


def write_ci_report(out: str | Path = "reports/ci.md", names: list[str] | None = None, base: str | None = None,
                    repo: str | Path | None = None, sources: dict[str, Source] | None = None,
                    table: str | None = None, diff: str | None = None) -> str:
    """Write the CI report (markdown at `out`, pictures in the folder `out` without .md) and return it.

    names: the experiments (default: every experiment of the baseline); base: the commit of the
    metrics diff. sources, table, diff: given instead of asking dvc (the tests)."""
    out = Path(out)
    pictures = out.with_suffix("")
    link_root = out.parent
    not_found: list[str] = []
    if sources is None:
        sources, not_found = experiment_sources(names, repo)
    names = list(sources)
    lines = ["# CI report", ""]
    if not_found:
        lines += [f"**Experiments not found or not finished (failed, queued, running): {', '.join(not_found)}**", ""]
    compare = "[compare.md](compare.md)" if (out.parent / "compare.md").is_file() else "`python -m sbm compare`"
    lines += ["## Experiments", "", f"`dvc exp show --md` (the columns that matter; {compare} has every metric):", "",
              table if table is not None else experiment_table(names, repo), ""]
    lines += ["## Metrics against the previous commit", "",
              f"`dvc metrics diff {base}`: the metrics of the workspace (the commit: queued experiments leave it "
              f"as it is) against {base}:" if base else "No base commit given.", "",
              diff if diff is not None else metrics_diff(base, repo), ""]
    lines += ["## Training curves", "", "dvclive's curves of every experiment, one panel per metric "
              "(reports/live/<stage>/plots/metrics/).", ""]
    for stage in TRAINING_STAGES:
        curves = {exp: read_curves(source, stage) for exp, source in sources.items()}
        png = pictures / f"{stage}.png"
        lines += [f"### {stage}", ""]
        if plot_stage(stage, curves, png):
            lines += [f"![{stage} curves]({png.relative_to(link_root).as_posix()})", ""]
        lacking = [exp for exp, c in curves.items() if not c]
        if lacking:
            why = " (score.space = pixel: train_vae trains nothing)" if stage == "train_vae" else ""
            lines += [f"No curves (no {METRICS_DIR.format(stage=stage)}/*.tsv) in: {', '.join(lacking)}{why}.", ""]
    lines += ["## Samples", ""]
    if sources:
        grid, missing = write_pictures(sources, pictures, link_root)
        lines += grid + [""]
        if missing:
            lines += ["Missing pictures: " + "; ".join(missing) + ".", ""]
    else:
        lines += ["No experiments.", ""]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text
