"""The training monitor of a stage: `sbm.train.monitor.Monitor` built from params `monitor` and the
stage's inputs (the prepared data, the space directory, the evaluator of stage train_evaluator).

At every checkpoint the EMA model draws max(n_grid, n_quality) samples with `monitor.sampler` set to
about `monitor.nfe` network evaluations (`sbm.eval.sweep.settings_for_nfe`; the other sampler settings
are `SamplerParams`' defaults, not params `sampler`, so a training stage does not depend on them),
seeded by params `seed` (the same samples' noise at every checkpoint: the pictures differ only by the
weights); a conditional model (train_text) is sampled with the conditions `condition` gives,
unguided (w = 1: the guidance weight is a sampling setting). They are decoded to data space
(`Measured.decode`), pictured (`samples_picture`: an image grid, a scatter for 2-D points) and, when
the data has an evaluator, measured with a `QualityMeter` on the evaluator's own features against
the test split (FID, KID, precision, recall; with the labels each sample was drawn for, also the
evaluator's accuracy on them), next to the floor of n_quality real training examples. The evaluator
is always the classifier (not params `evaluator.feature`): cheap, and calibrated on this data.

A model sampled only its own way (a distill student: its DDIM or consistency steps) passes its
`sampler` settings instead of the monitor's sampler at `monitor.nfe`. A VAE (train_vae) is shown by
`build_reconstruction_monitor`, the same `Monitor` whose "draw" reconstructs fixed examples: the
picture puts them above their reconstructions decode(μ(x)), and the quality of the reconstructions
(the ceiling of a latent model) is measured like samples, next to the floor of the same real examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from sbm.config.params import Params, SamplerParams
from sbm.core.guidance import GuidedModel
from sbm.eval.evaluator import EVALUATOR_FILE, NO_EVALUATOR_FILE, load_evaluator_dir
from sbm.eval.quality import QualityMeter
from sbm.eval.sweep import draw, settings_for_nfe
from sbm.pipeline.measured import load_measured
from sbm.pipeline.plots import samples_picture
from sbm.pipeline.prepared import load_meta, load_split
from sbm.train.monitor import Monitor

#: condition(n) -> (cond (n, ...) the model is sampled with, labels (n,) the class each sample is drawn for, or None)
Condition = Callable[[int], tuple[Tensor, Tensor | None]]


class OnDevice(GuidedModel):
    """`model` on `device` sampled with tensors elsewhere (the samplers draw on the CPU): x, t and
    cond move to `device` for each prediction, which comes back to x's device."""

    def __init__(self, model, device: torch.device):
        super().__init__(model)
        self.device = device

    def predict(self, x: Tensor, t, kind: str, cond=None) -> Tensor:
        d = self.device
        t = t.to(d) if isinstance(t, Tensor) else t
        cond = cond.to(d) if isinstance(cond, Tensor) else cond
        return self.model.predict(x.to(d), t, kind, cond).to(x.device)


def _device(model: nn.Module) -> torch.device:
    """Where `model`'s parameters live (the CPU for a module without any)."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def _pictured(shape) -> bool:
    """Whether `samples_picture` draws data of example shape `shape`: 2-D points (a scatter) or images."""
    return [int(d) for d in shape] == [2] or isinstance(samples_picture(torch.zeros(1, *shape)), np.ndarray)


def _check_evaluator_dir(evaluator) -> None:
    if not any((Path(evaluator) / name).is_file() for name in (EVALUATOR_FILE, NO_EVALUATOR_FILE)):
        raise FileNotFoundError(f"{evaluator}: not a directory of stage train_evaluator, whose evaluator the training "
                                "monitor (params monitor) measures its samples with: run train_evaluator first, point "
                                "--evaluator at its directory, or set monitor.enabled=false")


def _measuring(params: Params, evaluator, train: Tensor, test: Tensor, labels: Tensor | None = None):
    """(measure, floor) of the monitor: a `QualityMeter` on `evaluator`'s features against `test`
    and the floor of n_quality real `train` examples (None, {} without an evaluator or n_quality);
    with `labels` (the class each sample is drawn for) also the evaluator's accuracy."""
    n = params.monitor.n_quality
    if evaluator is None or not n:
        return None, {}
    # FID/KID never synchronise: the main process alone measures
    meter = QualityMeter.for_evaluator(evaluator, test, params.evaluator, seed=params.seed)
    floor = meter.floor(train, min(n, len(train)))

    def measure(x: Tensor) -> dict[str, float]:
        out = meter(x)
        if labels is not None:
            out["accuracy"] = float((evaluator.predict(x) == labels[: len(x)]).double().mean())
        return out

    return measure, floor


