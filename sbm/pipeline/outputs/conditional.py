"""The typed outputs of the conditional evaluations (`sbm.pipeline.outputs` has the table of
every file): classifier guidance (evaluate_guidance), classifier-free guidance
from prompts (evaluate_text) and the distilled students (evaluate_distill). Each flat DVC
metrics file is a function of its detail file (`GuidanceDetail.metrics()`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sbm.pipeline.outputs.skipped import SkippedEvaluation
from sbm.pipeline.records import (
    INDEX,
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


@dataclass(frozen=True, kw_only=True)
class ConditionalScores(Record):
    """How well conditional samples follow their condition (sbm.eval.sweep.conditional_quality)."""

    accuracy: float
    per_class: tuple[float, ...]
    fid: float
    nfe: int
    seconds_per_sample: float


class _Scored:
    """The scores of a conditional row, read through."""

    scores: ConditionalScores

    @property
    def accuracy(self) -> float:
        return self.scores.accuracy

    @property
    def fid(self) -> float:
        return self.scores.fid

    @property
    def nfe(self) -> int:
        return self.scores.nfe

    @property
    def per_class(self) -> tuple[float, ...]:
        return self.scores.per_class

    @property
    def seconds_per_sample(self) -> float:
        return self.scores.seconds_per_sample


@dataclass(frozen=True, kw_only=True)
class GuidanceRow(_Scored, Record):
    """Classifier guidance at one scale s (stage evaluate_guidance)."""

    method: Literal["classifier"] = "classifier"
    scale: float
    scores: ConditionalScores = inline()
    fid_floor: float


@dataclass(frozen=True, kw_only=True)
class CfgRow(_Scored, Record):
    """Classifier-free guidance at one weight w, prompts of the training templates (stage evaluate_text)."""

    method: Literal["cfg"] = "cfg"
    scale: float
    templates: Literal["training"] = "training"
    scores: ConditionalScores = inline()
    fid_floor: float
    network_evals_per_call: int


@dataclass(frozen=True, kw_only=True)
class UnseenRow(_Scored, Record):
    """Classifier-free guidance at w = text.weight for prompts of one phrasing unseen in training."""

    method: Literal["cfg"] = "cfg"
    scale: float
    template: str
    scores: ConditionalScores = inline()
    fid_floor: float


@dataclass(frozen=True, kw_only=True)
class StrengthScore(Record):
    """Accuracy and FID at one guidance strength (a scale s or a weight w)."""

    strength: float
    accuracy: float
    fid: float


def _strength_metrics(family: KeyFamily, floor_key: str, fid_floor: float, scores, extra: dict) -> dict:
    out = {floor_key: fid_floor}
    for s in scores:
        out[family.key("acc", s.strength)] = s.accuracy
        out[family.key("fid", s.strength)] = s.fid
    return {**out, **extra}


def _strength_scores(family: KeyFamily, d: Mapping, ctx: Context, known: set[str]) -> tuple[StrengthScore, ...]:
    by: dict[float, dict] = {}
    for k, v in d.items():
        parsed = family.parse(k)
        if parsed is None:
            if k not in known:
                raise ctx.at(k).fail(f"is not a key of this file (its keys: {', '.join(sorted(known))}, "
                                     f"{family.key('acc', 1)}, {family.key('fid', 1)}, ...)")
            continue
        metric, strength = parsed
        by.setdefault(strength, {})[metric] = convert(float, v, ctx.at(k))
    out = []
    for strength, m in by.items():
        for metric in ("acc", "fid"):
            if metric not in m:
                raise ctx.fail(f"missing key {family.key(metric, strength)!r}")
        out.append(StrengthScore(strength=strength, accuracy=m["acc"], fid=m["fid"]))
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class GuidanceMetrics(Record):
    """reports/guidance.json (stage evaluate_guidance): cg_fid_floor, then cg_acc_s<s>, cg_fid_s<s> per scale."""

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


@dataclass(frozen=True, kw_only=True)
class GuidanceDetail(Record):
    """reports/guidance_detail.json (stage evaluate_guidance)."""

    n_per_class: int
    sampler: str
    rows: tuple[GuidanceRow, ...]

    def metrics(self) -> GuidanceMetrics:
        """guidance.json: the FID floor (the same for every row) and accuracy and FID per scale."""
        return GuidanceMetrics(fid_floor=self.rows[0].fid_floor, scores=tuple(
            StrengthScore(strength=r.scale, accuracy=r.accuracy, fid=r.fid) for r in self.rows))

    _VARIANTS = (SkippedEvaluation,)

    @classmethod
    def read(cls, path) -> GuidanceDetail | SkippedEvaluation:
        return super().read(path)


@dataclass(frozen=True, kw_only=True)
class TextMetrics(Record):
    """reports/text.json (stage evaluate_text): cfg_fid_floor, cfg_acc_w<w>, cfg_fid_w<w> per weight, cfg_unseen_acc."""

    fid_floor: float
    scores: tuple[StrengthScore, ...]
    unseen_accuracy: float

    def to_json(self) -> dict:
        return _strength_metrics(CFG_KEY, "cfg_fid_floor", self.fid_floor, self.scores,
                                 {"cfg_unseen_acc": self.unseen_accuracy})

    @classmethod
    def _decode(cls, d, ctx: Context):
        for k in ("cfg_fid_floor", "cfg_unseen_acc"):
            if not isinstance(d, dict) or k not in d:
                raise ctx.fail(f"missing key {k!r}")
        return cls(fid_floor=convert(float, d["cfg_fid_floor"], ctx.at("cfg_fid_floor")),
                   scores=_strength_scores(CFG_KEY, d, ctx, {"cfg_fid_floor", "cfg_unseen_acc"}),
                   unseen_accuracy=convert(float, d["cfg_unseen_acc"], ctx.at("cfg_unseen_acc")))

    _EMPTY_IS_SKIPPED = True

    @classmethod
    def read(cls, path) -> TextMetrics | None:
        """None: the stage was skipped (an empty file)."""
        return super().read(path)


@dataclass(frozen=True, kw_only=True)
class TextDetail(Record):
    """reports/text_detail.json (stage evaluate_text)."""

    n_per_class: int
    sampler: str
    encoder: str
    weight: float
    rows: tuple[CfgRow, ...]
    unseen: tuple[UnseenRow, ...]

    def metrics(self) -> TextMetrics:
        """text.json: the FID floor, accuracy and FID per w, the mean accuracy over the unseen phrasings."""
        return TextMetrics(fid_floor=self.rows[0].fid_floor,
                           scores=tuple(StrengthScore(strength=r.scale, accuracy=r.accuracy, fid=r.fid)
                                        for r in self.rows),
                           unseen_accuracy=sum(r.accuracy for r in self.unseen) / len(self.unseen))

    _VARIANTS = (SkippedEvaluation,)

    @classmethod
    def read(cls, path) -> TextDetail | SkippedEvaluation:
        return super().read(path)


#: the flat-key name of a teacher run at a step count, by the sampler it used
_TEACHER_SOLVERS = {"ddim": "teacher_ddim", "ode_heun": "teacher_heun"}


DistillRunName = Literal["teacher", "teacher_ddim", "teacher_heun", "student"]


@dataclass(frozen=True, kw_only=True)
class DistillRun(Record):
    """One row of reports/distill_detail.json: the teacher at its full steps (full), the teacher with
    DDIM or Heun at a step count, or the student at a step count. accuracy: runs drawn from prompts
    (a text teacher) only."""

    label: str = key("sampler")  # the table's name of the run, e.g. "teacher ddim", "student (progressive)"
    steps: int
    nfe: int
    fid: float
    accuracy: float | None = opt()
    seconds_per_1000: float
    fid_floor: float
    kind: Literal["teacher", "student"]
    solver: str  # the sampler of the run (the teacher's own, ddim, ode_heun; the student's ddim or consistency)
    full: bool  # the teacher at its full steps, with its own sampler: the reference

    def __post_init__(self):
        if self.kind == "student" and self.full:
            raise ValueError("a student run is never the full-steps reference")
        if self.kind == "teacher" and not self.full and self.solver not in _TEACHER_SOLVERS:
            raise ValueError(f"a teacher run at a step count uses {' or '.join(_TEACHER_SOLVERS)}, not {self.solver!r}")

    @property
    def name(self) -> DistillRunName:
        """The run's name in distill_eval.json's keys."""
        if self.full:
            return "teacher"
        return "student" if self.kind == "student" else _TEACHER_SOLVERS[self.solver]


@dataclass(frozen=True, kw_only=True)
class RunScore(Record):
    """A run's flat metrics: FID (and accuracy) at `steps` (None: the teacher at its full steps, with its NFE)."""

    run: DistillRunName
    steps: int | None
    fid: float
    accuracy: float | None = None
    nfe: int | None = None


