"""The typed outputs of the stages: every JSON file a stage writes under reports/, as a frozen
dataclass that the stage builds and writes (`obj.write(path)`) and the report reads
(`Type.read(path)`).

The JSON layouts are the DVC metrics compared across commits and experiments (`dvc metrics
diff`, `dvc exp show`), so the keys, their order and their values are exactly those the stages
wrote before these types existed (one addition: the rows of distill_detail.json, not a DVC
metrics file, say what each run is: kind, solver, full); this module is the one place that
encodes and decodes them.
Keys formatted from values (the classifier-guidance scale in `cg_acc_s2`, the CFG weight in
`cfg_fid_w0p5`, the step count in `student_fid_4`, the noise level in `score_rel_err_l07`,
the noise quarter in `acc_q1`) each come from one `KeyFamily`, which writes them and parses
them back.

Reading is strict: a missing key, a value of the wrong type or a key the type does not know
raises `SchemaError` (a ValueError: a stage reports it in one line) naming the file and the
key. A key is optional only where a stage legitimately leaves it out (e.g. FID without an
evaluator, the accuracy of runs that are not drawn from prompts). Non-finite floats are written
as null (`sbm.io.json_safe`) and read back as NaN, so `T.read(p).write(q)` reproduces p.

A stage that was skipped writes a file that says why; its reader returns `SkippedTraining` /
`SkippedEvaluation` (or None for the empty metrics file of a skipped evaluation) instead of
the type.

| file (reports/) | stage | type |
| --- | --- | --- |
| prepare.json | prepare | `PreparedData` |
| train_evaluator.json | train_evaluator | `EvaluatorTraining` or `SkippedTraining` (no labels) |
| train_vae.json | train_vae | `VaeTraining` or `PixelSpace` |
| train_score.json | train_score | `ScoreTraining` |
| train_classifier.json | train_classifier | `ClassifierTraining` or `SkippedTraining` |
| train_text.json | train_text | `TextTraining` or `SkippedTraining` |
| distill.json | distill | `DistillTraining` |
| sample.json | sample | `SampleSummary` |
| samplers.json | compare_samplers | `SamplerComparison` (rows: `SamplerRun`) |
| metrics.json, eval_detail.json | evaluate | `EvalMetrics`, `EvalDetail` |
| guidance.json, guidance_detail.json | evaluate_guidance | `GuidanceMetrics`, `GuidanceDetail` (rows: `GuidanceRow`) |
| text.json, text_detail.json | evaluate_text | `TextMetrics`, `TextDetail` (rows: `CfgRow`, `UnseenRow`) |
| distill_eval.json, distill_detail.json | evaluate_distill | `DistillMetrics`, `DistillDetail` (rows: `DistillRun`) |

The types of the three conditional evaluations live in `sbm.pipeline.conditional_outputs`;
their flat metrics are a function of their detail: `GuidanceDetail.metrics()`,
`TextDetail.metrics()`, `DistillDetail.metrics()`. How a `Record` maps to JSON (plain keys,
inline records, key families) is `sbm.pipeline.records`'.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from sbm import io
from sbm.pipeline.records import (
    INDEX,
    LEVEL,
    STEPS_OR_FULL,
    STRENGTH,
    KeyFamily,
    Record,
    choice,
    family,
    inline,
    key,
    opt,
)

# --------------------------------------------------------------------------- key families


#: metrics.json: the relative score error at level i of the grid (0 = the noisiest), "score_rel_err_l07"
SCORE_LEVEL_KEY = KeyFamily("score_rel_err_l{}", (LEVEL,))
#: train_classifier.json: the noisy classifier's test accuracy in noise quarter q (1 = least noise), "acc_q1"
QUARTER_KEY = KeyFamily("acc_q{}", (INDEX,))
#: guidance.json: accuracy / FID at classifier-guidance scale s, "cg_acc_s2", "cg_fid_s0p5"
GUIDANCE_KEY = KeyFamily("cg_{}_s{}", (choice("acc", "fid"), STRENGTH))
#: text.json: accuracy / FID at classifier-free guidance weight w, "cfg_acc_w2"
CFG_KEY = KeyFamily("cfg_{}_w{}", (choice("acc", "fid"), STRENGTH))
#: distill_eval.json: FID / accuracy / NFE of a run at n steps (or the teacher at its full steps),
#: "student_fid_4", "teacher_ddim_acc_1", "teacher_fid_full", "teacher_nfe_full"
DISTILL_RUN_KEY = KeyFamily("{}_{}_{}", (choice("teacher", "teacher_ddim", "teacher_heun", "student"),
                                          choice("fid", "acc", "nfe"), STEPS_OR_FULL))
#: distill_eval.json: time per sample of the teacher at full steps over the student's at n steps, "speedup_4"
SPEEDUP_KEY = KeyFamily("speedup_{}", (INDEX,))
#: distill_eval.json: the student's FID at n steps over the teacher's at full steps
FID_RATIO_KEY = KeyFamily("student_over_teacher_fid_{}", (INDEX,))


# --------------------------------------------------------------------------- the codec


# --------------------------------------------------------------------------- skipped stages


@dataclass(frozen=True, kw_only=True)
class SkippedTraining(Record):
    """A training stage with nothing to learn (data without labels): {"trained": false, "skipped": reason}.
    train_evaluator writes it without a reason (its evaluator directory's none.json holds it)."""

    _CONST: ClassVar[dict] = {"trained": False}
    reason: str | None = key("skipped", omit=True)


@dataclass(frozen=True, kw_only=True)
class SkippedEvaluation(Record):
    """The detail file of an evaluation stage that was skipped: {"skipped": reason, "rows": []};
    its metrics file is empty ({}: `write_metrics`)."""

    reason: str = key("skipped")
    rows: tuple[Any, ...] = ()

    def __post_init__(self):
        if self.rows:
            raise ValueError(f"a skipped evaluation has no rows, got {len(self.rows)}")

    @classmethod
    def _matches(cls, d: Mapping) -> bool:
        return "skipped" in d

    def write_metrics(self, path: str | Path) -> None:
        """The metrics file of a skipped evaluation: {}."""
        io.write_json(path, {})


# --------------------------------------------------------------------------- training stages


@dataclass(frozen=True, kw_only=True)
class PreparedData(Record):
    """reports/prepare.json: the prepared data's meta.json without the mixture (stage prepare)."""

    name: str
    shape: tuple[int, ...]
    dim: int
    n_train: int
    n_test: int
    value_range: tuple[float, ...]
    n_levels: int | None
    data_range: tuple[float, ...] | None
    sigma_max: float
    n_classes: int | None
    seed: int

    @classmethod
    def from_meta(cls, meta: Mapping) -> PreparedData:
        """From sbm.pipeline.data.prepare's meta (its "gmm" entry left out: too bulky for a metrics file)."""
        return cls.from_json({k: v for k, v in meta.items() if k != "gmm"}, file="prepare meta")

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3


@dataclass(frozen=True, kw_only=True)
class EvaluatorTraining(Record):
    """reports/train_evaluator.json (stage train_evaluator); data without labels: `SkippedTraining()`."""

    _CONST: ClassVar[dict] = {"trained": True}
    test_accuracy: float
    train_accuracy: float
    n_classes: int
    train_seconds: float
    evaluator: Mapping[str, Any]  # params `evaluator`

    _VARIANTS = (SkippedTraining,)

    @classmethod
    def read(cls, path) -> EvaluatorTraining | SkippedTraining:
        return super().read(path)


@dataclass(frozen=True, kw_only=True)
class PixelSpace(Record):
    """reports/train_vae.json of a pixel-space model: no autoencoder."""

    _CONST: ClassVar[dict] = {"space": "pixel"}


@dataclass(frozen=True, kw_only=True)
class VaeTraining(Record):
    """reports/train_vae.json of a latent model (stage train_vae); pixel space: `PixelSpace()`."""

    _CONST: ClassVar[dict] = {"space": "latent"}
    recon_mse: float
    recon_psnr: float
    kl: float
    scale: float
    latent_shape: tuple[int, ...]
    final_loss: float
    steps: int
    train_seconds: float
    resumed_from: int | None
    n_params: int
    vae: Mapping[str, Any]  # params `vae`

    _VARIANTS = (PixelSpace,)

    @classmethod
    def read(cls, path) -> VaeTraining | PixelSpace:
        return super().read(path)


@dataclass(frozen=True, kw_only=True)
class ScoreTraining(Record):
    """reports/train_score.json (stage train_score)."""

    loss: str
    space: str
    final_loss: float
    steps: int
    train_seconds: float
    resumed_from: int | None
    n_params: int
    world_size: int


@dataclass(frozen=True, kw_only=True)
class ClassifierTraining(Record):
    """reports/train_classifier.json (stage train_classifier): the noisy classifier's test accuracy
    in each quarter of the noise range (q1 = least noise; keys acc_q1.., `QUARTER_KEY`)."""

    accuracy_by_quarter: tuple[float, ...] = family(QUARTER_KEY, start=1)
    space: str
    final_loss: float
    steps: int
    train_seconds: float
    classifier: Mapping[str, Any]  # params `classifier`

    _VARIANTS = (SkippedTraining,)

    @classmethod
    def read(cls, path) -> ClassifierTraining | SkippedTraining:
        return super().read(path)


@dataclass(frozen=True, kw_only=True)
class TextTraining(Record):
    """reports/train_text.json (stage train_text)."""

    encoder: str
    loss: str
    space: str
    final_loss: float
    steps: int
    train_seconds: float
    resumed_from: int | None
    n_params: int
    trainable_encoder: bool
    encoder_dim: int
    scratch_vocabulary: int | None

    _VARIANTS = (SkippedTraining,)

    @classmethod
    def read(cls, path) -> TextTraining | SkippedTraining:
        return super().read(path)


@dataclass(frozen=True, kw_only=True)
class DistillRound(Record):
    student_steps: int
    teacher_steps: int
    final_loss: float
    seconds: float
    trained: bool  # False: reloaded from its checkpoint


@dataclass(frozen=True, kw_only=True)
class DistillTraining(Record):
    """reports/distill.json (stage distill): the student and its rounds."""

    method: str
    teacher: str
    guidance: float | None  # text teacher: the CFG weight folded into the student
    steps: int
    teacher_steps: int
    train_seconds: float
    final_loss: float
    distill: Mapping[str, Any]  # params `distill`
    rounds: tuple[DistillRound, ...]

    @property
    def steps_per_round(self):
        return self.distill.get("steps_per_round")


# --------------------------------------------------------------------------- sample, compare_samplers


@dataclass(frozen=True, kw_only=True)
class SampleSummary(Record):
    """reports/sample.json (stage sample; also the metadata of data/samples/samples.safetensors)."""

    sampler: str
    space: str
    n: int
    nfe: int
    wall_time_s: float
    seconds_per_sample: float


@dataclass(frozen=True, kw_only=True)
class FidScore(Record):
    fid: float
    fid_floor: float


@dataclass(frozen=True, kw_only=True)
class DistanceScores(Record):
    swd: float
    swd_floor: float
    mmd: float
    mmd_floor: float


@dataclass(frozen=True, kw_only=True)
class SamplerRun(Record):
    """One row of reports/samplers.json: a sampler at an NFE budget (sbm.eval.sweep.compare_samplers).
    fid: with an evaluator (labelled data); distances: when every sample is finite."""

    sampler: str
    budget: int | None  # None: ode_adaptive, which sets its own NFE
    nfe: int
    steps: int | None
    seconds_per_sample: float
    non_finite: int
    fid: FidScore | None = inline(optional=True)
    distances: DistanceScores | None = inline(optional=True)

    def quality(self, metric: Literal["fid", "swd"]) -> tuple[float | None, float | None]:
        """(value, floor) of `metric` (None where the run has none)."""
        score = self.fid if metric == "fid" else self.distances
        if score is None:
            return None, None
        return (score.fid, score.fid_floor) if metric == "fid" else (score.swd, score.swd_floor)


@dataclass(frozen=True, kw_only=True)
class SamplerComparison(Record):
    """reports/samplers.json (stage compare_samplers): n samples per run; metric: what the plot shows."""

    n: int
    metric: Literal["fid", "swd"]
    rows: tuple[SamplerRun, ...]

    def points(self) -> list[tuple[str, int, float | None, float | None]]:
        """(line, NFE, value, floor) of each run for sbm.pipeline.plots.plot_quality_vs_nfe."""
        return [(r.sampler, r.nfe, *r.quality(self.metric)) for r in self.rows]


# --------------------------------------------------------------------------- evaluate


@dataclass(frozen=True, kw_only=True)
class EvaluatorScores(Record):
    """FID next to its floor, the evaluator's test accuracy and the class TV (sbm.eval.evaluator.evaluator_metrics)."""

    fid: float
    fid_floor: float
    fid_ratio: float | None  # None when the floor is 0
    evaluator_acc: float
    class_tv: float


@dataclass(frozen=True, kw_only=True)
class MixtureScores(Record):
    """The analytic-truth metrics of Gaussian-mixture data (sbm.eval.truth.gmm_metrics)."""

    score_rel_err_mean: float
    score_rel_err_max: float
    score_mse_mean: float
    weight_err_max: float
    weight_tv: float
    logp_samples: float
    logp_test: float
    logp_gap: float
    score_rel_err_levels: tuple[float, ...] = family(SCORE_LEVEL_KEY)


@dataclass(frozen=True, kw_only=True)
class OdeLikelihood(Record):
    """The probability-flow ODE NLL (sbm.eval.likelihood.nll_metrics): nll (nats) or, for quantised
    data, bpd; with the mixture's exact NLL where the density is known."""

    _MARKERS = ("nll", "bpd")
    nll: float | None = opt()
    bpd: float | None = opt()
    nll_nfe: float
    nll_exact: float | None = opt()
    nll_gap: float | None = opt()


@dataclass(frozen=True, kw_only=True)
class LatentBound(Record):
    """A latent model's upper bound on −log p(x) (sbm.eval.likelihood.latent_nll_metrics)."""

    bpd_bound: float
    bpd_bound_iwae: float
    nll_bound: float
    bound_rec: float
    bound_kl: float
    nll_nfe: float


@dataclass(frozen=True, kw_only=True)
class EvalMetrics(Record):
    """reports/metrics.json (stage evaluate): flat scalars for `dvc metrics show` / `dvc exp show`."""

    n_samples: int
    n_eval: int
    swd: float
    swd_floor: float
    swd_ratio: float | None
    mmd: float
    mmd_floor: float
    evaluator: EvaluatorScores | None = inline(optional=True)  # labelled data
    mixture: MixtureScores | None = inline(optional=True)  # Gaussian-mixture data
    likelihood: OdeLikelihood | None = inline(optional=True)  # pixel-space models
    bound: LatentBound | None = inline(optional=True)  # latent models

    def __post_init__(self):
        if (self.likelihood is None) == (self.bound is None):
            raise ValueError("expected the likelihood keys (nll or bpd, nll_nfe) or the latent bound's "
                             "(bpd_bound, ...), exactly one of them")


@dataclass(frozen=True, kw_only=True)
class DataInfo(Record):
    name: str | None
    shape: tuple[int, ...] | None
    n_train: int
    n_test: int


@dataclass(frozen=True, kw_only=True)
class SamplesInfo(Record):
    file: str
    n: int
    sampler: str | None  # from the samples file's metadata
    nfe: int | None
    wall_time_s: float | None


@dataclass(frozen=True, kw_only=True)
class DistanceDetail(Record):
    """sbm.eval.distances.distance_report: SW₂ and MMD² of samples vs test next to the real-data floor."""

    n: int
    swd: float
    swd_floor: float
    swd_ratio: float | None
    mmd: float
    mmd_floor: float
    mmd_bandwidths: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class EvaluatorDetail(Record):
    n_fid: int
    n_test: int
    class_counts: tuple[int, ...]
    train_class_freq: tuple[float, ...]
    scores: EvaluatorScores = inline()


@dataclass(frozen=True, kw_only=True)
class ScoreLevel(Record):
    """The learned score against the exact one at one noise level (sbm.eval.truth.score_error_per_level)."""

    t: float
    alpha: float
    sigma: float
    mse: float
    score_sq: float
    rel_err: float


@dataclass(frozen=True, kw_only=True)
class MixtureWeights(Record):
    true: tuple[float, ...]
    recovered: tuple[float, ...]
    means: tuple[tuple[float, ...], ...]


@dataclass(frozen=True, kw_only=True)
class LogDensity(Record):
    samples: float
    test: float


@dataclass(frozen=True, kw_only=True)
class MixtureDetail(Record):
    _MARKERS = ("score_levels",)
    score_levels: tuple[ScoreLevel, ...]
    weights: MixtureWeights
    logp: LogDensity


@dataclass(frozen=True, kw_only=True)
class LikelihoodDetail(Record):
    """The likelihood settings and results (ODE: `ode`, with `batches`; latent bound: `bound`,
    with `bound_samples`)."""

    divergence: str
    probe: str
    n_probes: int
    rtol: float
    atol: float
    batch_size: int
    n: int
    batches: int | None = opt()  # ODE
    is_bound: bool | None = key("bound", omit=True)  # latent bound: true
    bound_samples: int | None = opt()  # latent bound: K
    dequantized: bool
    bin_width: float | None
    ode: OdeLikelihood | None = inline(optional=True)
    bound: LatentBound | None = inline(optional=True)


@dataclass(frozen=True, kw_only=True)
class EvalDetail(Record):
    """reports/eval_detail.json (stage evaluate): the tables behind metrics.json."""

    data: DataInfo
    samples: SamplesInfo
    distances: DistanceDetail
    evaluator: EvaluatorDetail | None = opt()
    mixture: MixtureDetail | None = inline(optional=True)
    likelihood: LikelihoodDetail


def evaluator_part(flat: Mapping, detail: Mapping) -> tuple[EvaluatorScores, EvaluatorDetail]:
    """The typed (flat, detail) of sbm.eval.evaluator.evaluator_metrics."""
    return (EvaluatorScores.from_json(dict(flat), file="evaluator_metrics"),
            EvaluatorDetail.from_json(detail["evaluator"], file="evaluator_metrics detail"))


def mixture_part(flat: Mapping, detail: Mapping) -> tuple[MixtureScores, MixtureDetail]:
    """The typed (flat, detail) of sbm.eval.truth.gmm_metrics."""
    return (MixtureScores.from_json(dict(flat), file="gmm_metrics"),
            MixtureDetail.from_json(dict(detail), file="gmm_metrics detail"))


def likelihood_part(flat: Mapping, detail: Mapping) -> tuple[OdeLikelihood | LatentBound, LikelihoodDetail]:
    """The typed (flat, detail) of sbm.eval.likelihood.nll_metrics / latent_nll_metrics."""
    cls = LatentBound if LatentBound._present(flat) else OdeLikelihood
    return (cls.from_json(dict(flat), file="likelihood metrics"),
            LikelihoodDetail.from_json(detail["likelihood"], file="likelihood detail"))


# --------------------------------------------------------------------------- conditional evaluations


# --------------------------------------------------------------------------- evaluate_distill


