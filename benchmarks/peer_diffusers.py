"""The plain diffusers recipe beside sbm, at the same training wall-clock, in one run (issue #14, item 4).

What it measures: sample quality against cost of three models of the prepared training split
(default: the scikit-learn digits as 1×8×8 images in [-1, 1]), each scored by the calibrated
evaluator (`sbm.eval.quality.QualityMeter`: FID, KID, precision, recall) with n = min(params
sampler.n_samples, len(train)) samples against the whole test split, over `--seeds` sampling
seeds (mean ± sd), next to the floor: the same metrics of n real *training* examples.

1. **peer**: the plain diffusers unconditional recipe, written as diffusers'
   `examples/unconditional_image_generation/train_unconditional.py` does it: a `UNet2DModel`
   (sample_size 8, 1 channel in and out, block_out_channels (32, 64), 2 ResNet layers per block,
   self-attention at the 4×4 level ("AttnDownBlock2D"/"AttnUpBlock2D") and in the mid block, the
   library's other defaults: 1,001,729 parameters), `DDPMScheduler(num_train_timesteps=1000,
   beta_schedule="linear")`, ε-MSE loss on `noise_scheduler.add_noise(x, ε, t)` with t uniform in
   {0, …, 999}, AdamW (lr 1e-3; the recipe's betas (0.95, 0.999), weight decay 1e-6, eps 1e-8),
   gradient norm clipped at 1, batch 128 from a shuffling DataLoader, `EMAModel` of max decay
   0.999 with the recipe's EMA warm-up (inv_gamma 1, power 3/4), seeded. The lr schedule is the
   recipe's `get_cosine_schedule_with_warmup` with its step count replaced by wall-clock time:
   a linear warm-up over the first 100 *steps* (lr·k/100 at step k), then a cosine decay to 0
   over the *fraction of the time budget* left when the warm-up ended (`peer_lr`). It trains
   for the wall-clock the default pipeline spent training its VAE and its score model:
   train_seconds of reports/train_vae.json + reports/train_score.json (or `--budget-seconds`).
   Left out of the recipe: the random horizontal flip (digits are not mirror-symmetric; the
   data are already 8×8 in [-1, 1], so no resize/crop) and accelerate (one CPU process: its
   wrappers do nothing there). Sampled with the EMA weights, as DDIMPipeline/DDPMPipeline
   do: `DDIMScheduler.from_config(ddpm.config)` (η = 0) at 10, 25 and 50 steps and the
   `DDPMScheduler` at 1000 steps, x_T ~ N(0, I), output clamped to [-1, 1].
2. **sbm latent** (params' default model): the pipeline's trained outputs (data/models/score.safetensors
   on the VAE's latents of data/latent), sampled with params' own sampler at NFE ≈ 10, 25, 50
   (`sbm.eval.sweep.settings_for_nfe`, `draw`) and at its *default NFE*: params' `sampler`
   settings as they are (dpmpp_2m at steps 20: 19 steps + the final denoise = 20 NFE;
   `default_nfe`, the sampler's `SamplerSpec.nfe`), one row sorted in among the others (none
   added when it is one of 10/25/50: that row is drawn with params' settings), marked
   "(default)" in the table and `"default": true` in the JSON. Decoded. Its training time: the
   same two reports (VAE + score model).
3. **sbm pixel**: the same params with score.space = pixel, trained here by running
   stages/train_score.py itself on a pixel space directory in a temporary folder (params'
   train.steps, or `--pixel-steps`), or loaded with `--pixel-model`; sampled as 2.

sbm at 1000 NFE runs only with `--sbm-1000` (it costs 20× the 50-NFE row per seed and per
model: on 2 CPU cores tens of minutes; the run prints the estimate from the 50-NFE rows).

    python benchmarks/peer_diffusers.py                      # full: ~20 min of peer training, then sampling
    python benchmarks/peer_diffusers.py --quick --threads 1  # smoke: 30 s budget, 200 samples, 1 seed, DDPM 50
    python benchmarks/peer_diffusers.py --budget-seconds 600 --seeds 5 --pixel-model pixel.safetensors

Everything runs on the CPU, with torch's default thread count (as the pipeline's stages) unless
`--threads`. Prints one table, then the verdicts on issue #15's goals (`goals`; FID means over
the seeds, sds shown, "sbm" = params' own model, 2.):

1. sbm's default row (its default NFE) has a lower FID than the peer's best row of DDIM 10/25/50
   and DDPM 1000 (the best one named);
2. sbm at NFE 10 has an FID no higher than the peer's DDIM at 50;
3. the default row's FID ≤ 1.3 × the floor's (this run, same n);
4. the 4-step student ≤ 1.2 × its teacher, and 5. `make run` ≤ 15 min: listed, not measured here
   (reports/distill_eval.json; the README's stage-time table).

Each with the figures compared, their ratio and met: yes / no / — (a needed row missing or with
no finite FID: --quick samples DDPM at 50 steps, so goal 1 is decided there only when the rows
present already refute it). Writes settings, budget, per-seed values, means, sds, floor, the
goals ("goals") and versions to --out (JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sbm.config.params import load_params, read_yaml, to_dict
from sbm.core.tensor import finite_rows
from sbm.eval import spread
from sbm.eval.evaluator import EVALUATOR_FILE, NO_EVALUATOR_FILE
from sbm.eval.quality import QualityMeter
from sbm.core.samplers import sampler_spec
from sbm.eval.sweep import draw, settings_for_nfe
from sbm.latent.space import SPACE_FILE
from sbm.latent.vae import decode_samples, write_space
from sbm.models.score import load_model, save_model
from sbm.pipeline.measured import Measured, load_measured
from sbm.pipeline.prepared import load_meta, sample_format
from sbm.pipeline.stage import USER_ERRORS

NFES = (10, 25, 50)
DDPM_STEPS = 1000
PEER = "peer (diffusers)"
#: goal 3: the default's FID at most this many times the floor's
FLOOR_FACTOR = 1.3
RUN_FIRST = "run `make run` (dvc repro) first"

#: the peer's UNet2DModel (about 1.0 M parameters at 1×8×8; the library's defaults otherwise)
PEER_UNET = {"sample_size": 8, "in_channels": 1, "out_channels": 1, "layers_per_block": 2,
             "block_out_channels": (32, 64), "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
             "up_block_types": ("AttnUpBlock2D", "UpBlock2D")}
#: the recipe's training settings (train_unconditional.py's defaults, lr and EMA decay as issue #14 sets them)
RECIPE = {"batch_size": 128, "lr": 1e-3, "adam_betas": (0.95, 0.999), "adam_weight_decay": 1e-6, "adam_eps": 1e-8,
          "grad_clip": 1.0, "warmup_steps": 100, "ema_decay": 0.999, "ema_inv_gamma": 1.0, "ema_power": 0.75,
          "num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"}


# --------------------------------------------------------------------------- inputs


def read_budget(vae_report: str | Path, score_report: str | Path) -> dict:
    """The pipeline's training wall-clock: train_seconds of the train_vae and train_score
    reports -> {seconds, source, parts}. A pixel-space pipeline's train_vae report (no
    autoencoder, no train_seconds) counts 0. FileNotFoundError / ValueError naming the file."""
    parts = {}
    for stage, path in (("train_vae", Path(vae_report)), ("train_score", Path(score_report))):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the {stage} stage's report); {RUN_FIRST}, "
                                    "or give --budget-seconds")
        try:
            report = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if "train_seconds" in report:
            parts[stage] = float(report["train_seconds"])
        elif stage == "train_vae" and report.get("space") == "pixel":
            parts[stage] = 0.0
        else:
            raise ValueError(f"{path}: no train_seconds; rerun the {stage} stage (dvc repro)")
    return {"seconds": sum(parts.values()), "source": f"{portable(str(vae_report))} + {portable(str(score_report))}",
            "parts": parts}


def missing_inputs(paths: dict[str, Path]) -> list[str]:
    """What of the pipeline's outputs is absent: one line per missing path, with the flag that names it."""
    need = {"--data": "meta.json", "--space": SPACE_FILE}
    out = []
    for flag, path in paths.items():
        if not path.exists():
            out.append(f"{flag} {path}: missing")
        elif flag in need and not (path / need[flag]).is_file():
            out.append(f"{flag} {path}: no {need[flag]}")
        elif flag == "--evaluator" and not (path / EVALUATOR_FILE).is_file():
            why = (path / NO_EVALUATOR_FILE)
            out.append(f"--evaluator {path}: no evaluator" + (
                f" ({json.loads(why.read_text()).get('reason')}); this benchmark needs labelled data"
                if why.is_file() else f" ({EVALUATOR_FILE} missing)"))
    return out


