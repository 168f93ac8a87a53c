"""The markdown report: tables of the stage outputs under reports/, the loss curve, the samples.

`build_report(inputs)` writes `inputs.out` (reports/report.md) from whatever of its inputs
exist; a section whose input file is absent is replaced by a one-line note saying which
file and which stage makes it. Everything renders offline: tables with
`pandas.DataFrame.to_markdown` (tabulate), the loss curve with matplotlib's Agg backend
from the dvclive TSV (columns step, loss) to a PNG next to the report.

Sections:
- Data — the prepared dataset (reports/prepare.json).
- Sample quality — SW₂ and MMD² of samples vs test points next to the floor, the same
  distance from real training points to the same test points (reports/metrics.json);
  the sampler and its cost (reports/sample.json).
- Gaussian mixture — score error per noise level, recovered vs true mixture weights,
  mean true log-density of samples vs test points (reports/eval_detail.json).
- Training — summary (reports/train_score.json) and the loss curve.
- Samples — the picture of the sample stage (reports/samples.png).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .io import read_json  # noqa: E402

FLOATFMT = ".4g"


@dataclass
class ReportInputs:
    """Where each input lives and where the outputs go (defaults: the pipeline's layout)."""

    out: Path = Path("reports/report.md")
    loss_png: Path = Path("reports/loss.png")
    metrics: Path = Path("reports/metrics.json")
    detail: Path = Path("reports/eval_detail.json")
    train: Path = Path("reports/train_score.json")
    prepare: Path = Path("reports/prepare.json")
    sample: Path = Path("reports/sample.json")
    loss_tsv: Path = Path("reports/live/train_score/plots/metrics/loss.tsv")
    samples_png: Path = Path("reports/samples.png")
    samplers: Path = Path("reports/samplers.json")
    samplers_png: Path = Path("reports/samplers.png")

    def __post_init__(self):
        for name in self.__dataclass_fields__:
            setattr(self, name, Path(getattr(self, name)))


# --------------------------------------------------------------------------- helpers


def _json_or_none(path: Path) -> dict | None:
    return read_json(path) if Path(path).is_file() else None


def _skip(what: str, path: Path, stage: str) -> str:
    return f"_Skipped {what}: {path} not found (written by the `{stage}` stage)._"


def _table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=FLOATFMT)


def _kv_table(d: dict, keys: list[str]) -> str:
    rows = [(k, _fmt(d[k])) for k in keys if k in d]
    return _table(pd.DataFrame(rows, columns=["", "value"]))


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, float):
        return f"{v:{FLOATFMT}}"
    return str(v)


def _rel(target: Path, out_md: Path) -> str:
    """Path of `target` as seen from the folder of `out_md`, with forward slashes."""
    return Path(os.path.relpath(Path(target).resolve(), Path(out_md).resolve().parent)).as_posix()


# --------------------------------------------------------------------------- loss curve


def read_loss_tsv(path: str | Path) -> pd.DataFrame:
    """The dvclive curve (tab-separated; columns include step and loss) as a DataFrame."""
    df = pd.read_csv(path, sep="\t")
    missing = {"step", "loss"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: no column(s) {', '.join(sorted(missing))}; columns are {', '.join(df.columns)}")
    return df


def plot_loss(tsv: str | Path, png: str | Path, title: str = "training loss") -> Path:
    """Render the loss curve of `tsv` to `png` (log-scale y when every loss is > 0)."""
    df = read_loss_tsv(tsv)
    if df.empty:
        raise ValueError(f"{tsv}: no rows")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(df["step"], df["loss"], lw=1)
    if (df["loss"] > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


# --------------------------------------------------------------------------- sections


def data_section(prepare: dict | None, path: Path) -> list[str]:
    out = ["## Data", ""]
    if prepare is None:
        return out + [_skip("the data summary", path, "prepare"), ""]
    keys = ["name", "shape", "n_train", "n_test", "n_classes", "value_range", "sigma_max"]
    return out + [_kv_table(prepare, keys), ""]


def metrics_table(m: dict) -> pd.DataFrame:
    """Sample-to-test distance next to the real-to-real floor, one row per distance."""
    rows = [
        ("sliced Wasserstein SW₂", m.get("swd"), m.get("swd_floor"), m.get("swd_ratio")),
        ("MMD² (unbiased, RBF)", m.get("mmd"), m.get("mmd_floor"), None),
    ]
    return pd.DataFrame(rows, columns=["distance to test points", "samples", "real train points (floor)",
                                       "samples / floor"])


def quality_section(m: dict | None, sample: dict | None, inp: ReportInputs) -> list[str]:
    out = ["## Sample quality", ""]
    if m is None:
        out += [_skip("the sample-quality metrics", inp.metrics, "evaluate")]
    else:
        n = m.get("n_eval")
        out += [f"Both distances on n = {n} points per set. The floor is what real training points score "
                "against the same test points at this n: finite-sample noise, which a perfect model matches "
                "(SW₂ ratio ≈ 1, MMD² ≈ floor ≈ 0) only up to that noise — with few points or well-separated "
                "modes the SW₂ floor itself varies by a factor of ~2 between draws.", "",
                _table(metrics_table(m).map(_fmt))]
    out.append("")
    if sample is None:
        out += [_skip("the sampler summary", inp.sample, "sample"), ""]
    else:
        out += [_kv_table(sample, ["sampler", "n", "nfe", "wall_time_s", "seconds_per_sample"]), ""]
    return out


def likelihood_section(m: dict | None) -> list[str]:
    """Test NLL along the probability-flow ODE (nats/example or bits/dim) and, for the
    mixture, the exact NLL of the same points under the true density."""
    if m is None or not any(k in m for k in ("nll", "bpd")):
        return []
    rows = [(label, m.get(key)) for key, label in (
        ("nll", "model NLL (nats / example)"), ("nll_exact", "exact NLL under the true density"),
        ("nll_gap", "gap to the exact NLL"), ("bpd", "model NLL (bits / dim, dequantised)"),
        ("nll_nfe", "NFE per ODE solve")) if m.get(key) is not None]
    df = pd.DataFrame(rows, columns=["test likelihood", "value"])
    return ["## Likelihood", "", "log p₀(x) integrated along the probability-flow ODE on test points.", "",
            _table(df.map(_fmt)), ""]


def samplers_section(inp: ReportInputs) -> list[str]:
    """The sampler comparison: NFE, time per sample and distance to test per (sampler, steps)."""
    data = _json_or_none(inp.samplers)
    if data is None:
        return ["## Sampler comparison", "", _skip("the sampler comparison", inp.samplers, "compare_samplers"), ""]
    rows = data.get("rows") or []
    if not rows:
        return ["## Sampler comparison", "", "_No samplers listed in eval.compare_samplers._", ""]
    df = pd.DataFrame(rows)
    cols = [c for c in ("sampler", "budget", "steps", "nfe", "seconds_per_sample", "swd", "swd_floor", "mmd", "non_finite")
            if c in df.columns]
    out = ["## Sampler comparison", "",
           f"Each sampler at each NFE budget (eval.compare_nfe) on the same model and seed, n = {data.get('n')} samples; "
           "distances to the test split, the floor is real training points against the same test points.", "",
           _table(df[cols].map(_fmt)), ""]
    if inp.samplers_png.is_file():
        out += [f"![quality vs NFE]({_rel(inp.samplers_png, inp.out)})", ""]
    return out


def score_table(levels: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"level": i, "t": r["t"], "σ": r["sigma"], "MSE": r["mse"],
                          "E‖∇log p‖²": r["score_sq"], "relative": r["rel_err"]}
                         for i, r in enumerate(levels)])


