"""The markdown report: tables of the stage outputs under reports/, the loss curve, the samples.

`build_report(inputs)` writes `inputs.out` (reports/report.md) from whatever of its inputs
exist, each read as its typed output (sbm.pipeline.outputs: a malformed file stops the report
with the file and the key); a section whose input file is absent is replaced by a one-line
note saying which file and which stage makes it. Everything renders offline: tables with
`pandas.DataFrame.to_markdown` (tabulate), the loss curve with matplotlib's Agg backend
from the dvclive TSV (columns step, loss) to a PNG next to the report.

Sections:
- Headline (image data) — FID next to its floor and their ratio, KID and precision/recall
  next to theirs, the evaluator's test accuracy, the class TV distance, bits/dim or (latent
  models) its upper bound (reports/metrics.json).
- What this FID can see — the degradation ladder: real images blurred, noised, faded, shifted
  and speckled, scored by the same metrics, and whether the bar is met (reports/calibration.json).
- Data — the prepared dataset (reports/prepare.json).
- Evaluator — the classifier whose features the quality metrics read (reports/train_evaluator.json),
  or why there is none (data without class labels).
- Autoencoder — the VAE of a latent model: reconstruction, KL, latent scale and shape
  (reports/train_vae.json), test images above their reconstructions
  (reports/reconstructions.png), the VAE loss curve (dvclive, plotted to
  reports/vae_loss.png); or a line saying the score model lives in pixel space.
- Sample quality — SW₂ and MMD² of samples vs test points next to the floor, the same
  distance from real training points to the same test points (reports/metrics.json);
  the sampler and its cost (reports/sample.json).
- Image quality — FID, KID, precision/recall on the evaluator's features next to their
  floors, the evaluator's accuracy, the class counts of the samples next to the counts the training
  frequencies predict (reports/eval_detail.json), the class histogram
  (reports/class_histogram.png); one sample set (the sample stage's), pointing at the sampler
  comparison for the spread over seeds.
- Likelihood — NLL / bits/dim along the probability-flow ODE, or for a latent model the
  upper bound through the autoencoder (ELBO and importance-weighted), each saying its
  dequantisation; for a ddpm / vp pixel model also the variational bound ± its standard error.
- Gaussian mixture — score error per noise level, recovered vs true mixture weights,
  mean true log-density of samples vs test points (reports/eval_detail.json).
- Sampler comparison — NFE, cost, FID, KID, precision/recall and SW₂/MMD² per (sampler, budget)
  (reports/samplers.json).
- Classifier guidance — the noisy classifier's accuracy per noise quarter
  (reports/train_classifier.json), guided accuracy, FID, KID and precision/recall per scale
  (reports/guidance_detail.json).
- Text conditioning — the text-conditional model (reports/train_text.json), CFG accuracy, FID,
  KID and precision/recall per w next to classifier guidance per s (reports/text_detail.json; the
  combined plot is drawn here to reports/conditional.png), the unseen phrasings, the prompt grid
  (reports/prompt_samples.png).
- Distillation — the student's rounds (reports/distill.json), its FID, KID, precision/recall, NFE
  and time per 1,000 samples next to the teacher's (reports/distill_detail.json, reports/distill.png).

Every score of the four comparison tables (samplers, guidance, text, distillation) is drawn with
eval.seeds sampling seeds and shown as "mean ± sd" (`_pm`; the mean alone for one seed, which
the table's note says), floors once.
- Training — summary (reports/train_score.json) and the loss curve.
- Samples — the picture of the sample stage (reports/samples.png).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sbm.pipeline.outputs.conditional import DistillDetail, GuidanceDetail, TextDetail
from sbm.pipeline.outputs.evaluation import EvalDetail, EvalMetrics, EvaluatorScores, MixtureWeights, ScoreLevel
from sbm.pipeline.outputs.prepared import PreparedData
from sbm.pipeline.outputs.sampling import SamplerComparison, SampleSummary
from sbm.pipeline.outputs.seeds import MeanSd, Quality, QualityFloor
from sbm.pipeline.outputs.skipped import SkippedEvaluation, SkippedTraining
from sbm.pipeline.outputs.training import (
    ClassifierTraining,
    DistillTraining,
    EvaluatorTraining,
    MetricCalibration,
    PixelSpace,
    ScoreTraining,
    TextTraining,
    VaeTraining,
)
from sbm.pipeline.plots import placeholder, plot_guidance

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
    train_evaluator: Path = Path("reports/train_evaluator.json")
    calibration: Path = Path("reports/calibration.json")
    train_vae: Path = Path("reports/train_vae.json")
    reconstructions_png: Path = Path("reports/reconstructions.png")
    class_histogram_png: Path = Path("reports/class_histogram.png")
    vae_loss_tsv: Path = Path("reports/live/train_vae/plots/metrics/loss.tsv")
    vae_loss_png: Path = Path("reports/vae_loss.png")
    train_classifier: Path = Path("reports/train_classifier.json")
    guidance_detail: Path = Path("reports/guidance_detail.json")
    guidance_png: Path = Path("reports/guidance.png")
    train_text: Path = Path("reports/train_text.json")
    text_detail: Path = Path("reports/text_detail.json")
    prompt_samples_png: Path = Path("reports/prompt_samples.png")
    conditional_png: Path = Path("reports/conditional.png")
    distill: Path = Path("reports/distill.json")
    distill_detail: Path = Path("reports/distill_detail.json")
    distill_png: Path = Path("reports/distill.png")

    def __post_init__(self):
        for name in self.__dataclass_fields__:
            setattr(self, name, Path(getattr(self, name)))


def inputs_from_argv(argv: list[str] | None = None, description: str | None = None) -> ReportInputs:
    """`ReportInputs` from command-line options, one --<field> per input and output (underscores
    become dashes), each defaulting to the pipeline's layout."""
    d = ReportInputs()
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in d.__dataclass_fields__:
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default=str(getattr(d, name)))
    return ReportInputs(**vars(ap.parse_args(argv)))


# --------------------------------------------------------------------------- helpers


def _read(cls, path: Path):
    """`cls.read(path)` (sbm.pipeline.outputs), None when the file is absent."""
    return cls.read(path) if Path(path).is_file() else None


def _skip(what: str, path: Path, stage: str) -> str:
    return f"_Skipped {what}: {path} not found (written by the `{stage}` stage)._"