# --------------------------------------------------------------------------- the peer (diffusers recipe)


def peer_lr(step: int, elapsed: float, *, lr: float, warmup_steps: int, warmup_end: float | None,
            budget: float) -> float:
    """The recipe's cosine schedule with warm-up, its step count replaced by wall-clock time:
    lr·step/warmup_steps while step < warmup_steps (diffusers' get_cosine_schedule_with_warmup),
    then lr·½(1 + cos π p), p = (elapsed − warmup_end) / (budget − warmup_end) clipped to [0, 1]
    (warmup_end: the elapsed seconds when the warm-up ended)."""
    if step < warmup_steps:
        return lr * step / max(1, warmup_steps)
    span = budget - (warmup_end or 0.0)
    p = 1.0 if span <= 0 else min(max((elapsed - (warmup_end or 0.0)) / span, 0.0), 1.0)
    return lr * 0.5 * (1.0 + math.cos(math.pi * p))


def peer_scheduler():
    """The recipe's noise scheduler: DDPM, linear β over 1000 steps, ε-prediction."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=RECIPE["num_train_timesteps"], beta_schedule=RECIPE["beta_schedule"],
                         prediction_type=RECIPE["prediction_type"])


def portable(path: str | None) -> str | None:
    """A path as the JSON records it: relative to the repository root when inside it (no machine paths)."""
    if path is None:
        return None
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def train_peer(x: Tensor, *, budget: float, seed: int, progress: bool = True):
    """The recipe's UNet2DModel trained on x (N, 1, 8, 8) in [-1, 1] for `budget` wall-clock
    seconds -> (the EMA-weight UNet in eval mode, info)."""
    from diffusers import UNet2DModel
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    unet = UNet2DModel(**PEER_UNET)
    scheduler = peer_scheduler()
    r = RECIPE
    opt = torch.optim.AdamW(unet.parameters(), lr=r["lr"], betas=r["adam_betas"], weight_decay=r["adam_weight_decay"],
                            eps=r["adam_eps"])
    ema = EMAModel(unet.parameters(), decay=r["ema_decay"], use_ema_warmup=True, inv_gamma=r["ema_inv_gamma"],
                   power=r["ema_power"])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=r["batch_size"], shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    step, warmup_end, losses, lr = 0, None, [], 0.0
    bar = tqdm(total=math.ceil(budget), unit="s", desc="peer training (wall-clock)", disable=not progress)
    unet.train()
    t0 = time.perf_counter()
    elapsed = 0.0
    while elapsed < budget:
        for (clean,) in loader:
            elapsed = time.perf_counter() - t0
            if elapsed >= budget:
                break
            lr = peer_lr(step, elapsed, lr=r["lr"], warmup_steps=r["warmup_steps"], warmup_end=warmup_end,
                         budget=budget)
            for group in opt.param_groups:
                group["lr"] = lr
            noise = torch.randn(clean.shape, generator=g)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(clean),), generator=g).long()
            loss = F.mse_loss(unet(scheduler.add_noise(clean, noise, t), t).sample.float(), noise.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), r["grad_clip"])
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.step(unet.parameters())
            step += 1
            if step == r["warmup_steps"]:
                warmup_end = time.perf_counter() - t0
            losses.append(loss.item())
            if (now := min(int(time.perf_counter() - t0), bar.total)) > bar.n:
                bar.set_postfix(step=step, loss=f"{losses[-1]:.4f}", refresh=False)
                bar.update(now - bar.n)
    seconds = time.perf_counter() - t0
    bar.close()
    if step == 0:
        raise ValueError(f"peer: a budget of {budget:g} s allowed no training step")
    ema.copy_to(unet.parameters())
    tail = losses[-max(1, min(100, len(losses) // 10)):]
    return unet.eval(), {"steps": step, "train_seconds": seconds, "seconds_per_step": seconds / step,
                         "final_loss": sum(tail) / len(tail), "last_lr": lr, "ema_decay_at_end": ema.cur_decay_value,
                         "n_params": n_parameters(unet)}


def clamped(x: Tensor) -> Tensor:
    """The diffusers pipelines' output range: x clamped to [-1, 1]."""
    return x.clamp(-1, 1)


