"""One training loop for every model: accelerate, EMA, atomic checkpoints and resume, dvclive.

`Trainer(cfg, seed=..., ckpt_dir=...).fit(model, loss_fn, data, cond)` (or `train(...)`) trains
a copy of `model` — what it was given is never changed — and returns the EMA copy. It
minimises mean(loss_fn(model, x_batch, cond_batch)) with AdamW (linear warm-up to `lr`, then
constant or cosine-decayed: `learning_rate`, eq. 2), gradient clipping, and an exponential moving average of the weights (Polyak averaging)::

    θ_ema ← d θ_ema + (1 − d) θ,   d = min(ema_decay, (1 + k)/(10 + k)) at step k      (1)

The learning rate of step k (0-based) with W = warmup_steps, S = steps, r = lr_min_ratio::

    η_k = lr · (k + 1)/W                                        k < W   (warm-up)
    η_k = lr                                                    k ≥ W, lr_schedule constant
    η_k = lr · (r + (1 − r) · ½ (1 + cos(π (k − W)/(S − W))))   k ≥ W, lr_schedule cosine  (2)

(cosine: Loshchilov & Hutter 2017, SGDR, one cycle without restarts; it reaches lr·r at k = S).
A cosine schedule depends on S, so then `steps` is part of the resume fingerprint: a run
extended to more steps restarts rather than resuming on a schedule a fresh run would not take.

Batches are drawn without replacement from a per-epoch permutation seeded by (seed, epoch),
so step k's *global* batch (`batch_indices`) is a pure function of (seed, k) and training
resumes exactly. Every `checkpoint_every` steps the full state (weights, EMA, optimizer,
step, the pending loss window) is written atomically to `ckpt_dir`; a rerun resumes from
the newest readable checkpoint whose configuration fingerprint matches (corrupt ones are
reported and skipped).

Scale-out (the same code under `python` or `accelerate launch --multi_gpu --num_processes W`):

- Sharding: process r of W trains on `shard(batch, r, W)`, a contiguous slice of the global
  batch (slices are disjoint, differ in size by at most one and together are the batch);
  with `gradient_accumulation` = A each shard is split again into A micro-batches, and
  every process runs its A micro-batches inside `accelerator.accumulate` (DDP all-reduces
  only on the last). Each micro-batch's loss is its per-example *sum* times W·A/B, so after
  accelerate's 1/A and DDP's 1/W the gradient is exactly that of the global batch mean
  (1/B) Σᵢ ∇ℓᵢ, for any B, W, A with B ≥ W·A.
- Noise: before step k process r seeds torch with a hash of (seed, r, k), so the processes
  draw different noise for their shards, every step's noise is reproducible, and resume is
  exact without storing generator states (for any number of processes).
- After the (all-reduced, clipped) optimizer step the weights are identical on every
  process, so the EMA (updated in place with fused foreach ops) is identical too.
- The logged loss is the global batch mean: per-step sums of per-example losses are kept on
  the device (no host sync per step) and reduced (sum over processes, / B) only at logging
  and checkpoint steps; a non-finite value there stops training, naming the first bad step,
  before any checkpoint of the damaged weights is written.
- Checkpoints, dvclive and the progress bar belong to the main process only.

Monitoring: `on_checkpoint(model, step, live)` (e.g. `sbm.train.monitor.Monitor`) is called on the
main process after checkpoint `step` is written, with a model holding the EMA weights (a copy: the
training state is not touched) and the dvclive `Live`; torch's global RNG states are saved and
restored around it, so training after it is bit-identical with and without it. On resume it is
called once more at the resumed step (it skips what it has already logged), which covers a run
killed between a checkpoint and its hook. Its time is not counted as training time.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sbm import io
from sbm.config.params import TrainParams
from sbm.errors import TrainingError

# Bump when the meaning of a checkpoint changes (e.g. how noise is drawn), so an old run's
# state is not resumed as if it were exact.
LOOP_VERSION = 2
# train.* keys that may change between a run and its resume (budget, bookkeeping, launcher).
_NOT_FINGERPRINTED = ("steps", "checkpoint_every", "log_every", "launcher")


def learning_rate(step: int, cfg: TrainParams) -> float:
    """η_k of eq. 2 for (0-based) optimizer step `step` of params `train` `cfg`."""
    lr, warm = cfg.lr, max(cfg.warmup_steps, 1)
    if step < cfg.warmup_steps:
        return lr * (step + 1) / warm
    if cfg.lr_schedule == "constant":
        return lr
    span = max(cfg.steps - cfg.warmup_steps, 1)
    frac = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def _fingerprinted_loop(cfg: TrainParams) -> dict:
    """The loop settings a checkpoint must match (module docstring): all but the budget and the
    bookkeeping; with a constant schedule its settings are left out (so checkpoints written before the
    schedule existed still resume), with a cosine one the step count is in (eq. 2 depends on it)."""
    out = {k: v for k, v in vars(cfg).items() if k not in _NOT_FINGERPRINTED}
    if cfg.lr_schedule == "constant":
        del out["lr_schedule"], out["lr_min_ratio"]
    else:
        out["steps"] = cfg.steps
    return out
_DEVICE_DATA_BYTES = 1 << 30  # training data up to this size is moved to the accelerator once


@dataclass
class TrainResult:
    steps: int
    final_loss: float  # mean loss over the last logging window (global batch, all processes)
    seconds: float  # wall time of this call
    resumed_from: int  # 0 when trained from scratch
    checkpoint: str | None  # last checkpoint written
    world_size: int = 1  # processes that trained together
    is_main_process: bool = True  # the one process that writes files
    total_seconds: float | None = None  # training wall time over every call that built this run (resumes included)

    def __post_init__(self) -> None:
        if self.total_seconds is None:
            self.total_seconds = self.seconds


class EMA:
    """Shadow copy of a module's floating-point parameters and buffers, eq. (1).

    `attach(module)` (after the module has reached its device) caches the live tensors, so
    an update is one fused foreach op instead of a Python loop over the state_dict."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items()}
        self._live: list[Tensor] | None = None

    def attach(self, module: nn.Module) -> "EMA":
        state = module.state_dict()
        self.shadow = {k: self.shadow[k].to(v.device) for k, v in state.items()}
        keys = [k for k, v in state.items() if v.dtype.is_floating_point]
        self._live = [state[k] for k in keys]
        self._live_f32 = all(v.dtype == torch.float32 for v in self._live)
        self._shadow_f = [self.shadow[k] for k in keys]
        self._other = [(self.shadow[k], v) for k, v in state.items() if not v.dtype.is_floating_point]
        return self

    def load(self, shadow: dict[str, Tensor]) -> None:
        """Overwrite the shadow values in place (restore from a checkpoint)."""
        for k, v in shadow.items():
            self.shadow[k].copy_(v)

    @torch.no_grad()
    def update(self, module: nn.Module | None, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        if self._live is None:  # not attached: the plain (slow) path
            self.attach(module)
        live = self._live if self._live_f32 else [v.float() for v in self._live]
        torch._foreach_lerp_(self._shadow_f, live, 1 - d)  # θ_ema + (1 − d)(θ − θ_ema), one pass
        for s, v in self._other:
            s.copy_(v)

    def copy_to(self, module: nn.Module) -> nn.Module:
        module.load_state_dict({k: v.to(module.state_dict()[k].dtype) for k, v in self.shadow.items()})
        return module


FINGERPRINT_DIGITS = 4  # significant digits of the floats a fingerprint compares


def _rounded(obj):
    """obj with every float rounded to FINGERPRINT_DIGITS significant digits (recursively)."""
    if isinstance(obj, float):
        return float(f"{obj:.{FINGERPRINT_DIGITS}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    return obj


def fingerprint(obj) -> str:
    """A short stable hash of a JSON-able configuration. Floats count to FINGERPRINT_DIGITS
    significant digits: statistics of the data (σ_max, its standard deviation) recomputed under
    another OpenMP thread count differ in their last bits, and must not invalidate a run."""
    return hashlib.sha256(json.dumps(_rounded(obj), sort_keys=True, default=str).encode()).hexdigest()[:16]


def net_signature(net: nn.Module, data: Tensor) -> dict:
    """The trained network's state (parameter and buffer names with their shapes, in order) and
    the shape of one example of `data` (N, ...): the part of a training run's fingerprint that
    the configuration cannot be trusted to name."""
    return {"state": [[k, list(v.shape)] for k, v in net.state_dict().items()], "example": list(data.shape[1:])}


def _epoch_perm(n: int, seed: int, epoch: int) -> Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> Tensor:
    """Indices of step `step`'s global batch: slice of the permutation of epoch step // (n // B)."""
    per_epoch = max(n // batch_size, 1)
    epoch, pos = divmod(step, per_epoch)
    return _epoch_perm(n, seed, epoch)[pos * batch_size : (pos + 1) * batch_size]


def shard(batch: Tensor, rank: int, world: int) -> Tensor:
    """Process `rank`'s part of `batch` among `world`: a contiguous slice; the slices are
    disjoint, cover the batch in order and differ in length by at most one."""
    n = len(batch)
    return batch[rank * n // world : (rank + 1) * n // world]


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of process `rank` at step `step`: distinct per process and step."""
    digest = hashlib.blake2b(f"sbm.train/{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _seed_generators(seed: int, device: torch.device) -> None:
    """Seed the default generators that training draws from: the CPU one, and the device's.

    (Not `torch.manual_seed`: while CUDA is not initialised it queues a lazy call with a
    formatted stack trace for every device type, ~1 ms — a tenth of a small model's step.)"""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)  # CUDA is initialised by now: immediate, current device only
    elif device.type != "cpu":
        torch.manual_seed(seed)


def make_optimizer(parameters, cfg: TrainParams) -> torch.optim.Optimizer:
    """The optimizer of params `train`: AdamW(lr, weight_decay) (lr is then set per step)."""
    return torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)


class _Batches:
    """`batch_indices` with the epoch's permutation computed once (not once per step)."""

    def __init__(self, n: int, batch_size: int, seed: int, device):
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self.per_epoch = max(n // batch_size, 1)
        self.epoch, self.perm = None, None

    def __call__(self, step: int) -> Tensor:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self.epoch:
            self.epoch, self.perm = epoch, _epoch_perm(self.n, self.seed, epoch).to(self.device)
        return self.perm[pos * self.batch_size : (pos + 1) * self.batch_size]


# ---------------------------------------------------------------- checkpoints


def loop_params(train: TrainParams, own) -> TrainParams:
    """params `train` with a model's own steps, batch_size and lr (its params section, e.g.
    `vae` or `classifier`); the other loop settings (warm-up, clipping, EMA, ...) are shared."""
    return dataclasses.replace(train, steps=own.steps, batch_size=own.batch_size, lr=own.lr,
                               checkpoint_every=min(train.checkpoint_every, own.steps))


def _ckpt_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step_{step:08d}.safetensors"


def save_state(ckpt_dir: Path, step: int, net: nn.Module, ema: EMA, opt: torch.optim.Optimizer, fp: str,
               extra: dict | None = None, modules: dict[str, nn.Module] | None = None) -> Path:
    """Write the full training state for `step` atomically; keep the two newest files.

    `extra` (JSON-able) goes into the metadata: the loop stores the last logged loss and the
    losses of the current, not yet logged window, so a resumed run reports what an
    uninterrupted one would. `modules`: further state that training owns besides the net
    (`train`'s `extra_state`), stored as "extra.<name>.<key>"."""
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.shadow.items()})
    for name, module in (modules or {}).items():
        tensors.update({f"extra.{name}.{k}": v for k, v in module.state_dict().items()})
    sd = opt.state_dict()
    for pid, state in sd["state"].items():
        for key, val in state.items():
            tensors[f"optim.{pid}.{key}"] = val if torch.is_tensor(val) else torch.tensor(val)
    meta = {"kind": "train_state", "step": step, "fingerprint": fp, "param_groups": sd["param_groups"],
            **(extra or {})}
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


def _restore(tensors, meta, net, ema, opt, modules: dict[str, nn.Module] | None = None, path=None) -> int:
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    for name, module in (modules or {}).items():
        prefix = f"extra.{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not state:
            raise TrainingError(f"{path}: holds no extra state {name!r} to resume from")
        module.load_state_dict(state)
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])


def _nan_if_none(v) -> float:
    return float("nan") if v is None else float(v)


def _has_rows(tsv: Path) -> bool:
    """A dvclive TSV with at least one logged row (not missing, not just its header)."""
    return tsv.is_file() and len(tsv.read_text().strip().splitlines()) > 1


def _truncate_live(live_dir: Path, step: int) -> None:
    """Drop dvclive rows logged after `step` (a run killed after its last checkpoint logged
    them), in every TSV under plots/metrics (sub-folders included), and the per-step images
    (plots/images/**/<step>.png) of later steps, so the resumed run's curves continue without
    duplicates."""
    for image in (live_dir / "plots" / "images").rglob("*"):
        if image.is_file() and image.stem.isdigit() and int(image.stem) > step:
            image.unlink()
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        col = lines[0].split("\t").index("step") if "step" in lines[0].split("\t") else None
        if col is None:
            continue
        kept = [lines[0]] + [ln for ln in lines[1:] if ln and int(float(ln.split("\t")[col])) <= step]
        tsv.write_text("\n".join(kept) + "\n")


# ---------------------------------------------------------------- the loop


@dataclass
class _Progress:
    """Where a run stands: restored from a checkpoint on resume, advanced by the loop."""

    step: int = 0  # optimizer steps done
    final_loss: float = float("nan")  # the last logged loss
    window: list = dataclasses.field(default_factory=list)  # global per-step losses not yet logged
    earlier: float = 0.0  # training seconds spent by the calls this one resumes
    last_ckpt: str | None = None


class Trainer:
    """The loop of the module docstring, for any model whose trainable part is `model.net`.

    `fit(model, loss_fn, data, cond)` trains a *copy* of `model`: what it was given is never
    changed. The settings that make a run (loop params, seed, where its checkpoints and curve
    go, the configuration that must match to resume) are fixed at construction.

    Hooks for objectives with state of their own (e.g. the target network θ⁻ of consistency
    distillation, `sbm.distill.students`): `extra_state` names modules (names without dots) that are
    moved to the training device, saved in every checkpoint and restored on resume (they are
    not trained by the optimizer); `after_step(net, step)` is called after each optimizer step
    and EMA update with the unwrapped trained network and the step index k (0-based), on every
    process, before the step's checkpoint is written. `on_checkpoint(model, step, live)`: see the
    module docstring (called only when there is a live directory)."""

    def __init__(self, cfg: TrainParams, *, seed: int, ckpt_dir: str | Path, live_dir: str | Path | None = None,
                 config_for_fingerprint: dict | None = None, progress: bool = True,
                 extra_state: dict[str, nn.Module] | None = None,
                 after_step: Callable[[nn.Module, int], None] | None = None,
                 on_checkpoint: Callable[[nn.Module, int, object], None] | None = None):
        self.cfg, self.seed = cfg, seed
        self.ckpt_dir = Path(ckpt_dir)
        self.live_dir = None if live_dir is None else Path(live_dir)
        self.config_for_fingerprint, self.progress = config_for_fingerprint, progress
        self.extra_state = dict(extra_state or {})
        if any("." in name for name in self.extra_state):
            raise ValueError(f"extra_state names {sorted(self.extra_state)}: must not contain '.'")
        self.after_step = after_step
        self.on_checkpoint = on_checkpoint

    def fingerprint(self, n: int, net: dict | None = None) -> str:
        """What a checkpoint must match to be resumed: the user's configuration, seed, data size,
        loop version, the loop settings other than the budget and bookkeeping, and (`net`, from
        `net_signature`; `fit` always passes it) the trained network's parameter names and shapes
        and the shape of one example, so that a run without a configuration (or with one that does
        not name the architecture) never resumes another model's checkpoint."""
        fp_obj = {"config": self.config_for_fingerprint, "seed": self.seed, "n": n, "loop": LOOP_VERSION,
                  "train": _fingerprinted_loop(self.cfg)}
        if net is not None:
            fp_obj["net"] = net
        if self.extra_state:  # only then, so the fingerprints of runs without extra state are unchanged
            fp_obj["extra_state"] = sorted(self.extra_state)
        return fingerprint(fp_obj)

    def _check(self, data: Tensor, world: int) -> None:
        B, A = self.cfg.batch_size, self.cfg.gradient_accumulation
        if len(data) < B:
            raise TrainingError(f"train.batch_size = {B} exceeds the {len(data)} training examples")
        if not torch.isfinite(data).all():
            raise TrainingError("training data contains NaN or inf values")
        if B < world * A:
            raise TrainingError(f"train.batch_size = {B} is smaller than {world} process(es) × "
                                f"train.gradient_accumulation = {A}: every micro-batch needs an example")

    def _resume(self, accel, fp: str, net: nn.Module, ema: EMA, opt) -> _Progress:
        """The progress of the newest matching checkpoint (its state loaded into net, ema, opt and
        the extra state), or a fresh start (stale checkpoints of other settings removed)."""
        found = latest_state(self.ckpt_dir, fp, self.cfg.steps)
        if found is None:
            accel.wait_for_everyone()  # nobody is still reading the files the main process removes
            if accel.is_main_process:
                for stale in self.ckpt_dir.glob("step_*.safetensors"):
                    stale.unlink(missing_ok=True)
            return _Progress()
        tensors, meta, path = found
        done = _Progress(step=_restore(tensors, meta, net, ema, opt, self.extra_state, path),
                         final_loss=_nan_if_none(meta.get("loss")), earlier=float(meta.get("seconds") or 0.0),
                         window=[_nan_if_none(v) for v in meta.get("window", [])], last_ckpt=str(path))
        accel.print(f"resuming from {path} (step {done.step})")
        return done

    def _open_live(self, accel, done: _Progress):
        """The dvclive logger (main process, when a live_dir is set), continuing a resumed curve."""
        if self.live_dir is None or not accel.is_main_process:
            return None
        from dvclive import (
            Live,  # dvclive imports slowly; only runs that log pay for it
        )

        if done.step > 0:
            _truncate_live(self.live_dir, done.step)
        live = Live(str(self.live_dir), resume=done.step > 0, save_dvc_exp=False, dvcyaml=None)
        if done.step >= self.cfg.steps and not _has_rows(self.live_dir / "plots" / "metrics" / "loss.tsv"):
            # nothing left to train and the curve was lost: keep the declared output, one point
            live.step = done.step
            live.log_metric("loss", done.final_loss)
            live.next_step()
        return live

    def _show(self, model: nn.Module, ema: EMA, step: int, live, device: torch.device) -> float:
        """`on_checkpoint` at `step` on a copy of `model` holding the EMA weights (on `device`,
        in eval mode), torch's RNG states restored after it -> the seconds it took."""
        t0 = time.perf_counter()
        shown = copy.deepcopy(model).to(device)
        ema.copy_to(shown.net)
        shown.eval()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            self.on_checkpoint(shown, step, live)
        return time.perf_counter() - t0

    def fit(self, model: nn.Module, loss_fn: Callable[..., Tensor], data: Tensor,
            cond: Tensor | None = None) -> tuple[nn.Module, TrainResult]:
        """Train a copy of `model` on `data` (N, ...) (and `cond` (N, ...), sliced with the batches).

        loss_fn(model, x, cond) -> (B,) per-example losses; the loop takes their mean over the
        global batch (module docstring). Returns (a copy of `model` holding the EMA weights,
        TrainResult) on every process; `model` itself is left as it was."""
        from accelerate import (
            Accelerator,  # imports slowly; the stages that train pay for it
        )

        cfg = self.cfg
        B, A = cfg.batch_size, cfg.gradient_accumulation
        accel = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available(),
                            gradient_accumulation_steps=A)
        W, rank = accel.num_processes, accel.process_index
        self._check(data, W)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        fp = self.fingerprint(len(data), net_signature(model.net, data))

        work = copy.deepcopy(model)  # trained in place below; the caller's model stays untouched
        net = work.net
        opt = make_optimizer(net.parameters(), cfg)
        ema = EMA(net, cfg.ema_decay)
        done = self._resume(accel, fp, net, ema, opt)
        work.net, opt = accel.prepare(net, opt)  # the forward goes through the (DDP) wrapper
        core = accel.unwrap_model(work.net)
        ema.attach(core)
        for module in self.extra_state.values():
            module.to(accel.device)
        params = [p for p in core.parameters() if p.requires_grad]
        # Without a gradient scaler (fp16) accelerate's optimizer wrapper and clip_grad_norm_ add
        # nothing here (we step once per `accumulate` cycle, gradients are already all-reduced)
        # but cost ~0.5 ms per step in checks; call torch's directly then.
        fast = accel.scaler is None
        step_opt = opt.optimizer if fast else opt

        device = accel.device
        if data.device == device or data.nbytes <= _DEVICE_DATA_BYTES:
            data = data.to(device)
            cond = None if cond is None else cond.to(device)
        batches = _Batches(len(data), B, self.seed, data.device)
        scale = W * A / B  # see module docstring: per-micro-batch sum × W·A/B → global batch mean
        live = self._open_live(accel, done)
        show = self.on_checkpoint is not None and live is not None
        if show and done.step > 0:  # the resumed checkpoint's, if a kill came before its hook
            self._show(model, ema, done.step, live, device)

        def flush(pending: list[Tensor], upto: int) -> None:
            """Reduce the pending per-step loss sums over processes into the window (host floats)."""
            if not pending:
                return
            sums = torch.stack(pending)
            if W > 1:
                sums = accel.reduce(sums, "sum")
            values = [v / B for v in sums.tolist()]
            first = upto - len(pending)
            pending.clear()
            for i, v in enumerate(values):
                if not math.isfinite(v):
                    raise TrainingError(
                        f"loss is {v} at step {first + i}; stopped. Last good checkpoint: {done.last_ckpt or 'none'}"
                    )
            done.window.extend(values)

        t0 = time.perf_counter()
        start_step = done.step
        pending: list[Tensor] = []
        lr = cfg.lr
        bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="training",
                   disable=not (self.progress and accel.is_local_main_process))
        for step in bar:
            lr = learning_rate(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            _seed_generators(step_seed(self.seed, step, rank), device)
            idx = shard(batches(step), rank, W)
            step_sum = None
            for j in range(A):
                mi = shard(idx, j, A) if A > 1 else idx
                x = data[mi].to(device, non_blocking=True)
                c = None if cond is None else cond[mi].to(device, non_blocking=True)
                with accel.accumulate(work.net):  # DDP syncs gradients on the last micro-batch only
                    with accel.autocast():
                        per = loss_fn(work, x, c)
                    total = per.float().sum()
                    accel.backward(total * scale)
                total = total.detach()
                step_sum = total if step_sum is None else step_sum + total
            if cfg.grad_clip > 0:
                if fast:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                else:
                    accel.clip_grad_norm_(params, cfg.grad_clip)  # unscales the fp16 gradients first
            step_opt.step()
            step_opt.zero_grad(set_to_none=True)
            ema.update(core, step)
            if self.after_step is not None:
                self.after_step(core, step)
            pending.append(step_sum)
            done.step = step + 1
            log_now = done.step % cfg.log_every == 0 or done.step == cfg.steps
            ckpt_now = done.step % cfg.checkpoint_every == 0 or done.step == cfg.steps
            if log_now or ckpt_now:
                flush(pending, done.step)  # checks the losses before any checkpoint of these weights
            if log_now:
                done.final_loss = sum(done.window) / len(done.window)
                done.window.clear()
                bar.set_postfix(loss=f"{done.final_loss:.4f}")
                if live is not None:
                    live.step = done.step
                    live.log_metric("loss", done.final_loss)
                    live.log_metric("lr", lr)
                    live.next_step()
            if ckpt_now:
                if accel.is_main_process:
                    extra = {"loss": None if math.isnan(done.final_loss) else done.final_loss,
                             "window": done.window, "world_size": W,
                             "seconds": done.earlier + time.perf_counter() - t0}
                    save_state(self.ckpt_dir, done.step, core, ema, opt, fp, extra, self.extra_state)
                accel.wait_for_everyone()  # the file exists for every process from here on
                done.last_ckpt = str(_ckpt_path(self.ckpt_dir, done.step))
                if show:
                    t0 += self._show(model, ema, done.step, live, device)  # not training time
        bar.close()
        if live is not None:
            live.end()
        work.net = core
        ema.copy_to(core)  # `work` is ours: it becomes the EMA model
        seconds = time.perf_counter() - t0
        result = TrainResult(steps=cfg.steps, final_loss=done.final_loss, seconds=seconds,
                             resumed_from=start_step, checkpoint=done.last_ckpt, world_size=W,
                             is_main_process=accel.is_main_process, total_seconds=done.earlier + seconds)
        return work.eval(), result


def train(model: nn.Module, loss_fn: Callable[..., Tensor], data: Tensor, cfg: TrainParams, *, seed: int,
          ckpt_dir: str | Path, live_dir: str | Path | None = None, config_for_fingerprint: dict | None = None,
          cond: Tensor | None = None, progress: bool = True, extra_state: dict[str, nn.Module] | None = None,
          after_step: Callable[[nn.Module, int], None] | None = None,
          on_checkpoint: Callable[[nn.Module, int, object], None] | None = None) -> tuple[nn.Module, TrainResult]:
    """`Trainer(cfg, ...).fit(model, loss_fn, data, cond)`: a copy of `model` trained on `data`
    (N, ...), holding the EMA weights, and the TrainResult; `model` is not changed."""
    trainer = Trainer(cfg, seed=seed, ckpt_dir=ckpt_dir, live_dir=live_dir,
                      config_for_fingerprint=config_for_fingerprint, progress=progress,
                      extra_state=extra_state, after_step=after_step, on_checkpoint=on_checkpoint)
    return trainer.fit(model, loss_fn, data, cond)