def _skipped(out) -> str | None:
    """The note for a stage output that says its stage was skipped (`SkippedTraining` /
    `SkippedEvaluation` with a reason), else None."""
    return f"_Skipped: {out.reason}._" if isinstance(out, (SkippedTraining, SkippedEvaluation)) and out.reason else None


def _given(v) -> bool:
    """A value to show: not None and not NaN (a non-finite metric is written as null)."""
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _table(df: pd.DataFrame) -> str:
    """A markdown table; a "|" inside a cell is escaped (labels write conditionals as "∣")."""
    esc = lambda v: v.replace("|", "\\|") if isinstance(v, str) else v  # noqa: E731
    return df.rename(columns=esc).map(esc).to_markdown(index=False, floatfmt=FLOATFMT)


def _kv_table(rows: list[tuple[str, object]]) -> str:
    """Two columns (name, value) of every row."""
    return _table(pd.DataFrame([(k, _fmt(v)) for k, v in rows], columns=["", "value"]))


def _labelled_table(rows: list[tuple[str, object]], header: str = "") -> str:
    """Two columns (label, value) of the rows whose value is given (not None or NaN)."""
    data = [(label, _fmt(v)) for label, v in rows if _given(v)]
    return _table(pd.DataFrame(data, columns=[header, "value"]))


def _shape(v) -> str:
    return " × ".join(str(int(n)) for n in v) if isinstance(v, (list, tuple)) else _fmt(v)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, float):
        return f"{v:{FLOATFMT}}"
    if isinstance(v, tuple):  # the schema's lists, shown as JSON lists
        return str(_as_list(v))
    return str(v)


def _as_list(v):
    return [_as_list(x) for x in v] if isinstance(v, tuple) else v


def _pm(v: MeanSd | None) -> str:
    """A score over the sampling seeds as a table cell: "mean ± sd" (sd to 2 significant digits), the
    mean alone for one seed, "–" when there is none."""
    return "–" if v is None or not _given(v.mean) else format(v, FLOATFMT)


def _quality_cells(q: Quality | None) -> dict[str, str]:
    """The FID, KID, precision and recall cells ("mean ± sd") of a run."""
    return {name: _pm(getattr(q, field) if q is not None else None)
            for name, field in (("FID", "fid"), ("KID", "kid"), ("precision", "precision"), ("recall", "recall"))}


def _seeds_note(seeds: tuple[int, ...], what: str = "Each score") -> str:
    """Over how many sampling seeds the cells of a table are: "mean ± sd over k seeds", or one seed."""
    if len(seeds) == 1:
        return f"One sampling seed ({seeds[0]}; eval.seeds = 1): {what.lower()} is a single value, no spread."
    return (f"{what} is mean ± sd over {len(seeds)} sampling seeds ({', '.join(map(str, seeds))}; sd with "
            "n − 1): each run drawn once per seed.")


def _floor_note(floor: QualityFloor | None) -> list[str]:
    """The floors of a table's quality metrics (real training examples: one value, not per seed)."""
    if floor is None:
        return []
    return [f"Floor, as many real training examples against the same test split (what a perfect model scores; "
            f"real data, one value): FID {_fmt(floor.fid)}, KID {_fmt(floor.kid)}, precision "
            f"{_fmt(floor.precision)}, recall {_fmt(floor.recall)}.", ""]


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

NO_EVALUATOR = "No evaluator: the data has no class labels, so no FID."
PIXEL_SPACE = "Score model in pixel space: no autoencoder."
BOUND = ("−log p(x) ≤ E_q[−log p(x|z) − log p(z) + log q(z|x)], log p(z) from the probability-flow ODE "
         "on the scaled latents")


def _no_evaluator(train_evaluator: EvaluatorTraining | SkippedTraining | None) -> bool:
    """train_evaluator.json says the data has no labels (so there is no FID)."""
    return isinstance(train_evaluator, SkippedTraining)


def _is_image(prepare: PreparedData | None, m: EvalMetrics) -> bool:
    """Image data: prepare.json's shape is (C, H, W); without prepare.json, an image metric is present."""
    if prepare is not None:
        return prepare.is_image
    return m.evaluator is not None or m.bound is not None or (m.likelihood is not None and m.likelihood.bpd is not None)


def _curve(tsv: Path, png: Path, out_md: Path, alt: str, title: str, stage: str) -> list[str]:
    """The dvclive loss curve `tsv` plotted to `png` and linked, or a note when there is none
    (then `png` is a placeholder saying so: it is a declared output of the report stage)."""
    if not tsv.is_file():
        placeholder(png, f"no {alt}: {tsv} not found")
        return [_skip(f"the {alt}", tsv, stage), ""]
    try:
        png = plot_loss(tsv, png, title=title)
    except (ValueError, pd.errors.EmptyDataError) as err:
        placeholder(png, f"no {alt}: {err}")
        return [f"_Skipped the {alt}: {err}._", ""]
    return [f"![{alt}]({_rel(png, out_md)})", ""]


def _image(png: Path, out_md: Path, alt: str, what: str, stage: str) -> list[str]:
    if not png.is_file():
        return [_skip(what, png, stage), ""]
    return [f"![{alt}]({_rel(png, out_md)})", ""]


def _bound_k(detail: EvalDetail | None) -> int | None:
    return detail.likelihood.bound_samples if detail is not None else None


UNIFORM_DEQUANT = "dequantised by uniform noise (u ~ U[0, Δ) per coordinate)"


def _dequant_k(detail: EvalDetail | None) -> int | None:
    """K of importance-weighted dequantisation (sbm.eval.likelihood), None where not stated."""
    return detail.likelihood.dequant_samples if detail is not None else None


def _iw_label(detail: EvalDetail | None, latent: bool = False) -> str:
    """How an importance-weighted dequantisation figure is labelled (latent: weighted over z as well)."""
    k = _dequant_k(detail)
    if latent:
        return f"importance-weighted over z and the dequantisation{f', {k} draws of u' if k else ''}"
    return f"importance-weighted dequantisation{f', K = {k}' if k else ''}"