@torch.no_grad()
def sample_peer(unet, scheduler, steps: int, n: int, *, batch_size: int, seed: int,
                write: Callable[[Tensor], Tensor] = clamped) -> tuple[Tensor, int, float]:
    """n samples of the peer with a diffusers scheduler at `steps` steps, the DDIM/DDPM pipelines'
    loop (x_T ~ N(0, I), one UNet call and one scheduler.step per timestep), written by `write`
    (default: clamped to [-1, 1]; `main` passes the data format sbm's samples get, params
    sampler.quantize) -> (x (n, 1, 8, 8), NFE per batch, sampling seconds)."""
    g = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    chunks, t0 = [], time.perf_counter()
    for start in range(0, n, batch_size):
        x = torch.randn((min(batch_size, n - start), unet.config.in_channels, unet.config.sample_size,
                         unet.config.sample_size), generator=g) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, generator=g).prev_sample
        chunks.append(x)
    return write(torch.cat(chunks)), len(scheduler.timesteps), time.perf_counter() - t0


# --------------------------------------------------------------------------- sbm


def default_nfe(cfg, native_levels: int) -> int | None:
    """The NFE per batch of params' own sampler settings `cfg` (SamplerParams): the sampler's
    `SamplerSpec.nfe` (`sbm.core.samplers.SAMPLERS`, the table `settings_for_nfe` inverts; e.g.
    dpmpp_2m at `steps` K with the final denoise: K − 1 + 1). native_levels: len(process.grid()),
    the schedule's length when `steps` is null. None where the solver picks it (ode_adaptive)."""
    return sampler_spec(cfg.name).nfe(cfg, native_levels)


def sbm_targets(base, native_levels: int, sbm_1000: bool) -> list[tuple[int | None, bool]]:
    """The sbm rows' (target NFE, is params' default) pairs: NFES (and DDPM_STEPS with --sbm-1000)
    and the default NFE (`default_nfe`), sorted, the default once (flagged where it is one of
    them); a default without a fixed NFE (None) comes last."""
    default = default_nfe(base, native_levels)
    fixed = sorted(set(NFES + ((DDPM_STEPS,) if sbm_1000 else ())) | ({default} if default is not None else set()))
    return [(nfe, nfe == default) for nfe in fixed] + ([(None, True)] if default is None else [])


def sample_sbm(model, space: Measured, base, nfe: int | None, n: int, *, seed: int) -> tuple[Tensor, int, float]:
    """n samples of an sbm model with params' sampler `base` set to about `nfe` network
    evaluations (settings_for_nfe), or `base` itself when nfe is None (params' default row),
    decoded to data space -> (x, actual NFE, sampling seconds)."""
    cfg = base if nfe is None else settings_for_nfe(base, base.name, nfe, native_levels=len(model.process.grid()))
    cfg = dataclasses.replace(cfg, batch_size=min(base.batch_size, n))
    z, actual, seconds = draw(model, cfg, n, space.shape, seed=seed,
                              data_range=space.meta.get("value_range") if space.vae is None else None)
    t0 = time.perf_counter()
    x = space.decode(z) if bool(finite_rows(z).all()) else z
    return x, actual, seconds + time.perf_counter() - t0


def pixel_params(params_path: Path, steps: int, out: Path) -> Path:
    """params_path with score.space = pixel, train.steps = steps and the training monitor off, written to out."""
    raw = read_yaml(params_path)
    raw["score"]["space"] = "pixel"
    raw["train"]["steps"] = int(steps)
    raw.setdefault("monitor", {})["enabled"] = False  # the training wall-clock alone: no pictures, no small-n FID
    out.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    load_params(out)  # validated before any work
    return out