def build_monitor(params: Params, *, data, space, evaluator, condition: Condition | None = None,
                  sampler: SamplerParams | None = None) -> Monitor:
    """The monitor of params `monitor` for a model trained on `data` (prepared data directory) in
    `space` (its space directory), measured with the evaluator in directory `evaluator` when the data
    has one (its train_evaluator directory must exist). condition: the conditions (and labels) of the
    samples of a conditional model. sampler: the settings the model is sampled with (a distill
    student's own sampler and steps); None: monitor.sampler at about monitor.nfe evaluations.
    params.monitor.enabled false -> an inactive monitor (shows nothing)."""
    m = params.monitor
    if not m.enabled:
        return Monitor(draw=None, n_grid=0, n_quality=0)
    _check_evaluator_dir(evaluator)
    measured = load_measured(data, space, evaluator, params.score.space, quantize=params.sampler.quantize)
    data_range = measured.meta.get("value_range") if measured.vae is None else None
    cond, labels = condition(max(m.n_grid, m.n_quality)) if condition is not None else (None, None)

    def sample(model: nn.Module, n: int) -> Tensor:
        cfg = sampler if sampler is not None else settings_for_nfe(SamplerParams(name=m.sampler), m.sampler, m.nfe,
                                                                   len(model.process.grid()))
        sampled = model if _device(model).type == "cpu" else OnDevice(model, _device(model))
        z, _, _ = draw(sampled, dataclasses.replace(cfg, batch_size=n), n, measured.shape, data_range=data_range,
                       seed=params.seed, cond=None if cond is None else cond[:n])
        return measured.decode(z)

    measure, floor = _measuring(params, measured.evaluator, measured.train, measured.test, labels)
    picture = samples_picture if _pictured(measured.meta["shape"]) else None
    return Monitor(draw=sample, picture=picture, measure=measure, n_grid=m.n_grid, n_quality=m.n_quality,
                   floor=floor)


def reconstruction_picture(real: Tensor) -> Callable[[Tensor], object]:
    """picture(rec (m, ...)) -> one (H, W, 3) uint8 array: the first m of `real` tiled above their
    reconstructions `rec`, tiled the same way (`samples_picture` of each, stacked)."""

    def picture(rec: Tensor):
        return np.concatenate([samples_picture(real[: len(rec)]), samples_picture(rec)], axis=0)

    return picture


def build_reconstruction_monitor(params: Params, *, data, evaluator) -> Monitor:
    """The monitor of params `monitor` for a VAE (train_vae) trained on `data` (prepared images):
    its "samples" are the reconstructions decode(μ(x)) of max(n_grid, n_quality) fixed training
    examples, the floor's own subset (`QualityMeter.floor`: seeded by params seed), so their FID
    minus its floor is what the autoencoder loses; pictured below the real examples
    (`reconstruction_picture`), measured on the evaluator's features against the test split when
    the data has an evaluator. Its sampler settings (monitor.sampler, nfe) do not apply."""
    m = params.monitor
    if not m.enabled:
        return Monitor(draw=None, n_grid=0, n_quality=0)
    _check_evaluator_dir(evaluator)
    meta = load_meta(data)
    train, test = load_split(data, "train")[0], load_split(data, "test")[0]
    n = min(max(m.n_grid, m.n_quality), len(train))
    # the examples QualityMeter.floor measures (the same seeded permutation): FID - floor = the VAE's loss
    real = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(params.seed))[:n]]
    lo, hi = meta.get("value_range", (-1.0, 1.0))

    def reconstruct(model: nn.Module, k: int) -> Tensor:
        d = _device(model)  # the VAE stays where it trains (a GPU): the examples go to it, reconstructions back
        return torch.cat([model.decode(model.encode(real[i:i + 256].to(d))).float().cpu().clamp(lo, hi)
                          for i in range(0, k, 256)])

    measure, floor = _measuring(params, load_evaluator_dir(evaluator), train, test)
    return Monitor(draw=reconstruct, picture=reconstruction_picture(real), measure=measure,
                   n_grid=min(m.n_grid, n), n_quality=min(m.n_quality, n), floor=floor)