def _dequant_note(detail: EvalDetail | None) -> str:
    """What the detail states about the dequantisation of the ODE / latent bits/dim ('' where it states
    nothing: continuous data, or an older detail)."""
    how = detail.likelihood.dequantization if detail is not None else None
    if how is None:
        return ""
    if how == "uniform":
        return f"Bits/dim of the test data {UNIFORM_DEQUANT}: the uniform (Jensen) dequantisation bound."
    k = _dequant_k(detail)
    return (f"Bits/dim of the test data dequantised by {k or 'several'} uniform draws "
            "u_k ~ U[0, Δ)^D per point: the figures importance-weighted over the dequantisation log-average "
            "p(x + u_k) over the draws (Burda et al. 2016; sbm.core.units eq. 7), the others average the uniform "
            "(Jensen) bound over the same draws (eq. 5) and are never tighter.")


def headline_section(m: EvalMetrics | None, prepare: PreparedData | None, detail: EvalDetail | None,
                     train_evaluator: EvaluatorTraining | SkippedTraining | None) -> list[str]:
    """Image data: one short table of the numbers that matter — FID next to its floor, the
    evaluator's accuracy, the class TV and bits/dim (or its upper bound for a latent model)."""
    if m is None or not _is_image(prepare, m):
        return []
    rows = []
    ev = m.evaluator
    if ev is not None:
        rows += [("FID, samples vs test (evaluator features)", _fmt(ev.fid)),
                 ("FID floor, train vs test (what a perfect model scores)", _fmt(ev.fid_floor)),
                 ("FID / floor (1 = perfect)", _fmt(ev.fid_ratio)),
                 ("KID, samples vs test (floor)", f"{_fmt(ev.kid)} ({_fmt(ev.kid_floor)})"),
                 ("precision: fidelity (floor)", f"{_fmt(ev.precision)} ({_fmt(ev.precision_floor)})"),
                 ("recall: diversity (floor)", f"{_fmt(ev.recall)} ({_fmt(ev.recall_floor)})")]
    acc = ev.evaluator_acc if ev is not None else (
        train_evaluator.test_accuracy if isinstance(train_evaluator, EvaluatorTraining) else None)
    if _given(acc):
        rows.append(("evaluator accuracy on the real test split", _fmt(acc)))
    if ev is not None:
        rows.append(("class TV, samples vs training frequencies (0 = identical)", _fmt(ev.class_tv)))
    bound, ode = m.bound, m.likelihood
    if bound is not None and _given(bound.bpd_bound_iwae):
        k = _bound_k(detail)
        rows.append((f"bits/dim, upper bound (importance-weighted{f', K = {k}' if k else ''})",
                     f"≤ {_fmt(bound.bpd_bound_iwae)}"))
    elif bound is not None and _given(bound.bpd_bound):
        rows.append(("bits/dim, upper bound (ELBO)", f"≤ {_fmt(bound.bpd_bound)}"))
    elif ode is not None and _given(ode.bpd):
        rows.append(("bits/dim on dequantised test data (probability-flow ODE)", _fmt(ode.bpd)))
    if bound is not None and _given(bound.bpd_bound_iw):
        rows.append((f"bits/dim, upper bound ({_iw_label(detail, latent=True)})",
                     f"≤ {_fmt(bound.bpd_bound_iw)}"))
    elif bound is None and ode is not None and _given(ode.bpd_iw):
        rows.append((f"bits/dim on dequantised test data (probability-flow ODE, {_iw_label(detail)})",
                     _fmt(ode.bpd_iw)))
    if m.vlb is not None and _given(m.vlb.vlb_bpd):
        rows.append(("bits/dim, variational bound (discrete decoder, no dequantisation)",
                     f"≤ {_fmt(m.vlb.vlb_bpd)} ± {_fmt(m.vlb.vlb_bpd_se)}"))
    if not rows:
        return []
    out = ["## Headline", "", _table(pd.DataFrame(rows, columns=["", "value"])), ""]
    if (bound is not None or (ode is not None and _given(ode.bpd))) and _dequant_note(detail):
        out += [_dequant_note(detail), ""]
    if ev is None and _no_evaluator(train_evaluator):
        out += [NO_EVALUATOR, ""]
    return out


def calibration_table(cal: MetricCalibration) -> pd.DataFrame:
    """The degradation ladder: each rung's metrics, FID relative to the floor first."""
    return pd.DataFrame([{"real training images": r.label, "FID / floor": r.fid_ratio, "FID": r.fid, "KID": r.kid,
                          "precision": r.precision, "recall": r.recall} for r in cal.rows])


def calibration_section(cal: MetricCalibration | SkippedTraining | None, prepare: PreparedData | None,
                        inp: ReportInputs) -> list[str]:
    """What the quality metrics can see: the degradation ladder (sbm.eval.degrade) and its bar;
    nothing for vector data (no ladder to run)."""
    out = ["## What this FID can see", ""]
    if cal is None:
        if prepare is not None and not prepare.is_image:
            return []
        return out + [_skip("the degradation ladder", inp.calibration, "train_evaluator"), ""]
    if isinstance(cal, SkippedTraining):
        return out + [f"No degradation ladder: {cal.reason or 'the data has no class labels, so no evaluator'}.", ""]
    verdict = ("**The bar is met**" if not cal.bar_failures else
               "**The bar is NOT met**: " + "; ".join(cal.bar_failures) + ". Read every FID below with that in mind")
    return out + [
        f"Real training images (n = {cal.n}, the n every sample set is scored at), degraded on purpose and scored "
        f"against the {cal.n_test} test images by the same metrics ({cal.feature} features). A metric that ranks "
        "models must see these defects: the bar (sbm.eval.degrade.BAR) is FID rising with severity in every family, "
        "blur σ 0.5 and contrast × 0.8 at ≥ 3× the floor, noise σ 0.2 at ≥ 2×. " + verdict + ".", "",
        _table(calibration_table(cal).map(_fmt)), ""]


def data_section(prepare: PreparedData | None, path: Path) -> list[str]:
    out = ["## Data", ""]
    if prepare is None:
        return out + [_skip("the data summary", path, "prepare"), ""]
    p = prepare
    return out + [_kv_table([("name", p.name), ("shape", p.shape), ("n_train", p.n_train), ("n_test", p.n_test),
                             ("n_classes", p.n_classes), ("value_range", p.value_range),
                             ("sigma_max", p.sigma_max)]), ""]