def train_sbm_pixel(params_path: Path, data_dir: Path, tmp: Path, *, steps: int,
                    threads: int | None) -> tuple[Path, dict]:
    """sbm's score model in pixel space, trained by stages/train_score.py itself on a pixel space
    directory (what stage train_vae writes for score.space = pixel), every output in tmp
    -> (model path, the stage's metrics: train_seconds, steps, final_loss, n_params, ...)."""
    meta = load_meta(data_dir)
    write_space(tmp / "space", meta["shape"])
    params = pixel_params(params_path, steps, tmp / "params.yaml")
    out, metrics = tmp / "score_pixel.safetensors", tmp / "train_score.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    # the stage runs from the repository root: every path it gets is absolute
    cmd = [sys.executable, str(ROOT / "stages" / "train_score.py"), "--params", str(params.resolve()),
           "--data", str(data_dir.resolve()),
           "--space", str((tmp / "space").resolve()), "--out", str(out.resolve()),
           "--checkpoints", str((tmp / "checkpoints").resolve()), "--live", str((tmp / "live").resolve()),
           "--metrics", str(metrics.resolve())]
    done = subprocess.run(cmd, check=False, cwd=ROOT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"training the pixel-space sbm model failed (exit {done.returncode}): {' '.join(cmd)}")
    return out, json.loads(metrics.read_text())


# --------------------------------------------------------------------------- scoring and the table


def make_scorer(evaluator, test: Tensor, cfg, seed: int) -> Callable[[Tensor], dict[str, float]]:
    """fake (N, 1, 8, 8) in [-1, 1] -> {metric: value} against the whole test split, on the
    calibrated evaluator's features (`sbm.eval.quality.QualityMeter`; cfg: params `evaluator`)."""
    meter = QualityMeter.for_evaluator(evaluator, real=test, cfg=cfg, seed=seed)
    return lambda fake: {k: float(v) for k, v in meter(fake).items()}


def finite_or_none(obj):
    """obj with every non-finite float replaced by None (recursively), so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def mean_sd(values: list[float | None]) -> tuple[float, float | None]:
    """`sbm.eval.spread.mean_sd` (sd with n − 1; None for one value) of the finite values, so a seed whose
    samples scored NaN (non-finite samples) or lacks the metric (None) drops out; (nan, None) if none is finite."""
    finite = [float(x) for x in values if x is not None and math.isfinite(x)]
    return spread.mean_sd(finite) if finite else (math.nan, None)


def _significant(x: float, digits: int) -> str:
    """x rounded to `digits` significant digits, without an exponent below 10⁶ (5337.2 -> '5337', 183 -> '180')."""
    return f"{float(f'{x:.{digits}g}'):g}"


def fmt_mean_sd(mean: float, sd: float | None) -> str:
    """'mean ± sd' with 4 significant digits for the mean and 2 for the sd; the mean alone without an sd."""
    if mean is None or not math.isfinite(mean):
        return "—"
    return _significant(mean, 4) + ("" if sd is None else f" ± {_significant(sd, 2)}")


def summarise(per_seed: list[dict[str, float]]) -> dict[str, dict]:
    """{metric: {values, mean, sd}} over the seeds' metric dicts (keys: the first dict's), mean and sd by
    `mean_sd` (finite values only). Not `sbm.eval.spread.summary`: peer.json keeps "sd": null for one
    seed and the raw values (None where a seed lacks the metric), which that leaves out or refuses."""
    out = {}
    for k in per_seed[0]:
        m, s = mean_sd([d.get(k, math.nan) for d in per_seed])
        out[k] = {"values": [d.get(k) for d in per_seed], "mean": m, "sd": s}
    return out


def table(rows: list[dict], floor: dict[str, dict]) -> str:
    """One markdown table: a row per model × sampler × NFE and the floor's row; each metric as
    mean ± sd, FID over the floor's mean FID, seconds per sample, training seconds, parameters."""
    metrics = list(floor)
    fid_floor = floor.get("fid", {}).get("mean", math.nan)

    def line(model, sampler, nfe, summary, s_per_sample, train_s, n_params) -> dict:
        out = {"model": model, "sampler": sampler, "NFE": nfe}
        for k in metrics:
            out[k] = fmt_mean_sd(summary[k]["mean"], summary[k]["sd"]) if k in summary else "—"
            if k == "fid":
                ratio = summary.get("fid", {}).get("mean", math.nan) / fid_floor if fid_floor else math.nan
                out["fid/floor"] = "—" if not math.isfinite(ratio) else f"{ratio:.2f}"
        out.update({"s/sample": s_per_sample, "train s": train_s, "parameters": n_params})
        return out

    lines = [line("real train (floor)", "—", "—", floor, "—", "—", "—")]
    for r in rows:
        sampler = r["sampler"] + (" (default)" if r.get("default") else "")
        lines.append(line(r["model"], sampler, str(r["nfe"]), r["metrics"], f"{r['seconds_per_sample']:.2e}",
                          f"{r['train_seconds']:.0f}" if r.get("train_seconds") is not None else "—",
                          r["parameters"]))
    return pd.DataFrame(lines).to_markdown(index=False, disable_numparse=True)


# --------------------------------------------------------------------------- issue #15's goals


def _fid(row: dict | None) -> tuple[float, float | None]:
    fid = (row or {}).get("metrics", {}).get("fid", {})
    mean = fid.get("mean")
    return (mean if mean is not None else math.nan), fid.get("sd")


def _label(row: dict) -> str:
    return (f"{row['model']} {row['sampler']}{' (default)' if row.get('default') else ''} "
            f"NFE {row.get('target_nfe') if row.get('target_nfe') is not None else row['nfe']}")


