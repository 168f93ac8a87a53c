"""The metrics files of the training stages (reports/train_*.json, reports/distill.json)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from sbm.pipeline.outputs.skipped import SkippedTraining
from sbm.pipeline.records import INDEX, KeyFamily, Record, family, inline

#: train_classifier.json: the noisy classifier's test accuracy in noise quarter q (1 = least noise), "acc_q1"
QUARTER_KEY = KeyFamily("acc_q{}", (INDEX,))


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
class ReconstructionCeiling(Record):
    """The ceiling of a latent model (sbm.pipeline.measured.reconstruction_ceiling): FID and KID
    against the test split of the training split's reconstructions, from the posterior mean and
    from one posterior sample, next to the floor (the training examples themselves)."""

    ceiling_fid_mean: float
    ceiling_fid_sample: float
    ceiling_fid_floor: float
    ceiling_kid_mean: float
    ceiling_kid_sample: float
    ceiling_kid_floor: float


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
    ceiling: ReconstructionCeiling | None = inline(optional=True)  # labelled data (an evaluator) only

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


@dataclass(frozen=True, kw_only=True)
class LadderRow(Record):
    """One rung of the degradation ladder (sbm.eval.degrade.calibrate_metric): real training
    images degraded by `family` at `severity` (family "none": the undegraded floor), scored
    against the test split."""

    family: str
    severity: float
    label: str
    fid: float
    kid: float
    precision: float
    recall: float
    fid_ratio: float


@dataclass(frozen=True, kw_only=True)
class MetricCalibration(Record):
    """reports/calibration.json (stage train_evaluator): what the quality metrics can see.
    n degraded training images per rung against n_test test images; bar_failures: what the
    table misses of sbm.eval.degrade.BAR (empty: met). Data without labels: `SkippedTraining()`."""

    feature: str
    n: int
    n_test: int
    rows: tuple[LadderRow, ...]
    bar_failures: tuple[str, ...]

    _VARIANTS = (SkippedTraining,)

    @classmethod
    def read(cls, path) -> MetricCalibration | SkippedTraining:
        return super().read(path)