def evaluator_section(te: EvaluatorTraining | SkippedTraining | None, inp: ReportInputs) -> list[str]:
    """The classifier whose features give FID: its accuracy and parameters, or why there is none."""
    out = ["## Evaluator", ""]
    if te is None:
        return out + [_skip("the evaluator summary", inp.train_evaluator, "train_evaluator"), ""]
    if _no_evaluator(te):
        return out + [NO_EVALUATOR, ""]
    rows = [(label, v) for label, v in (
        ("accuracy, test split", te.test_accuracy), ("accuracy, training split", te.train_accuracy),
        ("classes", te.n_classes), ("train_seconds", te.train_seconds)) if _given(v)]
    rows += [(f"evaluator.{k}", v) for k, v in te.evaluator.items()]
    return out + ["A classifier trained on the real training split only (never on samples). FID, KID and "
                  "precision/recall read its features: every layer's pre-activations, standardised on the training "
                  "split (sbm.eval.evaluator, eq. (4)), so they see noise, contrast and blur as well as the class.", "", _table(pd.DataFrame([(k, _fmt(v)) for k, v in rows], columns=["", "value"])),
                  ""]


def _vae_rows(vae: VaeTraining) -> list[tuple[str, object]]:
    return [("reconstruction MSE, test, decode(μ(x))", vae.recon_mse), ("reconstruction PSNR (dB)", vae.recon_psnr),
            ("KL(q(z∣x) ‖ N(0, I)) (nats / test example)", vae.kl), ("latent scale s = 1/std", vae.scale),
            ("latent shape (C × H × W)", _shape(vae.latent_shape)), ("final_loss", vae.final_loss),
            ("steps", vae.steps), ("train_seconds", vae.train_seconds), ("n_params", vae.n_params),
            ("resumed_from", vae.resumed_from)] + _ceiling_rows(vae.ceiling)


def _ceiling_rows(c) -> list[tuple[str, object]]:
    """The latent model's ceiling: FID of the training split's reconstructions against test."""
    if c is None:
        return []
    return [("ceiling: FID of training reconstructions vs test, decode(μ(x))", c.ceiling_fid_mean),
            ("ceiling: FID, decode(z), z ~ q(z∣x)", c.ceiling_fid_sample),
            ("ceiling: FID floor (the training images themselves)", c.ceiling_fid_floor)]


def autoencoder_section(vae: VaeTraining | PixelSpace | None, inp: ReportInputs) -> list[str]:
    """The VAE of a latent model (table, reconstructions, loss curve), or a line saying there is none."""
    out = ["## Autoencoder", ""]
    pixel = isinstance(vae, PixelSpace)
    if vae is None:
        out += [_skip("the autoencoder summary", inp.train_vae, "train_vae"), ""]
    elif pixel:
        out += [PIXEL_SPACE, ""]
    else:
        out += ["A KL-regularised autoencoder trained first; the score model learns the distribution of its latents "
                "scaled by s = 1/std of the training latents, and its samples are decoded. Reconstructions "
                "decode(μ(x)) of test images; KL per test example in nats.", "",
                _labelled_table(_vae_rows(vae)), ""]
    alt = "test data (pixel space)" if pixel else "test images above their reconstructions"
    out += _image(inp.reconstructions_png, inp.out, alt, "the reconstructions picture", "train_vae")
    if not pixel:  # no autoencoder, no curve (and an old one in the live dir is not this run's)
        out += _curve(inp.vae_loss_tsv, inp.vae_loss_png, inp.out, "VAE loss curve", "VAE training loss", "train_vae")
    elif vae is not None:  # the declared picture exists either way
        placeholder(inp.vae_loss_png, "score model in pixel space: no autoencoder, no VAE loss curve")
    return out


def metrics_table(m: EvalMetrics) -> pd.DataFrame:
    """Sample-to-test distance next to the real-to-real floor, one row per distance."""
    rows = [
        ("sliced Wasserstein SW₂", m.swd, m.swd_floor, m.swd_ratio),
        ("MMD² (unbiased, RBF)", m.mmd, m.mmd_floor, None),
    ]
    return pd.DataFrame(rows, columns=["distance to test points", "samples", "real train points (floor)",
                                       "samples / floor"])


def quality_section(m: EvalMetrics | None, sample: SampleSummary | None, inp: ReportInputs) -> list[str]:
    out = ["## Sample quality", ""]
    if m is None:
        out += [_skip("the sample-quality metrics", inp.metrics, "evaluate")]
    else:
        n = m.n_eval
        out += [f"Both distances on n = {n} points per set. The floor is what real training points score "
                "against the same test points at this n: finite-sample noise, which a perfect model matches "
                "(SW₂ ratio ≈ 1, MMD² ≈ floor ≈ 0) only up to that noise — with few points or well-separated "
                "modes the SW₂ floor itself varies by a factor of ~2 between draws.", "",
                _table(metrics_table(m).map(_fmt))]
        if m.memorisation is not None:
            c = m.memorisation
            out += ["", f"Copies of the training data (eq. 3 of sbm.eval.distances): {c.copies:.1%} of the samples "
                    f"equal a training example (test split: {c.copies_floor:.1%}); a sample's median distance to "
                    f"its nearest training example is {c.nn_ratio:.2f}× the test split's (≈ 1: no closer to the "
                    "training data than new data; ≪ 1: copying)."]
    out.append("")
    if sample is None:
        out += [_skip("the sampler summary", inp.sample, "sample"), ""]
    else:
        out += [_kv_table([("sampler", sample.sampler), ("space", sample.space), ("n", sample.n), ("nfe", sample.nfe),
                           ("wall_time_s", sample.wall_time_s), ("seconds_per_sample", sample.seconds_per_sample)]), ""]
    return out


def class_table(counts: list[int], train_freq: list[float]) -> pd.DataFrame:
    """Samples per evaluator class next to the count the training class frequencies predict."""
    total = sum(counts)
    return pd.DataFrame([{"class": k, "samples": int(c), "expected": round(f * total, 1)}
                         for k, (c, f) in enumerate(zip(counts, train_freq))])