def _figure(label: str, row: dict | None) -> dict:
    """One compared figure: FID mean and sd of a row (None where the row is missing or has no finite FID)."""
    mean, sd = _fid(row)
    return {"row": label, "fid_mean": mean if math.isfinite(mean) else None, "fid_sd": sd,
            "missing": not math.isfinite(mean)}


def _find(rows: list[dict], model: str, sampler: str | None = None, target: int | None = None,
          default: bool | None = None) -> dict | None:
    for r in rows:
        if (r["model"] == model and (sampler is None or r["sampler"] == sampler)
                and (target is None or r.get("target_nfe") == target)
                and (default is None or bool(r.get("default")) == default)):
            return r
    return None


def goals(rows: list[dict], floor: dict[str, dict], *, sbm_model: str, peer_model: str = PEER,
          ddpm_steps: int = DDPM_STEPS, floor_factor: float = FLOOR_FACTOR) -> list[dict]:
    """Issue #15's goals, from the table's rows and the floor's summary (pure): a dict per goal
    {goal, description, compared: [{row, fid_mean, fid_sd, missing}], ratio (the first figure over
    the second), threshold, met, note}. FID means over the seeds throughout. met is None where a
    needed row is missing (or has no finite FID), except goal 1 when the rows present already
    refute it (the default is no lower than one of them: the best can only be lower). Goals 4 and 5
    are listed, not measured here (met None, measured False).

    1. sbm_model's default row (params' sampler as it is) has a lower FID than the best of the
       peer's rows DDIM at NFES and DDPM at ddpm_steps (the best one is named);
    2. sbm_model at NFE 10 has an FID no higher than the peer's DDIM at 50;
    3. the default row's FID ≤ floor_factor × the floor's FID (same run, same n)."""
    out = []

    def goal(number, description, compared, ratio, threshold, met, note=None):
        out.append({"goal": number, "description": description, "compared": compared,
                    "ratio": ratio if ratio is not None and math.isfinite(ratio) else None, "threshold": threshold,
                    "met": met, "measured": True, "note": note})

    default = _find(rows, sbm_model, default=True)
    d_label = _label(default) if default else f"{sbm_model} (default)"
    d_fid = _fid(default)[0]

    # 1: the default against the peer's best row
    named = [("ddim", nfe) for nfe in NFES] + [("ddpm", ddpm_steps)]
    present = {(s, t): r for s, t in named if (r := _find(rows, peer_model, s, t)) and math.isfinite(_fid(r)[0])}
    missing = [f"{peer_model} {s} NFE {t}" for s, t in named if (s, t) not in present]
    best = min(present.values(), key=lambda r: _fid(r)[0]) if present else None
    b_fid = _fid(best)[0]
    if not (math.isfinite(d_fid) and best):
        met1 = None
    elif d_fid >= b_fid:
        met1 = False
    else:
        met1 = None if missing else True
    note = ("best peer row: " + _label(best) if best else "no peer row") + (
        f"; missing: {', '.join(missing)}" if missing else "")
    goal(1, "sbm default (params' model and sampler, default NFE) has a lower mean FID than the plain "
            f"recipe's best row (DDIM {'/'.join(map(str, NFES))}, DDPM {ddpm_steps})",
         [_figure(d_label, default), _figure(_label(best) if best else f"{peer_model} (best)", best)],
         d_fid / b_fid if best and b_fid else None, "< 1", met1, note)

    # 2: sbm at 10 NFE against DDIM 50
    s10, ddim50 = _find(rows, sbm_model, target=10), _find(rows, peer_model, "ddim", 50)
    a, b = _fid(s10)[0], _fid(ddim50)[0]
    ok = math.isfinite(a) and math.isfinite(b)
    goal(2, "sbm at NFE 10 has a mean FID no higher than the plain recipe's DDIM at 50",
         [_figure(_label(s10) if s10 else f"{sbm_model} NFE 10", s10),
          _figure(_label(ddim50) if ddim50 else f"{peer_model} ddim NFE 50", ddim50)],
         a / b if ok and b else None, "≤ 1", (a <= b) if ok else None)

    # 3: the default against the floor
    f_mean, f_sd = floor.get("fid", {}).get("mean", math.nan), floor.get("fid", {}).get("sd")
    f_mean = math.nan if f_mean is None else f_mean
    ok = math.isfinite(d_fid) and math.isfinite(f_mean) and f_mean > 0
    goal(3, f"sbm default's mean FID ≤ {floor_factor:g} × the floor's (real training examples, same n)",
         [_figure(d_label, default),
          {"row": "real train (floor)", "fid_mean": f_mean if math.isfinite(f_mean) else None, "fid_sd": f_sd,
           "missing": not math.isfinite(f_mean)}],
         d_fid / f_mean if ok else None, f"≤ {floor_factor:g}", (d_fid / f_mean <= floor_factor) if ok else None)

    for number, description, where in (
            (4, "the 4-step student's FID ≤ 1.2 × its teacher's", "reports/distill_eval.json"),
            (5, "`make run` takes ≤ 15 min", "the README's stage-time table")):
        out.append({"goal": number, "description": description, "compared": [], "ratio": None, "threshold": None,
                    "met": None, "measured": False, "note": f"not measured here: see {where}"})
    return out