def weights_table(weights: dict) -> pd.DataFrame:
    true, rec = weights["true"], weights["recovered"]
    means = weights.get("means") or [None] * len(true)
    return pd.DataFrame([{"component": k, "mean": "(" + ", ".join(f"{v:.3g}" for v in mu) + ")" if mu else "–",
                          "true weight": t, "recovered": r, "|difference|": abs(r - t)}
                         for k, (mu, t, r) in enumerate(zip(means, true, rec))])


def gmm_section(detail: dict | None, inp: ReportInputs) -> list[str]:
    if detail is None:
        return ["## Gaussian mixture: analytic truth", "", _skip("the analytic-truth tables", inp.detail, "evaluate"), ""]
    if "score_levels" not in detail:
        return []  # not mixture data: nothing analytic to compare with
    out = ["## Gaussian mixture: analytic truth", "",
           "### Score error per noise level", "",
           "x ~ p_t drawn exactly; MSE = E‖s_θ(x, t) − ∇log p_t(x)‖², relative = MSE / E‖∇log p_t(x)‖².", "",
           _table(score_table(detail["score_levels"])), ""]
    if "weights" in detail:
        out += ["### Mixture weights", "",
                "Recovered: fraction of samples whose most likely component (weights left out) is k.", "",
                _table(weights_table(detail["weights"])), ""]
    if "logp" in detail:
        lp = detail["logp"]
        df = pd.DataFrame([("samples", lp["samples"]), ("test points", lp["test"])],
                          columns=["points", "mean true log-density (nats)"])
        out += ["### True log-density", "", _table(df), ""]
    return out


def training_section(train: dict | None, inp: ReportInputs) -> list[str]:
    out = ["## Training", ""]
    if train is None:
        out += [_skip("the training summary", inp.train, "train_score")]
    else:
        out += [_kv_table(train, ["loss", "final_loss", "steps", "train_seconds", "n_params", "resumed_from"])]
    out.append("")
    if not inp.loss_tsv.is_file():
        out += [_skip("the loss curve", inp.loss_tsv, "train_score"), ""]
    else:
        try:
            png = plot_loss(inp.loss_tsv, inp.loss_png)
        except (ValueError, pd.errors.EmptyDataError) as err:
            out += [f"_Skipped the loss curve: {err}._", ""]
        else:
            out += [f"![training loss]({_rel(png, inp.out)})", ""]
    return out


def samples_section(inp: ReportInputs) -> list[str]:
    out = ["## Samples", ""]
    if not inp.samples_png.is_file():
        return out + [_skip("the samples picture", inp.samples_png, "sample"), ""]
    return out + [f"![samples]({_rel(inp.samples_png, inp.out)})", ""]


def build_report(inp: ReportInputs) -> str:
    """Write the markdown report to `inp.out` (and the loss curve to `inp.loss_png`); return its text."""
    m = _json_or_none(inp.metrics)
    lines = ["# sbm report", ""]
    lines += data_section(_json_or_none(inp.prepare), inp.prepare)
    lines += quality_section(m, _json_or_none(inp.sample), inp)
    lines += likelihood_section(m)
    lines += gmm_section(_json_or_none(inp.detail), inp)
    lines += samplers_section(inp)
    lines += training_section(_json_or_none(inp.train), inp)
    lines += samples_section(inp)
    text = "\n".join(lines).rstrip() + "\n"
    inp.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = inp.out.with_name(f".{inp.out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, inp.out)
    return text