def image_quality_section(m: EvalMetrics | None, detail: EvalDetail | None, inp: ReportInputs) -> list[str]:
    """FID against its floor, the evaluator's accuracy, the class histogram of the samples;
    nothing when no evaluator ran."""
    ev = detail.evaluator if detail is not None else None
    scores: EvaluatorScores | None = m.evaluator if m is not None and m.evaluator is not None else (
        ev.scores if ev is not None else None)
    head = ["## Image quality: FID, KID, precision/recall and classes", ""]
    if scores is None:  # no evaluator: the headline and the evaluator section say why
        return []
    n_fid, n_test = (ev.n_fid, ev.n_test) if ev is not None else (None, None)
    out = head + [
        f"FID between {_fmt(n_fid) if n_fid else 'the'} samples and {_fmt(n_test) if n_test else 'the'} test examples "
        "on the evaluator's features. The floor is the same number of real training examples against the same "
        "test examples: what a perfect model scores at this n (FID / floor ≈ 1). One sample set: the `sample` "
        "stage's samples, drawn with one seed, so a single number each; FID at this n moves between sampling seeds — "
        "the sampler comparison below shows that spread (mean ± sd over eval.seeds seeds per run).", "",
        _labelled_table([("FID, samples vs test", scores.fid), ("FID floor, train vs test", scores.fid_floor),
                         ("FID / floor", scores.fid_ratio), ("KID, samples vs test", scores.kid),
                         ("KID floor, train vs test", scores.kid_floor),
                         ("precision (fraction of samples on the data manifold)", scores.precision),
                         ("precision floor", scores.precision_floor),
                         ("recall (fraction of test data on the samples' manifold)", scores.recall),
                         ("recall floor", scores.recall_floor),
                         ("evaluator accuracy, real test split", scores.evaluator_acc),
                         ("class TV, samples vs training frequencies", scores.class_tv)]), ""]
    if ev is not None and ev.class_counts and ev.train_class_freq:
        out += ["The evaluator's class of each sample, next to the count the training class frequencies predict "
                "(class TV = ½ Σ |sample frequency − training frequency|, 0 = identical).", "",
                _table(class_table(ev.class_counts, ev.train_class_freq)), ""]
    out += _image(inp.class_histogram_png, inp.out, "class histogram of the samples", "the class histogram",
                  "evaluate")
    return out


def likelihood_section(m: EvalMetrics | None, detail: EvalDetail | None = None) -> list[str]:
    """Test NLL along the probability-flow ODE (nats/example or bits/dim) and, for the
    mixture, the exact NLL of the same points under the true density; for a latent model,
    the upper bound through the autoencoder."""
    if m is None:
        return []
    if m.bound is not None:
        return latent_likelihood(m, detail)
    ode = m.likelihood
    rows = [(label, v) for label, v in (
        ("model NLL (nats / example)", ode.nll), ("exact NLL under the true density", ode.nll_exact),
        ("gap to the exact NLL", ode.nll_gap), ("model NLL (bits / dim, dequantised)", ode.bpd),
        (f"model NLL (bits / dim, {_iw_label(detail)})", ode.bpd_iw),
        ("NFE per ODE solve", ode.nll_nfe)) if _given(v)]
    df = pd.DataFrame(rows, columns=["test likelihood", "value"])
    text = "log p₀(x) integrated along the probability-flow ODE on test points."
    if ode.bpd is not None and ode.bpd_iw is None:
        text += f" Bits/dim of the test data {UNIFORM_DEQUANT}: an estimate with the exact ODE."
    elif ode.bpd is not None:
        text += (" " + _dequant_note(detail) if _dequant_note(detail) else
                 " Bits/dim of the test data dequantised by K uniform draws per point: the dequantised figure "
                 "averages the uniform (Jensen) bound over the draws, the importance-weighted one log-averages "
                 "p(x + u_k) over them (sbm.core.units eqs. 5, 7).")
        text += (" Both rest on the ODE's log p, itself an estimate; Hutchinson probe noise biases the "
                 "importance-weighted figure low.")
    return ["## Likelihood", "", text, "", _table(df.map(_fmt)), ""] + vlb_rows(m, detail)


def vlb_rows(m: EvalMetrics, detail: EvalDetail | None) -> list[str]:
    """The variational bound of a ddpm / vp model (sbm.core.vlb), ± its Monte Carlo standard error."""
    v = m.vlb
    if v is None:
        return []
    how = detail.likelihood.vlb if detail is not None else None
    rows = [(label, val) for label, val in (
        ("NLL upper bound (nats / example)", f"≤ {_fmt(v.vlb_nll)} ± {_fmt(v.vlb_nll_se)}"),
        ("bits/dim, upper bound (discrete decoder, no dequantisation)",
         f"≤ {_fmt(v.vlb_bpd)} ± {_fmt(v.vlb_bpd_se)}" if _given(v.vlb_bpd) else None),
        ("prior term KL(q(x₁∣x₀) ‖ π) (nats)", _fmt(v.vlb_prior)),
        ("reconstruction term −log p(x₀∣·) (nats)", _fmt(v.vlb_recon)),
        ("diffusion terms (nats)", _fmt(v.vlb_diffusion)),
        ("model evaluations per batch", _fmt(v.vlb_nfe))) if val is not None]
    if how is not None and how.bound == "ddpm":
        what = (f"The DDPM variational bound L_T + Σ L_(t−1) + L_0 (Ho et al. 2020 eq. 5), reverse variance "
                f"{'β̃_t' if how.variance == 'posterior' else 'β_t'}, ")
    else:
        what = ("The continuous-time bound of the VP SDE (Song et al. 2021, Thm 1: prior + reconstruction at "
                "t_min + ½∫ g²‖s_θ − ∇log q(x_t∣x₀)‖² dt − its closed-form terms), ")
    if how is not None:
        what += ("every t (two passes); " if how.t_samples == 0 else f"{how.t_samples} importance-sampled t per "
                 "example; ") + f"{how.n} test points. "
    what += ("A bound on the likelihood of the sampler's stochastic model (not of the ODE's), ± its Monte Carlo "
             "standard error. ")
    if _given(v.vlb_bpd):
        what += ("Its decoder is a Gaussian discretised over the data's levels (Ho et al. §3.3), so its bits/dim "
                 "are of the discrete data, with no dequantisation.")
    return ["### Variational bound", "", what, "", _table(pd.DataFrame(rows, columns=["variational bound", "value"])),
            ""]