def goals_table(entries: list[dict]) -> str:
    """The goals as a short markdown table: goal, description, the figures compared, ratio, met, note."""
    def figures(g):
        return " vs ".join(f"{c['row']}: {'missing' if c['missing'] else fmt_mean_sd(c['fid_mean'], c['fid_sd'])}"
                           for c in g["compared"]) or "—"

    def ratio(g):
        if g["ratio"] is None:
            return "—"
        r = g["ratio"]
        return (f"{r:.2f}" if abs(r) >= 0.1 else f"{r:.2g}") + (f" ({g['threshold']})" if g["threshold"] else "")

    lines = [{"goal": str(g["goal"]), "description": g["description"], "FID (mean ± sd)": figures(g),
              "ratio": ratio(g),
              "met": {True: "yes", False: "no", None: "—"}[g["met"]] if g["measured"] else "not measured here",
              "note": g["note"] or ""} for g in entries]
    return pd.DataFrame(lines).to_markdown(index=False, disable_numparse=True)


# --------------------------------------------------------------------------- the run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "prepared"), help="the prepared data (stage prepare)")
    ap.add_argument("--space", default=str(ROOT / "data" / "latent"), help="the space directory (stage train_vae)")
    ap.add_argument("--model", default=str(ROOT / "data" / "models" / "score.safetensors"),
                    help="sbm's trained score model (stage train_score)")
    ap.add_argument("--evaluator", default=str(ROOT / "data" / "models" / "evaluator"),
                    help="the evaluator directory (stage train_evaluator)")
    ap.add_argument("--vae-report", default=str(ROOT / "reports" / "train_vae.json"))
    ap.add_argument("--score-report", default=str(ROOT / "reports" / "train_score.json"))
    ap.add_argument("--budget-seconds", type=float, default=None,
                    help="the peer's training wall-clock (default: train_seconds of the two reports; --quick: 30)")
    ap.add_argument("--seeds", type=int, default=None, help="sampling seeds (default 3; --quick 1)")
    ap.add_argument("--n", type=int, default=None,
                    help="samples per set (default min(sampler.n_samples, len(train)); --quick 200)")
    ap.add_argument("--pixel-model", default=None, help="a trained pixel-space sbm model (no training)")
    ap.add_argument("--save-pixel-model", default=None, help="write the pixel-space model trained here")
    ap.add_argument("--pixel-steps", type=int, default=None, help="its training steps (default params train.steps; "
                    "--quick 200)")
    ap.add_argument("--ddpm-steps", type=int, default=None, help=f"the peer's DDPM steps (default {DDPM_STEPS}; "
                    "--quick 50)")
    ap.add_argument("--sbm-1000", action="store_true", help="also sample the sbm models at NFE 1000")
    ap.add_argument("--quick", action="store_true", help="a smoke run (30 s budget, 200 samples, 1 seed, "
                    "200 pixel steps, DDPM at 50 steps)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "peer.json"))
    args = ap.parse_args(argv)
    for flag in ("seeds", "n", "pixel_steps", "ddpm_steps", "threads"):
        if (v := getattr(args, flag)) is not None and v < 1:
            ap.error(f"--{flag.replace('_', '-')} = {v}: must be >= 1")
    if args.budget_seconds is not None and not (args.budget_seconds > 0 and math.isfinite(args.budget_seconds)):
        ap.error(f"--budget-seconds = {args.budget_seconds}: must be a positive number of seconds")
    if args.n is not None and args.n < 10:
        ap.error(f"--n = {args.n}: precision/recall and KID need at least 10 samples")
    if args.pixel_model and args.save_pixel_model:
        ap.error("--pixel-model loads a model; --save-pixel-model keeps one trained here: give one of them")
    if args.pixel_model and args.pixel_steps:
        ap.error("--pixel-steps sets the training of the pixel model; --pixel-model loads one instead")
    return args


def fail(message: str) -> None:
    """Stop with one clear message (exit status 1), before any work when it can be."""
    sys.exit(f"peer_diffusers: error: {message}")


def budget_of(args: argparse.Namespace) -> tuple[dict, dict | None]:
    """(the peer's budget {seconds, source, parts}, the pipeline's training seconds or None):
    --budget-seconds (or --quick's 30 s) overrides the two reports, which are then optional."""
    if args.budget_seconds is None and not args.quick:
        try:
            reports = read_budget(args.vae_report, args.score_report)
        except (FileNotFoundError, ValueError) as err:
            fail(str(err))
        return reports, reports
    try:
        reports = read_budget(args.vae_report, args.score_report)
    except (FileNotFoundError, ValueError):
        reports = None
    return {"seconds": args.budget_seconds or 30.0, "source": "--budget-seconds" if args.budget_seconds else "--quick",
            "parts": None}, reports


def check_writable(*paths: str | None) -> None:
    """Each output file's folder exists (created) and is writable, so the results are not lost at the end."""
    for p in filter(None, paths):
        folder = Path(p).resolve().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            fail(f"{p}: cannot create its folder ({err})")
        if not os.access(folder, os.W_OK):
            fail(f"{p}: its folder {folder} is not writable")


def sbm_entry(model, space: Measured, *, path: str | None, train_seconds: float | None, detail) -> dict:
    return {"kind": "sbm", "model": model, "space": space, "path": path, "train_seconds": train_seconds,
            "train_detail": detail, "n_params": n_parameters(model.net),
            "n_params_vae": n_parameters(space.vae) if space.vae is not None else None}


def pixel_entry(args: argparse.Namespace, params_path: Path, tmp: Path, steps: int, *, quantize: bool) -> dict:
    """The pixel-space sbm model: --pixel-model, or trained by stages/train_score.py (and kept
    at --save-pixel-model), with its space (the prepared data, clamped; quantize: params sampler.quantize) in tmp."""
    if args.pixel_model:
        try:
            model, meta = load_model(args.pixel_model)
        except USER_ERRORS as err:
            fail(" ".join(str(err).split()))
        if (meta.get("space") or {}).get("space", "pixel") != "pixel":
            fail(f"--pixel-model {args.pixel_model}: a {meta['space']['space']!r}-space model, not a pixel-space one")
        write_space(tmp / "space", load_meta(args.data)["shape"])
        detail = {"path": args.pixel_model, "train_seconds": meta.get("train_seconds"), "steps": meta.get("steps")}
    else:
        path, detail = train_sbm_pixel(params_path, Path(args.data), tmp, steps=steps, threads=args.threads)
        model, meta = load_model(path)
        if args.save_pixel_model:
            kept = {k: v for k, v in meta.items() if k not in ("kind", "model")}
            save_model(args.save_pixel_model, model,
                       extra={**kept, "train_seconds": detail["train_seconds"], "steps": detail["steps"]})
    space = load_measured(args.data, tmp / "space", args.evaluator, "pixel", quantize=quantize)
    return sbm_entry(model, space, path=args.pixel_model or args.save_pixel_model,
                     train_seconds=detail.get("train_seconds"), detail=detail)


Run = tuple[str, str, int | None, bool, Callable[..., tuple[Tensor, int, float]]]


def sampling_runs(models: dict[str, dict], base, n: int, batch: int, ddpm_steps: int, sbm_1000: bool,
                  write: Callable[[Tensor], Tensor] = clamped) -> list[Run]:
    """(model, sampler, target NFE, is params' default, run(seed=...) -> (x, NFE, seconds)) for every
    row of the table: the peer's DDIM at NFES and DDPM at ddpm_steps, its samples written by `write`
    (the format of sbm's own, so both are scored alike); each sbm model at `sbm_targets`, its default
    row drawn with params' sampler settings as they are."""
    from diffusers import DDIMScheduler

    runs: list[Run] = []
    for name, m in models.items():
        if m["kind"] == "peer":
            ddpm = peer_scheduler()
            runs += [(name, "ddim", nfe, False, partial(sample_peer, m["model"], DDIMScheduler.from_config(ddpm.config),
                                                        nfe, n, batch_size=batch, write=write)) for nfe in NFES]
            runs.append((name, "ddpm", ddpm_steps, False, partial(sample_peer, m["model"], ddpm, ddpm_steps, n,
                                                                  batch_size=batch, write=write)))
        else:
            runs += [(name, base.name, nfe, default,
                      partial(sample_sbm, m["model"], m["space"], base, None if default else nfe, n))
                     for nfe, default in sbm_targets(base, len(m["model"].process.grid()), sbm_1000)]
    return runs


def measure(runs: list[Run], models: dict[str, dict], seeds: list[int], n: int,
            score: Callable[[Tensor], dict[str, float]], metrics: list[str]) -> list[dict]:
    """Each run at every seed, scored (a set with a non-finite sample scores NaN) -> the table's rows."""
    rows = []
    for name, sampler, target, default, run in runs:
        per_seed, seconds, bad, actual = [], [], [], 0
        for s in seeds:
            x, actual, sec = run(seed=s)
            finite = finite_rows(x)
            bad.append(int((~finite).sum()))
            per_seed.append(score(x) if bool(finite.all()) else {k: math.nan for k in metrics})
            seconds.append(sec)
        m = models[name]
        row = {"model": name, "sampler": sampler, "target_nfe": target, "default": default, "nfe": actual,
               "seeds": seeds,
               "per_seed": per_seed, "metrics": summarise(per_seed), "non_finite": bad, "sampling_seconds": seconds,
               "seconds_per_sample": sum(seconds) / (len(seconds) * n), "train_seconds": m["train_seconds"],
               "parameters": f"{m['n_params']:,}" + (f" + {m['n_params_vae']:,} VAE" if m["n_params_vae"] else "")}
        rows.append(row)
        fid = row["metrics"].get("fid", {})
        label = sampler + (" (default)" if default else "")
        print(f"  {name:18s} {label:25s} NFE {actual:4d}: FID {fmt_mean_sd(fid.get('mean'), fid.get('sd'))} "
              f"({row['seconds_per_sample']:.2e} s/sample)" + (f", {sum(bad)} non-finite" if any(bad) else ""),
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    paths = {"--params": Path(args.params), "--data": Path(args.data), "--space": Path(args.space),
             "--model": Path(args.model), "--evaluator": Path(args.evaluator)}
    if args.pixel_model:
        paths["--pixel-model"] = Path(args.pixel_model)
    if missing := missing_inputs(paths):
        fail(f"the pipeline's outputs are incomplete; {RUN_FIRST}:\n  " + "\n  ".join(missing))
    check_writable(args.out, args.save_pixel_model)
    try:
        params = load_params(args.params)
    except USER_ERRORS as err:
        fail(" ".join(str(err).split()))
    budget, reports = budget_of(args)
    seeds = list(spread.seed_range(params.seed, args.seeds or (1 if args.quick else 3)))
    ddpm_steps = args.ddpm_steps or (50 if args.quick else DDPM_STEPS)
    pixel_steps = args.pixel_steps or (200 if args.quick else params.train.steps)

    # everything the run reads, loaded before any training
    try:
        space = load_measured(args.data, args.space, args.evaluator, params.score.space,
                              need_evaluator="peer_diffusers", quantize=params.sampler.quantize)
        model = load_model(args.model)[0]
    except USER_ERRORS as err:
        fail(f"{' '.join(str(err).split())}\n(the pipeline's outputs are incomplete or stale: {RUN_FIRST})")
    if tuple(space.train.shape[1:]) != (1, 8, 8):
        fail(f"{args.data} holds examples of shape {list(space.train.shape[1:])}; the peer recipe here is set up for "
             "1×8×8 images (data.name = digits)")
    n = min(args.n or (200 if args.quick else params.sampler.n_samples), len(space.train))
    batch = min(params.sampler.batch_size, n)
    score = make_scorer(space.evaluator, space.test, params.evaluator, params.seed)
    print(f"peer_diffusers: n = {n} samples per set against {len(space.test)} test examples, seeds {seeds}, "
          f"{torch.get_num_threads()} thread(s); peer budget {budget['seconds']:.1f} s ({budget['source']})",
          flush=True)

    floor_runs = []
    for s in seeds:  # n real training examples, a subset seeded like each sampling seed
        pick = torch.randperm(len(space.train), generator=torch.Generator().manual_seed(s))[:n]
        floor_runs.append(score(space.train[pick]))
    floor = summarise(floor_runs)

    with tempfile.TemporaryDirectory() as tmp:
        models = {f"sbm {params.score.space}": sbm_entry(
            model, space, path=args.model, train_seconds=reports and reports["seconds"],
            detail=reports and reports["parts"])}
        if params.score.space != "pixel":
            models["sbm pixel"] = pixel_entry(args, Path(args.params), Path(tmp), pixel_steps,
                                              quantize=params.sampler.quantize)
        elif args.pixel_model:
            print("peer_diffusers: params' own model is in pixel space; --pixel-model is not used")
        unet, peer_info = train_peer(space.train, budget=budget["seconds"], seed=params.seed)
        print(f"peer: {peer_info['n_params']:,} parameters, {peer_info['steps']} steps in "
              f"{peer_info['train_seconds']:.1f} s ({peer_info['seconds_per_step'] * 1e3:.1f} ms/step), "
              f"final loss {peer_info['final_loss']:.4f}", flush=True)
        models = {PEER: {"kind": "peer", "model": unet, "path": None,
                                       "train_seconds": peer_info["train_seconds"], "train_detail": peer_info,
                                       "n_params": peer_info["n_params"], "n_params_vae": None}, **models}
        # the peer's samples in the format sbm's get (clamped; rounded to the digits' 17 levels with sampler.quantize)
        write = partial(decode_samples, None, **sample_format(space.meta, quantize=params.sampler.quantize))
        runs = sampling_runs(models, params.sampler, n, batch, ddpm_steps, args.sbm_1000, write)
        rows = measure(runs, models, seeds, n, score, list(floor))

    text = table(rows, floor)
    goal_list = goals(rows, floor, sbm_model=f"sbm {params.score.space}")
    goal_text = goals_table(goal_list)
    notes = []
    for r in rows:
        if not args.sbm_1000 and models[r["model"]]["kind"] == "sbm" and r["target_nfe"] == max(NFES):
            est = r["seconds_per_sample"] * n * DDPM_STEPS / max(r["nfe"], 1)
            notes.append(f"{r['model']} at NFE {DDPM_STEPS} not run (--sbm-1000): about {est:.0f} s of sampling "
                         "per seed")
    seconds = time.perf_counter() - start
    print(f"\n{text}\n\n{n} samples per set against the {len(space.test)} test examples, mean ± sd over "
          f"{len(seeds)} sampling seed(s); floor: {n} real training examples. Peer budget {budget['seconds']:.1f} s "
          f"({budget['source']}); {torch.get_num_threads()} thread(s); {seconds:.0f} s in all."
          + "".join(f"\n{x}" for x in notes))
    print(f"\nIssue #15's goals (FID means over the seeds; 'missing': the row did not run here):\n\n{goal_text}")

    import diffusers

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "diffusers": diffusers.__version__},
        "threads": torch.get_num_threads(), "device": "cpu", "quick": args.quick, "seconds": seconds,
        "settings": {**{k: portable(getattr(args, k)) for k in ("params", "data", "space", "model", "evaluator")},
                     "n": n, "n_test": len(space.test), "seeds": seeds,
                     "nfe": list(NFES), "default_nfe": default_nfe(params.sampler, len(model.process.grid())),
                     "sbm_nfe": [t for t, _ in sbm_targets(params.sampler, len(model.process.grid()), args.sbm_1000)],
                     "ddpm_steps": ddpm_steps, "sbm_1000": args.sbm_1000,
                     "pixel_steps": None if args.pixel_model else pixel_steps, "batch_size": batch,
                     "sampler": to_dict(params.sampler), "evaluator_params": to_dict(params.evaluator),
                     "peer_unet": PEER_UNET, "peer_recipe": RECIPE,
                     "peer_lr_schedule": "linear warm-up over the first warmup_steps steps, then cosine decay to 0 "
                                         "over the fraction of the wall-clock budget left at the warm-up's end"},
        "budget": budget, "pipeline_training": reports,
        "models": {k: {"path": portable(v["path"]), "train_seconds": v["train_seconds"], "train": v["train_detail"],
                       "n_params": v["n_params"], "n_params_vae": v["n_params_vae"]} for k, v in models.items()},
        "floor": {"n": n, "per_seed": floor_runs, "metrics": floor},
        "rows": rows, "notes": notes, "table": text, "goals": goal_list, "goals_table": goal_text,
    }
    out = Path(args.out)
    out.write_text(json.dumps(finite_or_none(report), indent=2, default=str, allow_nan=False) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
