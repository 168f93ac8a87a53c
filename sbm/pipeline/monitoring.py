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
from sbm.eval.evaluator import EVALUATOR_FILE, NO_EVALUATOR_FILE
from sbm.eval.quality import QualityMeter
from sbm.eval.sweep import draw, settings_for_nfe
from sbm.pipeline.measured import load_measured
from sbm.pipeline.plots import samples_picture
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
    return next(model.parameters()).device


def _pictured(shape) -> bool:
    """Whether `samples_picture` draws data of example shape `shape`: 2-D points (a scatter) or images."""
    return [int(d) for d in shape] == [2] or isinstance(samples_picture(torch.zeros(1, *shape)), np.ndarray)


def build_monitor(params: Params, *, data, space, evaluator, condition: Condition | None = None) -> Monitor:
    """The monitor of params `monitor` for a model trained on `data` (prepared data directory) in
    `space` (its space directory), measured with the evaluator in directory `evaluator` when the data
    has one (its train_evaluator directory must exist). condition: the conditions (and labels) of the
    samples of a conditional model. params.monitor.enabled false -> an inactive monitor (shows nothing)."""
    m = params.monitor
    if not m.enabled:
        return Monitor(draw=None, n_grid=0, n_quality=0)
    if not any((Path(evaluator) / name).is_file() for name in (EVALUATOR_FILE, NO_EVALUATOR_FILE)):
        raise FileNotFoundError(f"{evaluator}: not a directory of stage train_evaluator, whose evaluator the training "
                                "monitor (params monitor) measures its samples with: run train_evaluator first, point "
                                "--evaluator at its directory, or set monitor.enabled=false")
    measured = load_measured(data, space, evaluator, params.score.space)
    data_range = measured.meta.get("value_range") if measured.vae is None else None
    cond, labels = condition(max(m.n_grid, m.n_quality)) if condition is not None else (None, None)

    def sample(model: nn.Module, n: int) -> Tensor:
        cfg = settings_for_nfe(SamplerParams(name=m.sampler), m.sampler, m.nfe, len(model.process.grid()))
        sampled = model if _device(model).type == "cpu" else OnDevice(model, _device(model))
        z, _, _ = draw(sampled, dataclasses.replace(cfg, batch_size=n), n, measured.shape, data_range=data_range,
                       seed=params.seed, cond=None if cond is None else cond[:n])
        return measured.decode(z)

    measure, floor = None, {}
    if measured.evaluator is not None and m.n_quality:  # FID/KID never synchronise: the main process alone measures
        meter = QualityMeter.for_evaluator(measured.evaluator, measured.test, params.evaluator, seed=params.seed)
        floor = meter.floor(measured.train, min(m.n_quality, len(measured.train)))

        def measure(x: Tensor) -> dict[str, float]:
            out = meter(x)
            if labels is not None:
                out["accuracy"] = float((measured.evaluator.predict(x) == labels[: len(x)]).double().mean())
            return out

    picture = samples_picture if _pictured(measured.meta["shape"]) else None
    return Monitor(draw=sample, picture=picture, measure=measure, n_grid=m.n_grid, n_quality=m.n_quality,
                   floor=floor)
