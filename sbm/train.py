"""One training loop for every model: accelerate, EMA, atomic checkpoints and resume, dvclive.

`train(model, loss_fn, data, cfg, ...)` minimises mean(loss_fn(model, x_batch, cond_batch))
with AdamW (linear warm-up to `lr`), gradient clipping, and an exponential moving average
of the weights (Polyak averaging)::

    θ_ema ← d θ_ema + (1 − d) θ,   d = min(ema_decay, (1 + k)/(10 + k)) at step k      (1)

Batches are drawn without replacement from a per-epoch permutation seeded by (seed, epoch),
so step k's batch is a pure function of (seed, k) and training resumes exactly. Every
`checkpoint_every` steps the full state (weights, EMA, optimizer, step, RNG) is written
atomically to `ckpt_dir`; a rerun resumes from the newest readable checkpoint whose
configuration fingerprint matches (corrupt ones are reported and skipped).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import io
from .config import TrainParams
from .errors import TrainingError  # noqa: F401 (re-exported: sbm.train.TrainingError)


@dataclass
class TrainResult:
    steps: int
    final_loss: float  # mean loss over the last logging window
    seconds: float
    resumed_from: int  # 0 when trained from scratch
    checkpoint: str | None  # last checkpoint written


class EMA:
    """Shadow copy of a module's floating-point parameters and buffers, eq. (1)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, module: nn.Module) -> nn.Module:
        module.load_state_dict({k: v.to(module.state_dict()[k].dtype) for k, v in self.shadow.items()})
        return module


def fingerprint(obj) -> str:
    """A short stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> Tensor:
    """Indices of step `step`'s batch: slice of the permutation of epoch step // (n // B)."""
    per_epoch = max(n // batch_size, 1)
    epoch, pos = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[pos * batch_size : (pos + 1) * batch_size]


# ---------------------------------------------------------------- checkpoints


def _ckpt_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step_{step:08d}.safetensors"


def save_state(ckpt_dir: Path, step: int, net: nn.Module, ema: EMA, opt: torch.optim.Optimizer, fp: str) -> Path:
    """Write the full training state for `step` atomically; keep the two newest files."""
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.shadow.items()})
    sd = opt.state_dict()
    for pid, state in sd["state"].items():
        for key, val in state.items():
            tensors[f"optim.{pid}.{key}"] = val if torch.is_tensor(val) else torch.tensor(val)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"kind": "train_state", "step": step, "fingerprint": fp, "param_groups": sd["param_groups"]}
    path = _ckpt_path(ckpt_dir, step)
    io.save_tensors(path, tensors, meta)
    for old in sorted(ckpt_dir.glob("step_*.safetensors"))[:-2]:
        old.unlink(missing_ok=True)
    return path


def latest_state(ckpt_dir: Path, fp: str, max_step: int):
    """(tensors, meta, path) of the newest readable checkpoint matching `fp`, or None.

    Unreadable files are reported (warning naming the file) and skipped, so a checkpoint
    truncated by a kill falls back to the previous good one."""
    for path in sorted(ckpt_dir.glob("step_*.safetensors"), reverse=True):
        try:
            tensors, meta = io.load_tensors(path)
        except io.CheckpointError as err:
            warnings.warn(f"skipping unusable checkpoint: {err}", stacklevel=2)
            continue
        if meta.get("fingerprint") != fp:
            warnings.warn(f"{path}: from a different training configuration; starting fresh", stacklevel=2)
            return None
        if meta["step"] <= max_step:
            return tensors, meta, path
    return None


def _restore(tensors, meta, net, ema, opt) -> int:
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.shadow = {k[4:]: v.float() for k, v in tensors.items() if k.startswith("ema.")}
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"])


# ---------------------------------------------------------------- the loop


def train(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    data: Tensor,
    cfg: TrainParams,
    *,
    seed: int,
    ckpt_dir: str | Path,
    live_dir: str | Path | None = None,
    config_for_fingerprint: dict | None = None,
    cond: Tensor | None = None,
    progress: bool = True,
) -> tuple[nn.Module, TrainResult]:
    """Train `model` (anything whose trainable part is `model.net`) on `data` (N, ...).

    loss_fn(model, x, cond) -> (B,) per-example losses; the loop takes their mean.
    Returns (a copy of `model` holding the EMA weights, TrainResult)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if len(data) < cfg.batch_size:
        raise TrainingError(f"train.batch_size = {cfg.batch_size} exceeds the {len(data)} training examples")
    if not torch.isfinite(data).all():
        raise TrainingError("training data contains NaN or inf values")
    accel = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(seed)
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fp = fingerprint({"config": config_for_fingerprint, "seed": seed, "n": len(data),
                      "train": {k: v for k, v in vars(cfg).items() if k not in ("steps", "checkpoint_every", "log_every")}})

    net = model.net
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(net, cfg.ema_decay)
    start_step, last_ckpt = 0, None
    found = latest_state(ckpt_dir, fp, cfg.steps)
    if found is not None:
        start_step = _restore(found[0], found[1], net, ema, opt)
        last_ckpt = str(found[2])
        accel.print(f"resuming from {found[2]} (step {start_step})")
    else:
        for stale in ckpt_dir.glob("step_*.safetensors"):
            stale.unlink()
    model.net, opt = accel.prepare(net, opt)

    live = None
    if live_dir is not None and accel.is_main_process:
        from dvclive import Live

        live = Live(str(live_dir), resume=start_step > 0, save_dvc_exp=False, dvcyaml=None)

    t0 = time.perf_counter()
    window: list[float] = []
    final_loss = float("nan")
    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="training",
               disable=not (progress and accel.is_local_main_process))
    for step in bar:
        lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = batch_indices(len(data), cfg.batch_size, step, seed)
        x = data[idx].to(accel.device)
        c = None if cond is None else cond[idx].to(accel.device)
        with accel.autocast():
            loss = loss_fn(model, x, c).mean()
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss is {loss.item()} at step {step}; stopped. Last good checkpoint: {last_ckpt or 'none'}"
            )
        opt.zero_grad(set_to_none=True)
        accel.backward(loss)
        if cfg.grad_clip > 0:
            accel.clip_grad_norm_(model.net.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(accel.unwrap_model(model.net), step)
        window.append(loss.item())
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            final_loss = sum(window) / len(window)
            window.clear()
            bar.set_postfix(loss=f"{final_loss:.4f}")
            if live is not None:
                live.step = done
                live.log_metric("loss", final_loss)
                live.log_metric("lr", lr)
                live.next_step()
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            accel.wait_for_everyone()
            if accel.is_main_process:
                last_ckpt = str(save_state(ckpt_dir, done, accel.unwrap_model(model.net), ema, opt, fp))
    bar.close()
    if live is not None:
        live.end()
    model.net = accel.unwrap_model(model.net)
    ema_model = copy.deepcopy(model)
    ema.copy_to(ema_model.net)
    result = TrainResult(steps=cfg.steps, final_loss=final_loss, seconds=time.perf_counter() - t0,
                         resumed_from=start_step, checkpoint=last_ckpt)
    return ema_model.eval(), result