def latent_likelihood(m: EvalMetrics, detail: EvalDetail | None) -> list[str]:
    """The latent model's bound: ELBO and importance-weighted, with the reconstruction / KL split."""
    k = _bound_k(detail)
    n = detail.likelihood.n if detail is not None else None
    iwae = f"importance-weighted, K = {k}" if k else "importance-weighted"
    b = m.bound
    rows = [(label, v) for label, v in (
        ("bits/dim, upper bound (ELBO)", b.bpd_bound), (f"bits/dim, upper bound ({iwae})", b.bpd_bound_iwae),
        (f"bits/dim, upper bound ({_iw_label(detail, latent=True)})", b.bpd_bound_iw),
        ("NLL upper bound (nats / example)", b.nll_bound),
        (f"NLL upper bound, {_iw_label(detail, latent=True)} (nats / example)",
         b.nll_bound_iw),
        ("reconstruction term E_q[−log p(x∣z)] (nats)", b.bound_rec),
        ("KL term E_q[log q(z∣x) − log p(z)] (nats)", b.bound_kl), ("NFE per ODE solve", b.nll_nfe)) if _given(v)]
    df = pd.DataFrame(rows, columns=["test likelihood (upper bound)", "value"])
    return ["## Likelihood", "",
            f"An upper bound, not an estimate: {BOUND} (d · log s for the scaling), "
            f"averaged over {f'{n} ' if n else ''}test points{f' with K = {k} latent draws each' if k else ''}. "
            "The importance-weighted bound log-averages the K weights p(x|z)p(z)/q(z|x) and is the tighter "
            "(≤ the ELBO); nll_bound = reconstruction + KL term. The model's true bits/dim is at most these"
            + (" (of the test data dequantised by uniform noise, u ~ U[0, Δ) per coordinate)."
               if detail is not None and detail.likelihood.dequantization == "uniform" else ".")
            + (f" {_dequant_note(detail)} Those weighted over z and the dequantisation log-average the weights of "
               "every pair (u_k, z) together (sbm.eval.likelihood.latent_nll_metrics)."
               if _given(b.bpd_bound_iw) and _dequant_note(detail) else ""), "",
            _table(df.map(_fmt)), ""]


def samplers_section(inp: ReportInputs) -> list[str]:
    """The sampler comparison: NFE, time per sample, FID, KID, precision/recall and the distances to
    test per (sampler, steps), each score mean ± sd over the sampling seeds."""
    data = _read(SamplerComparison, inp.samplers)
    if data is None:
        return ["## Sampler comparison", "", _skip("the sampler comparison", inp.samplers, "compare_samplers"), ""]
    if not data.rows:
        return ["## Sampler comparison", "", "_No samplers listed in eval.compare_samplers._", ""]
    fid = any(r.quality is not None for r in data.rows)
    df = pd.DataFrame([{"sampler": r.sampler, "budget": _fmt(r.budget), "steps": _fmt(r.steps), "NFE": _fmt(r.nfe),
                        "s / sample": _fmt(r.seconds_per_sample),
                        **({**_quality_cells(r.quality),
                            "FID floor": _fmt(r.quality.floor.fid) if r.quality is not None else "–"} if fid else {}),
                        "SW₂": _pm(r.distances.swd) if r.distances else "–",
                        "SW₂ floor": _fmt(r.distances.swd_floor) if r.distances else "–",
                        "MMD²": _pm(r.distances.mmd) if r.distances else "–",
                        "non-finite": _fmt(r.non_finite)} for r in data.rows])
    metric = data.metric
    out = ["## Sampler comparison", "",
           f"Each sampler at each NFE budget (eval.compare_nfe) on the same model, n = {data.n} samples per run and "
           "seed; " + ("FID, KID and precision/recall on the evaluator's features and " if fid else "")
           + "distances to the test split; the floor is real training points against the same test points. "
           + _seeds_note(data.seeds) + " Non-finite: samples over all seeds (a run with any has no scores).", "",
           _table(df), ""]
    out += _floor_note(next((r.quality.floor for r in data.rows if r.quality is not None), None))
    if inp.samplers_png.is_file():
        shown = "FID" if metric == "fid" else "SW₂"
        bars = ", with ±sd error bars" if len(data.seeds) > 1 else ""
        out += [f"The plot shows {shown} against NFE (the mean over the seeds{bars}).", "",
                f"![quality vs NFE]({_rel(inp.samplers_png, inp.out)})", ""]
    return out


def score_table(levels: tuple[ScoreLevel, ...]) -> pd.DataFrame:
    return pd.DataFrame([{"level": i, "t": r.t, "σ": r.sigma, "MSE": r.mse,
                          "E‖∇log p‖²": r.score_sq, "relative": r.rel_err}
                         for i, r in enumerate(levels)])


def weights_table(weights: MixtureWeights) -> pd.DataFrame:
    true, rec = weights.true, weights.recovered
    means = weights.means or [None] * len(true)
    return pd.DataFrame([{"component": k, "mean": "(" + ", ".join(f"{v:.3g}" for v in mu) + ")" if mu else "–",
                          "true weight": t, "recovered": r, "|difference|": abs(r - t)}
                         for k, (mu, t, r) in enumerate(zip(means, true, rec))])


def gmm_section(detail: EvalDetail | None, inp: ReportInputs) -> list[str]:
    if detail is None:
        return ["## Gaussian mixture: analytic truth", "", _skip("the analytic-truth tables", inp.detail, "evaluate"), ""]
    mix = detail.mixture
    if mix is None:
        return []  # not mixture data: nothing analytic to compare with
    lp = mix.logp
    df = pd.DataFrame([("samples", lp.samples), ("test points", lp.test)],
                      columns=["points", "mean true log-density (nats)"])
    return ["## Gaussian mixture: analytic truth", "",
            "### Score error per noise level", "",
            "x ~ p_t drawn exactly; MSE = E‖s_θ(x, t) − ∇log p_t(x)‖², relative = MSE / E‖∇log p_t(x)‖².", "",
            _table(score_table(mix.score_levels)), "",
            "### Mixture weights", "",
            "Recovered: fraction of samples whose most likely component (weights left out) is k.", "",
            _table(weights_table(mix.weights)), "",
            "### True log-density", "", _table(df), ""]


SPACE_TEXT = {"latent": "in latent space: on the VAE's scaled latents",
              "pixel": "in pixel space: on the data itself"}


