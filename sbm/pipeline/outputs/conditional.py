"""The typed outputs of the conditional evaluations (`sbm.pipeline.outputs` has the table of
every file): classifier guidance (evaluate_guidance), classifier-free guidance
from prompts (evaluate_text) and the distilled students (evaluate_distill). Each flat DVC
metrics file is a function of its detail file (`GuidanceDetail.metrics()`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from statistics import fmean
from typing import Literal

from sbm.pipeline.outputs.seeds import MeanSd, OverSeeds, Quality, QualityFloor, check_seeds
from sbm.pipeline.outputs.skipped import SkippedEvaluation
from sbm.pipeline.records import (
    INDEX,
    STAT,
    STEPS_OR_FULL,
    STRENGTH,
    Context,
    KeyFamily,
    Record,
    choice,
    convert,
    inline,
    key,
    opt,
)

#: guidance.json: accuracy / FID at classifier-guidance scale s, mean over the seeds or its sd,
#: "cg_acc_s2", "cg_fid_s0p5", "cg_fid_s0p5_sd"
GUIDANCE_KEY = KeyFamily("cg_{}_s{}{}", (choice("acc", "fid"), STRENGTH, STAT))


#: text.json: accuracy / FID at classifier-free guidance weight w (mean or sd), "cfg_acc_w2", "cfg_acc_w2_sd"
CFG_KEY = KeyFamily("cfg_{}_w{}{}", (choice("acc", "fid"), STRENGTH, STAT))


#: text.json: the accuracy over the unseen phrasings (mean over the seeds or its sd), "cfg_unseen_acc", "cfg_unseen_acc_sd"
UNSEEN_KEY = KeyFamily("cfg_unseen_acc{}", (STAT,))


#: distill_eval.json: FID / accuracy (mean or sd over the seeds) / NFE of a run at n steps (or the teacher
#: at its full steps), "student_fid_4", "student_fid_4_sd", "teacher_ddim_acc_1", "teacher_fid_full",
#: "teacher_nfe_full"
DISTILL_RUN_KEY = KeyFamily("{}_{}_{}{}", (choice("teacher", "teacher_ddim", "teacher_heun", "student"),
                                            choice("fid", "acc", "nfe"), STEPS_OR_FULL, STAT))


#: distill_eval.json: time per sample of the teacher at full steps over the student's at n steps, "speedup_4"
SPEEDUP_KEY = KeyFamily("speedup_{}", (INDEX,))


#: distill_eval.json: the student's mean FID at n steps over the teacher's at full steps
FID_RATIO_KEY = KeyFamily("student_over_teacher_fid_{}", (INDEX,))


def _stat_keys(fam: KeyFamily, v: MeanSd, *values) -> dict:
    """The flat keys of a score over seeds: fam.key(*values, "mean") -> mean, and "... _sd" -> sd
    unless the table has one seed."""
    return {fam.key(*values, "mean"): v.mean, **({fam.key(*values, "sd"): v.sd} if v.sd is not None else {})}


def _stat_value(found: Mapping[str, float], fam: KeyFamily, values: tuple, ctx: Context) -> MeanSd:
    """The MeanSd of the keys {"mean": x, "sd": y (optional)} read for fam.key(*values, ...)."""
    if "mean" not in found:
        raise ctx.missing(fam.key(*values, "mean"))
    return MeanSd(mean=found["mean"], sd=found.get("sd"))


def _one_seed_count(scores: list[MeanSd], ctx: Context) -> None:
    """The sd keys are all there (several seeds) or none is (one seed)."""
    if len({v.sd is None for v in scores}) > 1:
        raise ctx.fail("some scores have their _sd key and others not (a table has one number of seeds)")


@dataclass(frozen=True, kw_only=True)
class SampleScores(Record):
    """How good one run's samples are over the sampling seeds (sbm.eval.sweep.sample_quality): for a
    run drawn for labels, the evaluator's accuracy on the condition each sample was drawn for (over
    the seeds; per_class: each class's mean over the seeds); FID, KID, precision and recall next to
    their floor; NFE per batch (the most of any seed) and seconds per sample (mean over the seeds)."""

    accuracy: OverSeeds | None = opt()
    per_class: tuple[float, ...] | None = opt()
    quality: Quality = inline()
    nfe: int
    seconds_per_sample: float

    def __post_init__(self):
        if (self.accuracy is None) != (self.per_class is None):
            raise ValueError("accuracy and per_class go together (a run drawn for labels has both)")


class _Scored:
    """The scores of a row, read through; rows of the guidance tables must have an accuracy."""

    scores: SampleScores
    _NEEDS_ACCURACY = True

    def __post_init__(self):
        if self._NEEDS_ACCURACY and self.scores.accuracy is None:
            raise ValueError(f"{type(self).__name__}: missing key 'accuracy' (samples drawn for a condition)")

    @property
    def accuracy(self) -> OverSeeds | None:
        return self.scores.accuracy

    @property
    def per_class(self) -> tuple[float, ...] | None:
        return self.scores.per_class

    @property
    def fid(self) -> OverSeeds:
        return self.scores.quality.fid

    @property
    def kid(self) -> OverSeeds:
        return self.scores.quality.kid

    @property
    def precision(self) -> OverSeeds:
        return self.scores.quality.precision

    @property
    def recall(self) -> OverSeeds:
        return self.scores.quality.recall

    @property
    def floor(self) -> QualityFloor:
        return self.scores.quality.floor

    @property
    def fid_floor(self) -> float:
        return self.scores.quality.floor.fid

    @property
    def nfe(self) -> int:
        return self.scores.nfe

    @property
    def seconds_per_sample(self) -> float:
        return self.scores.seconds_per_sample


@dataclass(frozen=True, kw_only=True)
class GuidanceRow(_Scored, Record):
    """Classifier guidance at one scale s (stage evaluate_guidance)."""

    method: Literal["classifier"] = "classifier"
    scale: float
    scores: SampleScores = inline()


@dataclass(frozen=True, kw_only=True)
class CfgRow(_Scored, Record):
    """Classifier-free guidance at one weight w, prompts of the training templates (stage evaluate_text)."""

    method: Literal["cfg"] = "cfg"
    scale: float
    templates: Literal["training"] = "training"
    scores: SampleScores = inline()
    network_evals_per_call: int


@dataclass(frozen=True, kw_only=True)
class UnseenRow(_Scored, Record):
    """Classifier-free guidance at w = text.weight for prompts of one phrasing unseen in training."""

    method: Literal["cfg"] = "cfg"
    scale: float
    template: str
    scores: SampleScores = inline()


@dataclass(frozen=True, kw_only=True)
class StrengthScore(Record):
    """Accuracy and FID (mean and sd over the seeds) at one guidance strength (a scale s or a weight w)."""

    strength: float
    accuracy: MeanSd
    fid: MeanSd


def _strength_metrics(fam: KeyFamily, floor_key: str, fid_floor: float, scores, extra: dict) -> dict:
    out = {floor_key: fid_floor}
    for s in scores:
        out.update(_stat_keys(fam, s.accuracy, "acc", s.strength))
        out.update(_stat_keys(fam, s.fid, "fid", s.strength))
    return {**out, **extra}


def _strength_scores(fam: KeyFamily, d: Mapping, ctx: Context, known: set[str]) -> tuple[StrengthScore, ...]:
    by: dict[float, dict] = {}
    for k, v in d.items():
        parsed = fam.parse(k)
        if parsed is None:
            if k not in known:
                raise ctx.at(k).fail(f"is not a key of this file (its keys: {', '.join(sorted(known))}, "
                                     f"{fam.key('acc', 1, 'mean')}, {fam.key('fid', 1, 'sd')}, ...)")
            continue
        metric, strength, stat = parsed
        by.setdefault(strength, {}).setdefault(metric, {})[stat] = convert(float, v, ctx.at(k))
    out = []
    for strength, m in by.items():
        acc, fid = (_stat_value(m.get(metric, {}), fam, (metric, strength), ctx) for metric in ("acc", "fid"))
        out.append(StrengthScore(strength=strength, accuracy=acc, fid=fid))
    _one_seed_count([v for s in out for v in (s.accuracy, s.fid)], ctx)
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class GuidanceMetrics(Record):
    """reports/guidance.json (stage evaluate_guidance): cg_fid_floor, then per scale cg_acc_s<s>, cg_fid_s<s>
    (means over the seeds), each followed by its sd "..._sd" when there are several seeds."""

    fid_floor: float
    scores: tuple[StrengthScore, ...]

    def to_json(self) -> dict:
        return _strength_metrics(GUIDANCE_KEY, "cg_fid_floor", self.fid_floor, self.scores, {})

    @classmethod
    def _decode(cls, d, ctx: Context):
        if not isinstance(d, dict) or "cg_fid_floor" not in d:
            raise ctx.fail("missing key 'cg_fid_floor'")
        return cls(fid_floor=convert(float, d["cg_fid_floor"], ctx.at("cg_fid_floor")),
                   scores=_strength_scores(GUIDANCE_KEY, d, ctx, {"cg_fid_floor"}))

    _EMPTY_IS_SKIPPED = True

    @classmethod
    def read(cls, path) -> GuidanceMetrics | None:
        """None: the stage was skipped (an empty file)."""
        return super().read(path)


def _strength(row) -> StrengthScore:
    return StrengthScore(strength=row.scale, accuracy=row.accuracy.summary(), fid=row.fid.summary())


@dataclass(frozen=True, kw_only=True)
class GuidanceDetail(Record):
    """reports/guidance_detail.json (stage evaluate_guidance): seeds, the sampling seeds of every row."""

    n_per_class: int
    sampler: str
    seeds: tuple[int, ...]
    rows: tuple[GuidanceRow, ...]

    def __post_init__(self):
        check_seeds(self.seeds, self.rows)

    def metrics(self) -> GuidanceMetrics:
        """guidance.json: the FID floor (the same for every row) and accuracy and FID per scale."""
        return GuidanceMetrics(fid_floor=self.rows[0].fid_floor, scores=tuple(_strength(r) for r in self.rows))

    _VARIANTS = (SkippedEvaluation,)

    @classmethod
    def read(cls, path) -> GuidanceDetail | SkippedEvaluation:
        return super().read(path)


@dataclass(frozen=True, kw_only=True)
class TextMetrics(Record):
    """reports/text.json (stage evaluate_text): cfg_fid_floor, cfg_acc_w<w>, cfg_fid_w<w> per weight,
    cfg_unseen_acc (means over the seeds), each followed by its "..._sd" when there are several seeds."""

    fid_floor: float
    scores: tuple[StrengthScore, ...]
    unseen_accuracy: MeanSd

    def to_json(self) -> dict:
        return _strength_metrics(CFG_KEY, "cfg_fid_floor", self.fid_floor, self.scores,
                                 _stat_keys(UNSEEN_KEY, self.unseen_accuracy))

    @classmethod
    def _decode(cls, d, ctx: Context):
        if not isinstance(d, dict) or "cfg_fid_floor" not in d:
            raise ctx.fail("missing key 'cfg_fid_floor'")
        unseen = {UNSEEN_KEY.parse(k)[0]: convert(float, v, ctx.at(k)) for k, v in d.items()
                  if UNSEEN_KEY.parse(k) is not None}
        unseen_accuracy = _stat_value(unseen, UNSEEN_KEY, (), ctx)
        scores = _strength_scores(CFG_KEY, d, ctx, {"cfg_fid_floor", *(UNSEEN_KEY.key(s) for s in unseen)})
        _one_seed_count([unseen_accuracy, *(v for s in scores for v in (s.accuracy, s.fid))], ctx)
        return cls(fid_floor=convert(float, d["cfg_fid_floor"], ctx.at("cfg_fid_floor")), scores=scores,
                   unseen_accuracy=unseen_accuracy)

    _EMPTY_IS_SKIPPED = True

    @classmethod
    def read(cls, path) -> TextMetrics | None:
        """None: the stage was skipped (an empty file)."""
        return super().read(path)


@dataclass(frozen=True, kw_only=True)
class TextDetail(Record):
    """reports/text_detail.json (stage evaluate_text): seeds, the sampling seeds of every row."""

    n_per_class: int
    sampler: str
    encoder: str
    weight: float
    seeds: tuple[int, ...]
    rows: tuple[CfgRow, ...]
    unseen: tuple[UnseenRow, ...]

    def __post_init__(self):
        check_seeds(self.seeds, (*self.rows, *self.unseen))

    def unseen_accuracy(self) -> OverSeeds:
        """The accuracy over the unseen phrasings: for each seed the mean over the phrasings, then
        mean and sd of those over the seeds."""
        return OverSeeds.of([fmean(r.accuracy.values[i] for r in self.unseen) for i in range(len(self.seeds))])

    def metrics(self) -> TextMetrics:
        """text.json: the FID floor, accuracy and FID per w, the accuracy over the unseen phrasings."""
        return TextMetrics(fid_floor=self.rows[0].fid_floor, scores=tuple(_strength(r) for r in self.rows),
                           unseen_accuracy=self.unseen_accuracy().summary())

    _VARIANTS = (SkippedEvaluation,)

    @classmethod
    def read(cls, path) -> TextDetail | SkippedEvaluation:
        return super().read(path)


#: the flat-key name of a teacher run at a step count, by the sampler it used
_TEACHER_SOLVERS = {"ddim": "teacher_ddim", "ode_heun": "teacher_heun"}


DistillRunName = Literal["teacher", "teacher_ddim", "teacher_heun", "student"]


@dataclass(frozen=True, kw_only=True)
class DistillRun(_Scored, Record):
    """One row of reports/distill_detail.json: the teacher at its full steps (full), the teacher with
    DDIM or Heun at a step count, or the student at a step count, drawn with every seed of the table.
    accuracy: runs drawn from prompts (a text teacher) only."""

    label: str = key("sampler")  # the table's name of the run, e.g. "teacher ddim", "student (progressive)"
    steps: int
    scores: SampleScores = inline()
    kind: Literal["teacher", "student"]
    solver: str  # the sampler of the run (the teacher's own, ddim, ode_heun; the student's ddim or consistency)
    full: bool  # the teacher at its full steps, with its own sampler: the reference

    _NEEDS_ACCURACY = False

    def __post_init__(self):
        if self.kind == "student" and self.full:
            raise ValueError("a student run is never the full-steps reference")
        if self.kind == "teacher" and not self.full and self.solver not in _TEACHER_SOLVERS:
            raise ValueError(f"a teacher run at a step count uses {' or '.join(_TEACHER_SOLVERS)}, not {self.solver!r}")

    @property
    def seconds_per_1000(self) -> float:
        """Sampling seconds per 1,000 samples (mean over the seeds)."""
        return 1000 * self.seconds_per_sample

    @property
    def name(self) -> DistillRunName:
        """The run's name in distill_eval.json's keys."""
        if self.full:
            return "teacher"
        return "student" if self.kind == "student" else _TEACHER_SOLVERS[self.solver]


@dataclass(frozen=True, kw_only=True)
class RunScore(Record):
    """A run's flat metrics: FID (and accuracy), mean and sd over the seeds, at `steps` (None: the
    teacher at its full steps, with its NFE)."""

    run: DistillRunName
    steps: int | None
    fid: MeanSd
    accuracy: MeanSd | None = None
    nfe: int | None = None


@dataclass(frozen=True, kw_only=True)
class StudentGain(Record):
    """The student at distill.steps against the teacher at full steps: time ratio and ratio of the mean FIDs."""

    steps: int
    speedup: float
    fid_ratio: float


@dataclass(frozen=True, kw_only=True)
class DistillMetrics(Record):
    """reports/distill_eval.json (stage evaluate_distill): fid_floor; per run <run>_fid_<n> (and
    <run>_acc_<n>; teacher_fid_full, teacher_nfe_full), means over the seeds, each followed by its
    "..._sd" when there are several seeds; speedup_<k>, student_over_teacher_fid_<k>."""

    fid_floor: float
    runs: tuple[RunScore, ...]
    student: StudentGain | None

    def to_json(self) -> dict:
        out = {"fid_floor": self.fid_floor}
        for r in self.runs:
            out.update(_stat_keys(DISTILL_RUN_KEY, r.fid, r.run, "fid", r.steps))
            if r.accuracy is not None:
                out.update(_stat_keys(DISTILL_RUN_KEY, r.accuracy, r.run, "acc", r.steps))
            if r.nfe is not None:
                out[DISTILL_RUN_KEY.key(r.run, "nfe", r.steps, "mean")] = r.nfe
        if self.student is not None:
            out[SPEEDUP_KEY.key(self.student.steps)] = self.student.speedup
            out[FID_RATIO_KEY.key(self.student.steps)] = self.student.fid_ratio
        return out

    @classmethod
    def _decode(cls, d, ctx: Context):
        if not isinstance(d, dict) or "fid_floor" not in d:
            raise ctx.fail("missing key 'fid_floor'")
        runs: dict[tuple, dict] = {}
        gain: dict[str, tuple[int, float]] = {}
        for k, v in d.items():
            if k == "fid_floor":
                continue
            parsed = DISTILL_RUN_KEY.parse(k)
            if parsed is not None and not (parsed[1] == "nfe" and parsed[3] == "sd"):
                run, metric, steps, stat = parsed
                runs.setdefault((run, steps), {}).setdefault(metric, {})[stat] = convert(
                    int if metric == "nfe" else float, v, ctx.at(k))
                continue
            for name, fam in (("speedup", SPEEDUP_KEY), ("fid_ratio", FID_RATIO_KEY)):
                if fam.parse(k) is not None:
                    gain[name] = (fam.parse(k)[0], convert(float, v, ctx.at(k)))
                    break
            else:
                raise ctx.at(k).fail("is not a key of DistillMetrics (fid_floor, <run>_fid_<n>, <run>_acc_<n>, "
                                     "their _sd, teacher_nfe_full, speedup_<n>, student_over_teacher_fid_<n>)")
        scores = []
        for (run, steps), m in runs.items():
            fid = _stat_value(m.get("fid", {}), DISTILL_RUN_KEY, (run, "fid", steps), ctx)
            acc = _stat_value(m["acc"], DISTILL_RUN_KEY, (run, "acc", steps), ctx) if "acc" in m else None
            scores.append(RunScore(run=run, steps=steps, fid=fid, accuracy=acc, nfe=m.get("nfe", {}).get("mean")))
        _one_seed_count([v for r in scores for v in (r.fid, r.accuracy) if v is not None], ctx)
        student = None
        if gain:
            if set(gain) != {"speedup", "fid_ratio"} or gain["speedup"][0] != gain["fid_ratio"][0]:
                raise ctx.fail("expected speedup_<n> and student_over_teacher_fid_<n> together, at the same n")
            student = StudentGain(steps=gain["speedup"][0], speedup=gain["speedup"][1], fid_ratio=gain["fid_ratio"][1])
        return cls(fid_floor=convert(float, d["fid_floor"], ctx.at("fid_floor")), runs=tuple(scores),
                   student=student)

    _EMPTY_IS_SKIPPED = True

    @classmethod
    def read(cls, path) -> DistillMetrics | None:
        """None: the stage was skipped (an empty file)."""
        return super().read(path)


@dataclass(frozen=True, kw_only=True)
class DistillDetail(Record):
    """reports/distill_detail.json (stage evaluate_distill): every run, the full-steps teacher first;
    seeds, the sampling seeds of every run."""

    n: int
    method: str
    teacher: str  # score | text
    guidance: float | None
    student_steps: int
    teacher_sampler: str
    teacher_steps: int
    seeds: tuple[int, ...]
    rows: tuple[DistillRun, ...]

    def __post_init__(self):
        if not any(r.full for r in self.rows):
            raise ValueError("no row of the teacher at its full steps (full: true)")
        check_seeds(self.seeds, self.rows)

    def points(self) -> list[tuple[str, int, float, float | None, float]]:
        """(line, NFE, mean FID, its sd, floor) of each run for sbm.pipeline.plots.plot_quality_vs_nfe."""
        return [(r.label, r.nfe, r.fid.mean, r.fid.sd, r.fid_floor) for r in self.rows]

    @property
    def reference(self) -> DistillRun:
        """The teacher at its full steps."""
        return next(r for r in self.rows if r.full)

    def find(self, kind: Literal["teacher", "student"], steps: int, solver: str | None = None) -> DistillRun | None:
        """The (last) run of `kind` at `steps` (teacher: with `solver`) other than the reference, or None."""
        found = None
        for r in self.rows:
            if not r.full and r.kind == kind and r.steps == steps and (solver is None or r.solver == solver):
                found = r
        return found

    def metrics(self) -> DistillMetrics:
        """distill_eval.json: every run's FID (and accuracy), the teacher's NFE at full steps, and the
        speed-up and mean-FID ratio of the student at distill.steps (when it was evaluated there)."""
        full = self.reference
        runs = tuple(RunScore(run=r.name, steps=None if r.full else r.steps, fid=r.fid.summary(),
                              accuracy=r.accuracy.summary() if r.accuracy is not None else None,
                              nfe=r.nfe if r.full else None) for r in self.rows)
        student = self.find("student", self.student_steps)
        gain = None if student is None else StudentGain(
            steps=self.student_steps, speedup=full.seconds_per_sample / student.seconds_per_sample,
            fid_ratio=student.fid.mean / full.fid.mean)
        return DistillMetrics(fid_floor=full.fid_floor, runs=runs, student=gain)

    _VARIANTS = (SkippedEvaluation,)

    @classmethod
    def read(cls, path) -> DistillDetail | SkippedEvaluation:
        return super().read(path)
