"""What the evaluation stages share: the data, the space the model samples in and the
evaluator (`Measured`), and what they write when their inputs were skipped."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sbm import io
from sbm.eval.evaluator import NO_EVALUATOR_FILE, load_evaluator_dir
from sbm.eval.quality import QualityMeter
from sbm.latent.space import check_space, read_space
from sbm.latent.vae import decode_samples, encode_dataset, load_space_vae, write_space
from sbm.pipeline.outputs.skipped import SkippedEvaluation
from sbm.pipeline.plots import placeholder
from sbm.pipeline.prepared import load_meta, load_split, sample_format


@dataclass
class Measured:
    """What the evaluation stages share: the data (train, test (N, ...) and meta.json), the space
    the model samples in (shape, and the VAE that decodes it, None in pixel space) and the
    evaluator whose features give FID (None for data without labels). `decode(z)` maps drawn
    samples to data space (latents decoded, images clamped to the data's range and, with `quantize`,
    rounded to its grid: `sbm.pipeline.prepared.sample_format`); `meter(...)` is the quality meter
    against the test split."""

    meta: dict
    shape: list[int]
    vae: object
    evaluator: object
    train: Tensor
    test: Tensor
    quantize: bool

    def decode(self, z: Tensor) -> Tensor:

        return decode_samples(self.vae, z, **sample_format(self.meta, quantize=self.quantize))

    def meter(self, cfg, seed: int) -> QualityMeter | None:
        """The stage's one `QualityMeter` (FID, KID, precision/recall) against the test split, on the
        features params `evaluator` (cfg) names; seed: its KID subsets, precision/recall and floor
        subsets. None without an evaluator (data without labels). Floors: `meter.floor(self.train, n)`."""

        return None if self.evaluator is None else QualityMeter.from_params(cfg, self.test, self.evaluator, seed=seed)


def reconstruction_ceiling(d: Measured, meter: QualityMeter, *, seed: int) -> dict[str, float]:
    """The ceiling of a latent model: how its samples would score if it had learned the latents of
    the training split exactly. The training split reconstructed through the space's VAE and
    written as samples are (`d.decode`), decode(s·μ(x)) (the posterior mean) and decode(s·z) with
    z ~ q(z|x) (one draw, seeded by `seed`), measured by `meter` against the test split next to the
    floor (the training examples themselves, as many). -> {ceiling_<metric>_mean,
    ceiling_<metric>_sample, ceiling_<metric>_floor} for FID and KID."""

    if d.vae is None:
        raise ValueError("reconstruction_ceiling: a pixel-space model has no autoencoder")
    with torch.no_grad():
        mean = encode_dataset(d.vae, d.train, sample=False, scaled=True)
        drawn = encode_dataset(d.vae, d.train, sample=True, scaled=True, generator=torch.Generator().manual_seed(seed))
    scores = {"mean": meter(d.decode(mean)), "sample": meter(d.decode(drawn)),
              "floor": meter.floor(d.train, len(d.train))}
    return {f"ceiling_{m}_{which}": scores[which][m] for m in ("fid", "kid") for which in ("mean", "sample", "floor")}


def load_measured(data_dir, space_dir, evaluator_dir, space: str, *, need_evaluator: str | None = None,
                  quantize: bool) -> Measured:
    """`Measured` from a stage's inputs; space: params score.space (checked against the space
    directory). need_evaluator: what needs it, for the error raised when the data has none.
    quantize: params sampler.quantize (samples rounded to a quantised data's grid by `decode`)."""

    info = check_space(space_dir, space)
    evaluator = load_evaluator_dir(evaluator_dir)
    if evaluator is None and need_evaluator:
        raise ValueError(f"{evaluator_dir}: no evaluator (the data has no class labels); {need_evaluator} needs one")
    return Measured(load_meta(data_dir), info["shape"], load_space_vae(space_dir), evaluator,
                    load_split(data_dir, "train")[0], load_split(data_dir, "test")[0], quantize)


def load_model_measured(data_dir, space_dir, evaluator_dir, *, need_evaluator: str | None = None,
                        quantize: bool) -> Measured:
    """`load_measured` for a trained model outside the pipeline (the benchmarks): space_dir None means a
    pixel model, whose space directory is written to a temporary folder; the space's kind is read
    from the directory rather than from params."""
    with tempfile.TemporaryDirectory() as tmp:
        if space_dir is None:
            space_dir = Path(tmp) / "space"
            write_space(space_dir, load_meta(data_dir)["shape"])
        return load_measured(data_dir, space_dir, evaluator_dir, read_space(space_dir)["space"],
                             need_evaluator=need_evaluator, quantize=quantize)


def skip_evaluation(stage: str, reason: str, *, metrics, detail=None, plots=()) -> None:
    """An evaluation stage whose inputs were skipped (`skip_training`) or that cannot measure
    this data (no labels: no evaluator, no FID): an empty metrics file, a detail file holding
    the reason (`SkippedEvaluation`, which the report prints) and a placeholder for each plot."""

    skipped = SkippedEvaluation(reason=reason)
    skipped.write_metrics(metrics)
    if detail is not None:
        skipped.write(detail)
    for png in plots:
        placeholder(png, f"{stage} skipped: {reason}")
    print(f"{stage}: skipped: {reason}")


def no_evaluator(evaluator_dir) -> str | None:
    """Why there is no evaluator in a train_evaluator directory (data without labels), or None."""

    marker = Path(evaluator_dir) / NO_EVALUATOR_FILE
    return f"train_evaluator: {io.read_json(marker)['reason']}" if marker.is_file() else None