def training_section(train: ScoreTraining | None, inp: ReportInputs) -> list[str]:
    out = ["## Training", ""]
    if train is None:
        out += [_skip("the training summary", inp.train, "train_score")]
    else:
        if train.space in SPACE_TEXT:
            out += [f"Score model trained {SPACE_TEXT[train.space]}.", ""]
        out += [_kv_table([("loss", train.loss), ("space", train.space), ("final_loss", train.final_loss),
                           ("steps", train.steps), ("train_seconds", train.train_seconds),
                           ("n_params", train.n_params), ("resumed_from", train.resumed_from)])]
    out.append("")
    return out + _curve(inp.loss_tsv, inp.loss_png, inp.out, "training loss", "training loss", "train_score")


def samples_section(sample: SampleSummary | None, inp: ReportInputs) -> list[str]:
    out = ["## Samples", ""]
    if not inp.samples_png.is_file():
        return out + [_skip("the samples picture", inp.samples_png, "sample"), ""]
    space = sample.space if sample is not None else None
    if space == "latent":
        out += ["Drawn in latent space and decoded by the VAE.", ""]
    elif space == "pixel":
        out += ["Drawn in pixel space.", ""]
    return out + [f"![samples]({_rel(inp.samples_png, inp.out)})", ""]


def guidance_section(inp: ReportInputs) -> list[str]:
    """The noise-conditional classifier's accuracy per noise quarter and classifier-guided
    sampling: evaluator accuracy, FID, KID and precision/recall of the class-conditional samples
    at each scale (mean ± sd over the seeds)."""
    out = ["## Classifier guidance", ""]
    tc = _read(ClassifierTraining, inp.train_classifier)
    if tc is None:
        out += [_skip("the noisy classifier's accuracy", inp.train_classifier, "train_classifier"), ""]
    elif _skipped(tc):
        out += [_skipped(tc), ""]
    elif isinstance(tc, ClassifierTraining):
        quarters = [(f"q{i}: t in the {'first second third fourth'.split()[i - 1]} quarter of [t_min, 1]"
                     + (" (least noise)" if i == 1 else " (most noise)" if i == 4 else ""), acc)
                    for i, acc in enumerate(tc.accuracy_by_quarter[:4], start=1)]
        out += ["The noise-conditional classifier p(y ∣ x_t, t), trained in the score model's space on inputs "
                "noised at every level; accuracy on the noised test split:", "",
                _labelled_table(quarters, "noise quarter"), ""]
    gd = _read(GuidanceDetail, inp.guidance_detail)
    if gd is None:
        return out + [_skip("the guided sampling results", inp.guidance_detail, "evaluate_guidance"), ""]
    if isinstance(gd, SkippedEvaluation):
        return out + [_skipped(gd), ""] if not _skipped(tc) else out
    rows = pd.DataFrame([{"method": r.method, "scale": _fmt(r.scale), "accuracy": _pm(r.accuracy),
                          **_quality_cells(r.scores.quality), "FID floor": _fmt(r.fid_floor), "NFE": _fmt(r.nfe),
                          "s / sample": _fmt(r.seconds_per_sample)} for r in gd.rows])
    out += [f"score + s·∇ₓ log p(y ∣ x_t, t) with {gd.n_per_class} samples per class ({gd.sampler}); "
            "accuracy = the fraction the evaluator assigns to the class each sample was drawn for "
            "(s = 0: unguided, about 10%); FID, KID and precision/recall of all conditional samples against the "
            "test split. " + _seeds_note(gd.seeds), "", _table(rows), ""]
    out += _floor_note(gd.rows[0].floor)
    best = max(gd.rows, key=lambda r: r.scale)
    per_class = pd.DataFrame({"class": range(len(best.per_class)), "accuracy": list(best.per_class)})
    seeds = " (mean over the seeds)" if len(gd.seeds) > 1 else ""
    out += [f"Per-class accuracy at s = {best.scale:g}{seeds}:", "", _table(per_class), ""]
    return out + _image(inp.guidance_png, inp.out, "accuracy and FID against guidance strength",
                        "the guidance plot", "evaluate_guidance")


def text_section(inp: ReportInputs) -> list[str]:
    """The text-conditional model and classifier-free guidance: evaluator accuracy, FID, KID and
    precision/recall of the samples drawn from prompts at each w (mean ± sd over the seeds), next
    to classifier guidance at each s (one table, one plot: `inp.conditional_png`, drawn here), the
    unseen phrasings, the prompt grid."""
    out = ["## Text conditioning and classifier-free guidance", ""]
    tt = _read(TextTraining, inp.train_text)
    td = _read(TextDetail, inp.text_detail)
    note = _skipped(tt) or _skipped(td)
    if note:
        placeholder(inp.conditional_png, "no classifier-free guidance results: " + note.strip("_"))
        return out + [note, ""]
    if isinstance(tt, TextTraining):
        out += [f"Text-conditional score model ({tt.n_params:,} trainable parameters, {tt.steps} steps, final "
                f"{tt.loss} loss {_fmt(tt.final_loss)}); text encoder `{tt.encoder}` "
                + ("(trained jointly, vocabulary of " + str(tt.scratch_vocabulary) + " words)"
                   if tt.trainable_encoder else "(frozen)") + f", {tt.encoder_dim}-dimensional tokens.", ""]
    if not isinstance(td, TextDetail):
        placeholder(inp.conditional_png, "no classifier-free guidance results (stage evaluate_text)")
        return out + [_skip("the classifier-free guidance results", inp.text_detail, "evaluate_text"), ""]
    gd = _read(GuidanceDetail, inp.guidance_detail)
    rows = [*(gd.rows if isinstance(gd, GuidanceDetail) else ()), *td.rows]
    names = {"classifier": "classifier guidance (s)", "cfg": "classifier-free guidance (w)"}
    table = pd.DataFrame([{"method": names[r.method], "strength": _fmt(r.scale), "accuracy": _pm(r.accuracy),
                           **_quality_cells(r.scores.quality), "FID floor": _fmt(r.fid_floor), "NFE": _fmt(r.nfe),
                           "s / sample": _fmt(r.seconds_per_sample)} for r in rows])
    seeds = _seeds_note(td.seeds)
    if isinstance(gd, GuidanceDetail) and gd.seeds != td.seeds:
        seeds += " Classifier guidance rows: " + _seeds_note(gd.seeds)
    out += [f"{td.n_per_class} samples per digit ({td.sampler}); accuracy = the fraction the evaluator assigns "
            "to the digit named by the prompt (or class) each sample was drawn for. CFG: ε_u + w(ε_c − ε_u), "
            "w = 0 the unconditional branch, w = 1 the conditional model; its NFE counts sampler calls, each "
            "of which evaluates the network twice (conditional and empty prompt) when w ∉ {0, 1}. " + seeds, "",
            _table(table), ""]
    out += _floor_note(td.rows[0].floor if td.rows else None)
    if td.unseen:
        unseen = pd.DataFrame([{"phrasing (unseen in training)": r.template, "w": _fmt(r.scale),
                                "accuracy": _pm(r.accuracy), **_quality_cells(r.scores.quality)} for r in td.unseen])
        out += ["Prompts phrased unlike any training template (the same seeds):", "", _table(unseen), ""]
    plot_guidance(rows, inp.conditional_png)
    out += [f"![accuracy and FID against guidance strength]({_rel(inp.conditional_png, inp.out)})", ""]
    return out + _image(inp.prompt_samples_png, inp.out, "samples from prompts", "the prompt samples", "sample")