@dataclass(frozen=True, kw_only=True)
class StudentGain(Record):
    """The student at distill.steps against the teacher at full steps: time ratio and FID ratio."""

    steps: int
    speedup: float
    fid_ratio: float


@dataclass(frozen=True, kw_only=True)
class DistillMetrics(Record):
    """reports/distill_eval.json (stage evaluate_distill): fid_floor; per run <run>_fid_<n> (and
    <run>_acc_<n>; teacher_fid_full, teacher_nfe_full); speedup_<k>, student_over_teacher_fid_<k>."""

    fid_floor: float
    runs: tuple[RunScore, ...]
    student: StudentGain | None

    def to_json(self) -> dict:
        out = {"fid_floor": self.fid_floor}
        for r in self.runs:
            out[DISTILL_RUN_KEY.key(r.run, "fid", r.steps)] = r.fid
            if r.accuracy is not None:
                out[DISTILL_RUN_KEY.key(r.run, "acc", r.steps)] = r.accuracy
            if r.nfe is not None:
                out[DISTILL_RUN_KEY.key(r.run, "nfe", r.steps)] = r.nfe
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
            if parsed is not None:
                run, metric, steps = parsed
                runs.setdefault((run, steps), {})[metric] = convert(int if metric == "nfe" else float, v, ctx.at(k))
                continue
            for name, family in (("speedup", SPEEDUP_KEY), ("fid_ratio", FID_RATIO_KEY)):
                if family.parse(k) is not None:
                    gain[name] = (family.parse(k)[0], convert(float, v, ctx.at(k)))
                    break
            else:
                raise ctx.at(k).fail("is not a key of DistillMetrics (fid_floor, <run>_fid_<n>, <run>_acc_<n>, "
                                     "teacher_nfe_full, speedup_<n>, student_over_teacher_fid_<n>)")
        scores = []
        for (run, steps), m in runs.items():
            if "fid" not in m:
                raise ctx.fail(f"missing key {DISTILL_RUN_KEY.key(run, 'fid', steps)!r}")
            scores.append(RunScore(run=run, steps=steps, fid=m["fid"], accuracy=m.get("acc"), nfe=m.get("nfe")))
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
    """reports/distill_detail.json (stage evaluate_distill): every run, the full-steps teacher first."""

    n: int
    method: str
    teacher: str  # score | text
    guidance: float | None
    student_steps: int
    teacher_sampler: str
    teacher_steps: int
    rows: tuple[DistillRun, ...]

    def __post_init__(self):
        if not any(r.full for r in self.rows):
            raise ValueError("no row of the teacher at its full steps (full: true)")

    def points(self) -> list[tuple[str, int, float, float]]:
        """(line, NFE, FID, floor) of each run for sbm.pipeline.plots.plot_quality_vs_nfe."""
        return [(r.label, r.nfe, r.fid, r.fid_floor) for r in self.rows]

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
        speed-up and FID ratio of the student at distill.steps (when it was evaluated there)."""
        full = self.reference
        runs = tuple(RunScore(run=r.name, steps=None if r.full else r.steps, fid=r.fid, accuracy=r.accuracy,
                              nfe=r.nfe if r.full else None) for r in self.rows)
        student = self.find("student", self.student_steps)
        gain = None if student is None else StudentGain(
            steps=self.student_steps, speedup=full.seconds_per_1000 / student.seconds_per_1000,
            fid_ratio=student.fid / full.fid)
        return DistillMetrics(fid_floor=full.fid_floor, runs=runs, student=gain)

    _VARIANTS = (SkippedEvaluation,)

    @classmethod
    def read(cls, path) -> DistillDetail | SkippedEvaluation:
        return super().read(path)
