"""What the training stages share: fit a model under the loop in the stage's directories.

Each training stage builds its model and loss, then calls `fit`: `sbm.train.loop.train` with
the stage's checkpoint directory (`--checkpoints`, persisted by DVC, so a rerun resumes) and
dvclive curve (`--live`), keyed for resume by `fingerprint`. Only the main process goes on to
write the model and the metrics (`schema` types), so `fit` returns None on the others.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from sbm.config.params import TrainParams
from sbm.train.loop import TrainResult, train
from sbm.train.monitor import Monitor, images_dir

#: the prepared data's meta entries that identify the data a model was trained on
DATA_KEYS = ("name", "shape", "n_train", "sigma_max", "seed")


def data_fingerprint(meta: dict, keys=DATA_KEYS) -> dict:
    """The part of the data's meta that a training run's fingerprint includes."""
    return {k: meta.get(k) for k in keys}


def fit(model: nn.Module, loss_fn: Callable[..., Tensor], x: Tensor, loop: TrainParams, args, *, seed: int,
        fingerprint: dict, cond: Tensor | None = None,
        monitor: Monitor | None = None) -> tuple[nn.Module, TrainResult] | None:
    """Train a copy of `model` on x (N, ...) (and cond (N, ...)) with `loop`, checkpoints in
    args.checkpoints and the curve in args.live -> (EMA model, result) on the main process,
    None on the others. monitor: shown at every checkpoint (`sbm.train.monitor`, built by
    `sbm.pipeline.monitoring.build_monitor`); with one, args.live/plots/images exists afterwards
    even when nothing was shown (a stage that monitors declares it as a DVC plot)."""
    shown = monitor if monitor is not None and monitor.active else None
    ema, result = train(model, loss_fn, x, loop, seed=seed, ckpt_dir=args.checkpoints, live_dir=args.live,
                        config_for_fingerprint=fingerprint, cond=cond, on_checkpoint=shown)
    if not result.is_main_process:
        return None
    if monitor is not None:
        images_dir(args.live)
        if shown is not None:
            print(f"monitor: {shown.seconds:.1f}s showing samples at the checkpoints")
    return ema, result


def n_params(model: nn.Module) -> int:
    """Trainable size: the parameters of `model.net` (a frozen encoder held outside it not counted)."""
    return sum(p.numel() for p in model.net.parameters())