def distill_section(inp: ReportInputs) -> list[str]:
    """The few-step student: its training rounds, and FID / KID / precision / recall (mean ± sd over
    the seeds), NFE and time per 1,000 samples of the student and the teacher (full steps; DDIM and
    Heun at the student's step counts)."""
    out = ["## Distillation: a few-step student", ""]
    dj = _read(DistillTraining, inp.distill)
    if dj is not None:
        rounds = pd.DataFrame([{"student steps": r.student_steps, "teacher steps": r.teacher_steps,
                                "final loss": r.final_loss, "seconds": r.seconds} for r in dj.rounds])
        of = {"text": f"the text-conditional model under CFG w = {_fmt(dj.guidance)} (folded into the student)"}
        out += [f"Method `{dj.method}`: a {dj.steps}-step student of {of.get(dj.teacher, 'the score model')} "
                f"from a {dj.teacher_steps}-step teacher ({dj.steps_per_round} optimisation steps "
                "per round; seconds: training time, also for a round reloaded from its checkpoint).", "",
                _table(rounds), ""]
    dd = _read(DistillDetail, inp.distill_detail)
    if dd is None:
        return out + [_skip("the student's evaluation", inp.distill_detail, "evaluate_distill"), ""]
    if isinstance(dd, SkippedEvaluation):
        return out + [_skipped(dd), ""]
    full = dd.reference
    k = dd.student_steps
    student = dd.find("student", k)
    if student is not None:
        ddim, heun = dd.find("teacher", k, "ddim"), dd.find("teacher", k, "ode_heun")
        out += [f"At {k} steps the student's FID is **{_pm(student.fid)}** (NFE {student.nfe}), against the "
                f"teacher's **{_pm(full.fid)}** at its full {full.steps} steps (NFE {full.nfe}; ratio of the means "
                f"{_fmt(student.fid.mean / full.fid.mean)}) and the teacher's own {k}-step DDIM "
                f"{_pm(ddim.fid) if ddim else '–'} / Heun {_pm(heun.fid) if heun else '–'}; "
                f"floor {_fmt(full.fid_floor)}. Sampling time per 1,000 samples: student "
                f"{_fmt(student.seconds_per_1000)} s, teacher {_fmt(full.seconds_per_1000)} s "
                f"(**{_fmt(full.seconds_per_1000 / student.seconds_per_1000)}× faster**, measured in the same run).",
                ""]
        if student.accuracy is not None:
            out += [f"Samples that show the digit their prompt names (evaluator accuracy): student "
                    f"**{_pm(student.accuracy)}**, teacher {_pm(full.accuracy)} at full steps.", ""]
    prompted = any(r.accuracy is not None for r in dd.rows)
    table = pd.DataFrame([{"model / sampler": r.label, "steps": _fmt(r.steps), "NFE": _fmt(r.nfe),
                           **_quality_cells(r.scores.quality), **({"accuracy": _pm(r.accuracy)} if prompted else {}),
                           "s / 1000 samples": _fmt(r.seconds_per_1000)} for r in dd.rows])
    prompts = (" drawn from prompts (every digit, the training templates in turn; the teacher under CFG, "
               "NFE counting sampler calls)" if dd.teacher == "text" else "")
    out += [f"{dd.n} samples per run and seed{prompts}, the same seeds for every run; FID, KID and precision/recall "
            "against the test split on the evaluator's features. " + _seeds_note(dd.seeds), "",
            _table(table), ""]
    out += _floor_note(full.floor)
    return out + _image(inp.distill_png, inp.out, "FID against NFE", "the distillation plot", "evaluate_distill")


def build_report(inp: ReportInputs) -> str:
    """Write the markdown report to `inp.out` (and the loss curves to `inp.loss_png`,
    `inp.vae_loss_png` when their dvclive curves exist); return its text."""
    m = _read(EvalMetrics, inp.metrics)
    detail = _read(EvalDetail, inp.detail)
    prepare = _read(PreparedData, inp.prepare)
    sample = _read(SampleSummary, inp.sample)
    te = _read(EvaluatorTraining, inp.train_evaluator)
    lines = ["# sbm report", ""]
    lines += headline_section(m, prepare, detail, te)
    lines += calibration_section(_read(MetricCalibration, inp.calibration), prepare, inp)
    lines += data_section(prepare, inp.prepare)
    lines += evaluator_section(te, inp)
    lines += autoencoder_section(_read(VaeTraining, inp.train_vae), inp)
    lines += quality_section(m, sample, inp)
    lines += image_quality_section(m, detail, inp)
    lines += likelihood_section(m, detail)
    lines += gmm_section(detail, inp)
    lines += samplers_section(inp)
    lines += guidance_section(inp)
    lines += text_section(inp)
    lines += distill_section(inp)
    lines += training_section(_read(ScoreTraining, inp.train), inp)
    lines += samples_section(sample, inp)
    text = "\n".join(lines).rstrip() + "\n"
    inp.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = inp.out.with_name(f".{inp.out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, inp.out)
    return text
