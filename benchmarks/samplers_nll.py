"""Samplers at matched NFE, and the probability-flow ODE likelihood against the exact one.

On the Gaussian mixture of params `data.gmm` (prepared as data.name gmm whatever params name), with
the score model the pipeline trains
(params `loss`, `objective`, `process`, `model`, `train`; the calls of stages/train_score.py):

1. NLL of the test split along the probability-flow ODE (`sbm.core.likelihood.dataset_nll`, exact
   divergence), next to the exact NLL of the same points under the true mixture, the gap,
   and the ODE solver's NFE.
2. Every sampler at NFE ≈ 10, 20, 50, 100, 1000 (`sbm.eval.sweep.compare_samplers`: the
   `steps`, and annealed_langevin's levels × steps_per_level, from the NFE conventions of
   sbm.core.samplers by `settings_for_nfe`; ode_adaptive: a ladder of rtol = atol, each target
   taking the run of closest actual NFE): n samples drawn by `sbm.eval.sweep.draw`, SW₂ to
   the test split next to the real-data floor (`sbm.eval.distances.distance_report`), and wall
   time per sample. For scale: the SW₂ of exact draws from the true mixture (mean ± sd).

    python benchmarks/samplers_nll.py                          # full: trains params' train.steps
    python benchmarks/samplers_nll.py --quick                  # 500 samples, ≤ 1000 train steps
    python benchmarks/samplers_nll.py --process vp --steps-train 2000 --samplers ddim,ode_heun
    python benchmarks/samplers_nll.py --model data/models/score.safetensors   # no training

Prints the tables; writes everything to --out (JSON). Deterministic given --seed.

``--nll-levers``: the gap to the truth (issue #16). On two mixtures of known density — the 2-D
mixture of params `data.gmm` (prepared as data.name gmm), and `MIXTURE_3D`, a fixed 3-D, 5-component
mixture with unequal weights and anisotropic full covariances, drawn here, written with
`datasets.Dataset.save_to_disk` and prepared through the pipeline's own local-dataset path
(data.name hf, value_range [−R, R] with R = `HF_RANGE`) — every lever setting of `LEVERS` (process,
weighting, t-sampling, t_min, train steps, ODE tolerances; the rows of `exact-*` use the mixture's
exact score, the floor left by t_min, the prior and the solver) is trained as the pipeline trains and
measured by

- the gap: mean over test points of the ODE NLL (`dataset_nll`, exact divergence) minus the exact
  NLL −log p(x) (`GaussianMixture.log_prob`), ± its standard error over the points (paired);
- the recovered weights: n samples of the model (`WEIGHT_SAMPLER`), ŵₖ = mean posterior
  responsibility rₖ(x) under the true mixture — unbiased, E_{x~p}[rₖ(x)] = ∫ wₖ Nₖ = wₖ — and
  max |ŵₖ − wₖ|; next to it the pipeline's nearest-component fractions (`sbm.eval.truth`), which
  are biased where components overlap. Exact draws of the same n give the noise of both.

The hf path maps value_range linearly onto [−1, 1]: x ↦ x/R, so the exact density of the prepared
points is the mixture mapped by the same map (means μₖ/R, covariances Σₖ/R²), i.e.
log p(x/R) = log p_raw(x) + D log R; the gap, a difference, is the same in either unit.

    python benchmarks/samplers_nll.py --nll-levers                      # DEFAULT_LEVERS, both mixtures (~10 min)
    python benchmarks/samplers_nll.py --nll-levers --mixtures gmm2d --levers ve,vp-likelihood-is
    python benchmarks/samplers_nll.py --nll-levers --mixtures hf3d --levers all   # every row of LEVERS (~25 min)
    python benchmarks/samplers_nll.py --nll-levers --quick              # smoke: < 1 min
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sbm.config.params import SAMPLERS, load_params, parse_params, to_dict
from sbm.core.gmm import GaussianMixture
from sbm.core.likelihood import dataset_nll
from sbm.core.losses import build_loss
from sbm.core.model import AnalyticScoreModel, ScoreModel
from sbm.core.processes import build_process
from sbm.eval.distances import distance_report
from sbm.eval.sweep import compare_samplers, draw, settings_for_nfe
from sbm.eval.truth import mixture_weights
from sbm.models.score import load_model, save_model
from sbm.nets.score import build_net
from sbm.pipeline import data
from sbm.pipeline.prepared import load_meta, load_split
from sbm.train.loop import train

TARGETS = (10, 20, 50, 100, 1000)
#: ode_adaptive: rtol = atol ladder, each run once; every target takes the run of closest NFE
TOLERANCES = (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)


def load_data(params, data_dir: Path, tmp: Path) -> tuple[dict, torch.Tensor, torch.Tensor, str]:
    """(meta, train x, test x, where): data_dir when its meta matches params `data`/seed,
    else freshly prepared by `sbm.pipeline.data.prepare` into tmp."""
    d = params.data
    try:  # written into the JSON: relative to the repository, never a machine's absolute path
        where = str(Path(data_dir).resolve().relative_to(ROOT))
    except ValueError:
        where = Path(data_dir).name
    want = {"name": d.name, "n_train": d.n_train, "n_test": d.n_test, "seed": params.seed,
            "gmm": GaussianMixture(d.gmm.weights, d.gmm.means, d.gmm.covs).to_dict() if d.name == "gmm" else None}
    try:
        meta = load_meta(data_dir)
        ok = all(meta.get(k) == v for k, v in want.items())
    except FileNotFoundError:
        ok = False
    if not ok:
        meta, where = data.prepare(d, params.seed, tmp / "prepared"), "prepared afresh"
        data_dir = tmp / "prepared"
    return meta, load_split(data_dir, "train")[0], load_split(data_dir, "test")[0], where


def train_model(params, meta: dict, x: torch.Tensor, tmp: Path) -> tuple[ScoreModel, dict]:
    """The score model of stages/train_score.py, trained on x with params -> (EMA model, info)."""
    process = build_process(params.process, meta)
    torch.manual_seed(params.seed)
    model = ScoreModel(build_net(params.model, meta["shape"]), process, params.model.prediction, float(x.std()))
    loss_fn = build_loss(params.loss, params.objective, meta["dim"])
    ema, res = train(model, loss_fn, x, params.train, seed=params.seed, ckpt_dir=tmp / "ckpt", live_dir=None,
                     config_for_fingerprint={"loss": params.loss, "objective": to_dict(params.objective),
                                             "model": model.to_config()})
    return ema, {"loss": params.loss, "process": params.process.name, "steps": res.steps,
                 "final_loss": res.final_loss, "seconds": res.seconds}


def nll_report(model, test: torch.Tensor, meta: dict, cfg, n_points: int, seed: int) -> dict:
    """ODE NLL (exact divergence) of the first n_points test points next to their exact NLL."""
    points = test[:n_points]
    t0 = time.perf_counter()
    summary, logp = dataset_nll(model, points, batch_size=cfg.batch_size, divergence="exact",
                                           rtol=cfg.rtol, atol=cfg.atol,
                                           generator=torch.Generator().manual_seed(seed), progress=True)
    out = {"n": summary["n"], "nll": summary["nll"], "nfe": summary["nll_nfe"], "rtol": cfg.rtol,
           "atol": cfg.atol, "seconds": time.perf_counter() - t0}
    if meta.get("gmm"):
        exact = GaussianMixture.from_dict(meta["gmm"]).log_prob(points.reshape(len(points), -1).double())
        out.update(nll_exact=float(-exact.mean()), gap=out["nll"] - float(-exact.mean()),
                   abs_err_per_point=float((logp.double() - exact).abs().mean()))
    return out


def exact_noise(gmm: GaussianMixture, test, reference, n: int, n_projections: int, seed: int,
                repeats: int = 10) -> dict:
    """SW₂ of `repeats` exact draws of n points from the true mixture to the test split (mean, sd):
    how much of a sampler's SW₂ is finite-sample noise (distance_report, the same subsets)."""
    swd = torch.tensor([distance_report(gmm.sample(n, generator=torch.Generator().manual_seed(seed + 1 + r))[0],
                                        test, reference, n, n_projections, seed)["swd"] for r in range(repeats)])
    return {"repeats": repeats, "swd_mean": float(swd.mean()), "swd_sd": float(swd.std()),
            "swd_min": float(swd.min()), "swd_max": float(swd.max())}


def describe(cfg) -> str:
    """The knob that sets a sampler's NFE, as text."""
    if cfg.name == "annealed_langevin":
        return f"levels={cfg.steps}, steps_per_level={cfg.steps_per_level}"
    if cfg.name == "langevin":
        return f"langevin_steps={cfg.langevin_steps}"
    return f"rtol=atol={cfg.rtol:g}" if cfg.name == "ode_adaptive" else f"steps={cfg.steps}"


def sampler_rows(model, base, names: list[str], targets, **kw) -> list[dict]:
    """One row per (sampler, target NFE) by `sbm.eval.sweep.compare_samplers` (its
    `settings_for_nfe` picks the steps); ode_adaptive runs once per tolerance of TOLERANCES
    and each target takes the run whose actual NFE is closest (ties: the cheaper)."""
    native = len(model.process.grid())
    fixed = [s for s in names if s != "ode_adaptive"]
    rows = compare_samplers(model, base, fixed, list(targets), progress=True, **kw) if fixed else []
    for r in rows:
        r.update(target=r["budget"], setting=describe(settings_for_nfe(base, r["sampler"], r["budget"], native)))
    if "ode_adaptive" in names:
        runs = []
        for tol in tqdm(TOLERANCES, desc="ode_adaptive tolerances"):
            cfg = dataclasses.replace(base, rtol=tol, atol=tol)
            runs += [{**r, "setting": describe(dataclasses.replace(cfg, name="ode_adaptive"))}
                     for r in compare_samplers(model, cfg, ["ode_adaptive"], [targets[0]], progress=False, **kw)]
        rows += [{**min(runs, key=lambda r: (abs(r["nfe"] - t), r["nfe"])), "target": t} for t in targets]
    for r in rows:  # one sampling seed here: a score's summary over seeds is its one value
        r.update({k: r[k]["mean"] for k in ("swd", "mmd") if isinstance(r.get(k), dict)})
    order = {s: i for i, s in enumerate(names)}
    return sorted(rows, key=lambda r: (order[r["sampler"]], r["target"]))


def tables(rows: list[dict]) -> tuple[str, str]:
    """(long table: sampler × target, with NFE, SW₂, ratio to floor, s/sample; pivot of SW₂)."""
    df = pd.DataFrame(rows)
    df = df.assign(**{c: df.get(c, math.nan) for c in ("swd", "swd_floor")})  # absent if all diverged
    df["swd_ratio"] = df["swd"] / df["swd_floor"]
    long = df[["sampler", "target", "setting", "nfe", "swd", "swd_floor", "swd_ratio", "seconds_per_sample"]]
    long = long.rename(columns={"target": "target NFE", "nfe": "NFE", "swd": "SW₂", "swd_floor": "floor",
                                "swd_ratio": "SW₂/floor", "seconds_per_sample": "s/sample"})
    pivot = df.pivot(index="sampler", columns="target", values="swd").loc[list(dict.fromkeys(df["sampler"]))]
    pivot.columns = [f"SW₂ @ NFE≈{c}" for c in pivot.columns]
    return (long.to_markdown(index=False, floatfmt=("", "", "", "", ".4f", ".4f", ".2f", ".2e")),
            pivot.to_markdown(floatfmt=".4f"))


# --------------------------------------------------------------------------- --nll-levers (issue #16)

#: the second mixture: 3-D, 5 components, unequal weights, anisotropic full covariances Σₖ = Lₖ Lₖᵀ
#: (Lₖ lower-triangular, below). Fixed before any run; never tuned on.
MIXTURE_3D = {
    "weights": [0.4, 0.25, 0.15, 0.12, 0.08],
    "means": [[-3.0, -2.0, 0.0], [3.0, 2.0, 1.0], [0.0, 4.0, -3.0], [2.0, -4.0, 3.0], [-4.0, 3.0, 3.0]],
    "chol": [[[1.2, 0.0, 0.0], [0.5, 0.6, 0.0], [-0.3, 0.2, 0.4]],
             [[0.5, 0.0, 0.0], [0.4, 1.1, 0.0], [0.2, -0.3, 0.7]],
             [[0.8, 0.0, 0.0], [-0.6, 0.5, 0.0], [0.1, 0.4, 1.0]],
             [[0.4, 0.0, 0.0], [0.2, 0.9, 0.0], [0.5, 0.1, 0.3]],
             [[1.0, 0.0, 0.0], [0.7, 0.4, 0.0], [-0.2, -0.5, 0.6]]],
}
#: data.hf.value_range [−R, R] of MIXTURE_3D's coordinates: the hf path maps x ↦ x/R
HF_RANGE = 12.0
MIXTURES = ("gmm2d", "hf3d")

#: name -> (what it changes, params overrides as dotted keys; "exact": the mixture's exact score, no training;
#: "sigma_max_factor": process.sigma_max = that × the prepared data's max pairwise distance, params' null).
#: likelihood.* keys change only the measurement: such rows reuse the model trained with the same other params.
LEVERS: dict[str, tuple[str, dict]] = {
    "ve": ("params as they are: VE, λ = σ², t ~ U[t_min, 1]", {}),
    "ve-likelihood": ("VE, λ = g² (on VE = 2 log(σ_max/σ_min)·σ²: a constant factor)",
                      {"objective.weighting": "likelihood"}),
    "ve-tol1e-7": ("VE, ODE rtol = atol = 1e-7 (likelihood only)", {"likelihood.rtol": 1e-7, "likelihood.atol": 1e-7}),
    "ve-16k": ("VE, 16000 train steps", {"train.steps": 16000}),
    "ve-sigma_min1e-3": ("VE, σ_min = 1e-3 (the truncation: σ(t_min) ≈ σ_min)", {"process.sigma_min": 1e-3}),
    "ve-sigma_max×4": ("VE, σ_max = 4 × the data's max pairwise distance (the prior term)", {"sigma_max_factor": 4.0}),
    "ve-batch4096": ("VE, batch 4096", {"train.batch_size": 4096}),
    "ve-batch4096-sigma_max×4": ("VE, batch 4096, σ_max = 4 × max pairwise distance",
                                 {"train.batch_size": 4096, "sigma_max_factor": 4.0}),
    "ve-batch1024-lr2.5e-4": ("VE, batch 1024, learning rate 2.5e-4", {"train.batch_size": 1024, "train.lr": 2.5e-4}),
    "ve-batch1024-sigma_min1e-3-sigma_max×4": ("VE, batch 1024, σ_min = 1e-3, σ_max = 4 × max pairwise distance",
                                               {"train.batch_size": 1024, "process.sigma_min": 1e-3,
                                                "sigma_max_factor": 4.0}),
    "vp": ("VP, λ = σ², t ~ U", {"process.name": "vp"}),
    "vp-16k": ("VP, λ = σ², t ~ U, 16000 train steps", {"process.name": "vp", "train.steps": 16000}),
    "ve-batch1024": ("VE, batch 1024 (8× less gradient noise per step)", {"train.batch_size": 1024}),
    "ve-lr2.5e-4": ("VE, learning rate 2.5e-4 (a quarter)", {"train.lr": 2.5e-4}),
    "ve-batch1024-sigma_max×4": ("VE, batch 1024, σ_max = 4 × max pairwise distance",
                                 {"train.batch_size": 1024, "sigma_max_factor": 4.0}),
    "vp-batch1024": ("VP, λ = σ², t ~ U, batch 1024", {"process.name": "vp", "train.batch_size": 1024}),
    "vp-batch1024-tmin1e-5": ("VP, λ = σ², t ~ U, batch 1024, t_min = 1e-5",
                              {"process.name": "vp", "train.batch_size": 1024, "process.t_min": 1e-5}),
    "vp-likelihood-is-batch1024": ("VP, λ = g², importance t, batch 1024",
                                   {"process.name": "vp", "objective.weighting": "likelihood",
                                    "objective.t_sampling": "importance", "train.batch_size": 1024}),
    "vp-likelihood": ("VP, λ = g², t ~ U", {"process.name": "vp", "objective.weighting": "likelihood"}),
    "vp-likelihood-is": ("VP, λ = g², t ~ q ∝ g²/σ² (importance)",
                         {"process.name": "vp", "objective.weighting": "likelihood", "objective.t_sampling": "importance"}),
    "vp-likelihood-is-tmin1e-5": ("VP, λ = g², importance t, t_min = 1e-5",
                                  {"process.name": "vp", "objective.weighting": "likelihood",
                                   "objective.t_sampling": "importance", "process.t_min": 1e-5}),
    "vp-likelihood-is-16k": ("VP, λ = g², importance t, 16000 train steps",
                             {"process.name": "vp", "objective.weighting": "likelihood",
                              "objective.t_sampling": "importance", "train.steps": 16000}),
    "ve-cosine": ("VE, cosine learning-rate decay to 0 (train.lr_schedule)", {"train.lr_schedule": "cosine"}),
    "ve-batch1024-cosine": ("VE, batch 1024, cosine learning-rate decay to 0",
                            {"train.batch_size": 1024, "train.lr_schedule": "cosine"}),
    "vp-batch1024-cosine": ("VP, λ = σ², t ~ U, batch 1024, cosine learning-rate decay to 0",
                            {"process.name": "vp", "train.batch_size": 1024, "train.lr_schedule": "cosine"}),
    "ve-batch4096-cosine": ("VE, batch 4096, cosine learning-rate decay to 0",
                            {"train.batch_size": 4096, "train.lr_schedule": "cosine"}),
    "exact-ve": ("exact score, VE (floor: t_min, prior, solver)", {"exact": True}),
    "exact-vp": ("exact score, VP (floor: t_min, prior, solver)", {"exact": True, "process.name": "vp"}),
    "exact-ve-sigma_min1e-3": ("exact score, VE, σ_min = 1e-3", {"exact": True, "process.sigma_min": 1e-3}),
    "exact-vp-tmin1e-5": ("exact score, VP, t_min = 1e-5", {"exact": True, "process.name": "vp", "process.t_min": 1e-5}),
    "exact-ve-sigma_max×4": ("exact score, VE, σ_max = 4 × max pairwise distance",
                             {"exact": True, "sigma_max_factor": 4.0}),
}
#: --nll-levers without --levers (about 10 min on one thread for both mixtures; --levers all: every row of LEVERS)
DEFAULT_LEVERS = ("exact-ve", "ve", "vp-likelihood-is", "ve-batch1024", "vp-batch1024")
QUICK_LEVERS = ("ve", "vp-likelihood-is", "exact-vp")
#: the sampler whose draws give the recovered weights: the probability-flow ODE, Heun, 50 steps (99 NFE)
WEIGHT_SAMPLER = {"name": "ode_heun", "steps": 50, "batch_size": 5000}


def with_overrides(params, overrides: dict):
    """params with dotted-key overrides ("process.name": "vp"), re-validated by `parse_params`."""
    tree = to_dict(params)
    for key, value in overrides.items():
        *path, leaf = key.split(".")
        node = tree
        for part in path:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"lever override {key!r}: no such params key")
        node[leaf] = value
    return parse_params(tree, source="samplers_nll --nll-levers")


def mixture_data(name: str, params, tmp: Path, n_train: int, n_test: int) -> tuple[dict, torch.Tensor, torch.Tensor,
                                                                                  GaussianMixture, str]:
    """(meta, train (n_train, D), test (n_test, D), the exact mixture in the prepared coordinates, about).

    gmm2d: params `data.gmm` prepared as data.name gmm. hf3d: MIXTURE_3D drawn (seed params.seed),
    saved by `datasets.Dataset.save_to_disk` and prepared by the pipeline's data.name hf path with
    value_range [−HF_RANGE, HF_RANGE] (x ↦ x/R), so the exact mixture is MIXTURE_3D mapped by x/R."""
    import datasets

    if name == "gmm2d":
        cfg = dataclasses.replace(params.data, name="gmm", n_train=n_train, n_test=n_test)
        meta = data.prepare(cfg, params.seed, tmp / name)
        gmm, about = GaussianMixture.from_dict(meta["gmm"]), "params data.gmm (data.name gmm)"
    elif name == "hf3d":
        chol = torch.tensor(MIXTURE_3D["chol"], dtype=torch.float64)
        raw = GaussianMixture(MIXTURE_3D["weights"], MIXTURE_3D["means"], chol @ chol.transpose(1, 2))
        x, label = raw.sample(n_train + n_test, generator=torch.Generator().manual_seed(params.seed))
        if float(x.abs().max()) > HF_RANGE:
            raise ValueError(f"MIXTURE_3D draws reach |x| = {float(x.abs().max()):.2f} > HF_RANGE = {HF_RANGE}")
        src = tmp / f"{name}-source"
        datasets.Dataset.from_dict({"x": x.tolist(), "label": label.tolist()}).save_to_disk(str(src))
        hf = dataclasses.replace(params.data.hf, path=str(src), name=None, split="train", column="x",
                                 label_column="label", value_range=[-HF_RANGE, HF_RANGE], n_levels=None,
                                 image_size=None, channels=None)
        cfg = dataclasses.replace(params.data, name="hf", hf=hf, test_fraction=n_test / (n_train + n_test))
        meta = data.prepare(cfg, params.seed, tmp / name)
        gmm = GaussianMixture(raw.weights, raw.means / HF_RANGE, raw.covs / HF_RANGE**2)
        about = f"MIXTURE_3D via data.name hf (local save_to_disk), value_range ±{HF_RANGE:g}: x ↦ x/{HF_RANGE:g}"
    else:
        raise ValueError(f"mixture {name!r}: allowed {', '.join(MIXTURES)}")
    return meta, load_split(tmp / name, "train")[0], load_split(tmp / name, "test")[0], gmm, about


def weight_errors(samples: torch.Tensor, gmm: GaussianMixture) -> dict:
    """Recovered weights of samples (n, D): ŵ = mean responsibility (unbiased, E_p[rₖ] = wₖ) and the
    nearest-component fractions of `sbm.eval.truth.mixture_weights`; max |ŵ − w| of each."""
    x = samples.reshape(len(samples), -1).double()
    ok = torch.isfinite(x).all(1)
    soft = gmm.responsibilities(x[ok]).mean(0)
    hard = torch.tensor(mixture_weights(x[ok], gmm), dtype=torch.float64)
    w = gmm.weights
    return {"weights_resp": soft.tolist(), "weights_nearest": hard.tolist(), "non_finite": int((~ok).sum()),
            "dw_max": float((soft - w).abs().max()), "dw_nearest_max": float((hard - w).abs().max())}


def gap_report(model, test: torch.Tensor, gmm: GaussianMixture, cfg) -> dict:
    """ODE NLL (exact divergence, cfg's tolerances) of test (n, D) against −log p: gap = mean of the
    per-point difference, se = its sd/√n."""
    t0 = time.perf_counter()
    summary, logp = dataset_nll(model, test, batch_size=cfg.batch_size, divergence="exact",
                                rtol=cfg.rtol, atol=cfg.atol)
    d = -logp.double() - (-gmm.log_prob(test.reshape(len(test), -1).double()))
    return {"n": len(test), "nll": float(-logp.double().mean()), "nll_exact": float(-gmm.log_prob(
        test.reshape(len(test), -1).double()).mean()), "gap": float(d.mean()),
            "gap_se": float(d.std() / math.sqrt(len(d))), "abs_err_per_point": float(d.abs().mean()),
            "nfe": summary["nll_nfe"], "rtol": cfg.rtol, "atol": cfg.atol, "nll_seconds": time.perf_counter() - t0}


def lever_rows(params, mixture: str, levers: list[str], *, tmp: Path, n_train: int, n_test: int,
               nll_points: int, weight_samples: int, weight_steps: int) -> tuple[list[dict], dict]:
    """One row per lever on one mixture -> (rows, the mixture's description with exact-draw noise)."""
    meta, train_x, test_x, gmm, about = mixture_data(mixture, params, tmp, n_train, n_test)
    test = test_x[:nll_points]
    exact_draws = gmm.sample(weight_samples, generator=torch.Generator().manual_seed(params.seed + 1))[0]
    info = {"mixture": mixture, "about": about, "dim": gmm.dim, "truth": gmm.to_dict(), "n_train": len(train_x),
            "n_test_nll": len(test), "exact_draws": weight_errors(exact_draws, gmm)}
    models, rows = {}, []
    for i, lever in enumerate(levers):
        overrides = dict(LEVERS[lever][1])
        exact = overrides.pop("exact", False)
        if factor := overrides.pop("sigma_max_factor", None):
            overrides["process.sigma_max"] = factor * meta["sigma_max"]
        p = with_overrides(params, overrides)
        p = dataclasses.replace(p, train=dataclasses.replace(p.train, checkpoint_every=p.train.steps))
        key = json.dumps({"exact": exact, **{k: v for k, v in to_dict(p).items() if k != "likelihood"}},
                         sort_keys=True, default=str)
        if key not in models:
            if exact:
                process = build_process(p.process, meta)
                models[key] = (AnalyticScoreModel(gmm.exact_score_fn(process), process),
                               {"steps": 0, "seconds": 0.0, "final_loss": None})
            else:
                models[key] = train_model(p, meta, train_x, tmp / f"train-{mixture}-{i}")
        model, tinfo = models[key]
        print(f"[{mixture}] {lever}: {LEVERS[lever][0]}", flush=True)
        row = {"mixture": mixture, "lever": lever, "what": LEVERS[lever][0], "overrides": LEVERS[lever][1],
               "process": model.process.to_config(), "train_steps": tinfo["steps"],
               "train_seconds": tinfo["seconds"], "final_loss": tinfo["final_loss"]}
        row.update(gap_report(model, test, gmm, p.likelihood))
        sampler = dataclasses.replace(p.sampler, **{**WEIGHT_SAMPLER, "steps": weight_steps})
        t0 = time.perf_counter()
        samples, nfe, _ = draw(model, sampler, weight_samples, tuple(meta["shape"]), seed=p.seed)
        row.update(weight_errors(samples, gmm), weight_nfe=nfe, weight_seconds=time.perf_counter() - t0)
        rows.append(row)
        print(f"  gap {row['gap']:+.4f} ± {row['gap_se']:.4f}, max|Δw| {row['dw_max']:.4f} "
              f"(nearest {row['dw_nearest_max']:.4f}), NFE {row['nfe']:.0f}", flush=True)
    return rows, info


def levers_table(rows: list[dict]) -> str:
    """Markdown: one row per (mixture, lever): gap ± se, max |Δw|, train steps, seconds."""
    df = pd.DataFrame([{
        "mixture": r["mixture"], "lever": r["lever"], "gap (nats)": f"{r['gap']:+.4f} ± {r['gap_se']:.4f}",
        "max abs Δw": r["dw_max"], "max abs Δw (nearest)": r["dw_nearest_max"], "ODE NFE": r["nfe"],
        "train steps": r["train_steps"], "train s": r["train_seconds"], "NLL s": r["nll_seconds"]} for r in rows])
    return df.to_markdown(index=False, floatfmt=("", "", "", ".4f", ".4f", ".0f", "", ".0f", ".0f"))


def nll_levers(args, params) -> dict:
    """The --nll-levers mode: `lever_rows` on every mixture of args.mixtures; prints, writes args.out."""
    start = time.perf_counter()
    levers = (list(LEVERS) if args.levers == "all" else args.levers.split(",") if args.levers
              else list(QUICK_LEVERS if args.quick else DEFAULT_LEVERS))
    if bad := [lv for lv in levers if lv not in LEVERS]:
        raise SystemExit(f"--levers: unknown {bad}; allowed: {', '.join(LEVERS)}")
    mixtures = args.mixtures.split(",")
    if bad := [m for m in mixtures if m not in MIXTURES]:
        raise SystemExit(f"--mixtures: unknown {bad}; allowed: {', '.join(MIXTURES)}")
    sizes = ({"n_train": 2000, "n_test": 500} if args.quick
             else {"n_train": params.data.n_train, "n_test": params.data.n_test})
    kw = dict(nll_points=args.nll_points or (50 if args.quick else params.likelihood.n_points),
              weight_samples=args.n or (2000 if args.quick else 20000),
              weight_steps=10 if args.quick else WEIGHT_SAMPLER["steps"], **sizes)
    rows, infos = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for m in mixtures:
            r, info = lever_rows(params, m, levers, tmp=Path(tmp), **kw)
            rows, infos = rows + r, infos + [info]
    table = levers_table(rows)
    noise = "\n".join(f"{i['mixture']}: {i['about']}; {kw['weight_samples']} exact draws give max|Δw| "
                      f"{i['exact_draws']['dw_max']:.4f} (nearest {i['exact_draws']['dw_nearest_max']:.4f})"
                      for i in infos)
    seconds = time.perf_counter() - start
    print(f"\n{table}\n\n{noise}\n{torch.get_num_threads()} thread(s); {seconds:.0f} s in all")
    report = {"date": date.today().isoformat(), "threads": torch.get_num_threads(), "seed": params.seed,
              "settings": kw, "mixtures": infos, "rows": rows, "seconds": seconds, "table": table}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "prepared"), help="reused if its meta matches params")
    ap.add_argument("--model", default=None, help="a saved score model (no training)")
    ap.add_argument("--save-model", default=None, help="write the trained model here")
    ap.add_argument("--process", choices=["ncsn", "ve", "vp", "subvp"], default=None, help="default: params")
    ap.add_argument("--steps-train", type=int, default=None, help="default: params train.steps (--quick: ≤ 1000)")
    ap.add_argument("--samplers", default=None, help="comma-separated; default: all but langevin")
    ap.add_argument("--n", type=int, default=None, help="samples per run (default 2000; --quick 500)")
    ap.add_argument("--nll-points", type=int, default=None, help="default: likelihood.n_points (--quick: 200)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: fewer samples, points and train steps")
    ap.add_argument("--seed", type=int, default=None, help="default: params seed")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--nll-levers", action="store_true",
                    help="the gap to the exact NLL and weights per lever setting, on two mixtures (see above)")
    ap.add_argument("--levers", default=None, help=f"--nll-levers: all, or comma-separated of {', '.join(LEVERS)} "
                                                  f"(default: {','.join(DEFAULT_LEVERS)}; --quick: "
                                                  f"{','.join(QUICK_LEVERS)})")
    ap.add_argument("--mixtures", default=",".join(MIXTURES), help="--nll-levers: comma-separated of "
                                                                   f"{', '.join(MIXTURES)}")
    ap.add_argument("--out", default=None, help="default reports/benchmarks/samplers_nll.json "
                                                "(--nll-levers: nll_levers.json)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    params = load_params(args.params)
    if args.nll_levers:
        args.out = args.out or str(ROOT / "reports" / "benchmarks" / ("nll_levers_quick.json" if args.quick
                                                                      else "nll_levers.json"))
        if args.seed is not None:
            params = dataclasses.replace(params, seed=args.seed)
        if args.steps_train:
            params = dataclasses.replace(params, train=dataclasses.replace(params.train, steps=args.steps_train))
        elif args.quick:
            params = dataclasses.replace(params, train=dataclasses.replace(params.train, steps=200))
        return nll_levers(args, params)
    args.out = args.out or str(ROOT / "reports" / "benchmarks" / "samplers_nll.json")
    steps_train = args.steps_train or (min(params.train.steps, 1000) if args.quick else params.train.steps)
    params = dataclasses.replace(
        params, seed=params.seed if args.seed is None else args.seed,
        data=dataclasses.replace(params.data, name="gmm"),  # the density must be known: params data.gmm
        process=dataclasses.replace(params.process, name=args.process or params.process.name),
        train=dataclasses.replace(params.train, steps=steps_train, checkpoint_every=steps_train))
    names = args.samplers.split(",") if args.samplers else [s for s in SAMPLERS if s != "langevin"]
    if bad := [s for s in names if s not in SAMPLERS]:
        ap.error(f"--samplers: unknown {bad}; allowed: {', '.join(SAMPLERS)}")
    n = args.n or (500 if args.quick else 2000)
    nll_points = args.nll_points or (200 if args.quick else params.likelihood.n_points)

    with tempfile.TemporaryDirectory() as tmp:
        meta, train_x, test_x, where = load_data(params, Path(args.data), Path(tmp))
        if args.model:
            model, info = load_model(args.model)[0], {"model": args.model}
        else:
            model, info = train_model(params, meta, train_x, Path(tmp))
            if args.save_model:
                save_model(args.save_model, model, extra={"loss": params.loss, "data_shape": meta["shape"]})
    info["process"] = model.process.to_config()
    about = f"{info['process']['name']} process, " + (
        f"model {args.model}" if args.model else
        f"{info['loss']} for {info['steps']} steps (final loss {info['final_loss']:.4f}, {info['seconds']:.0f} s)")

    nll = nll_report(model, test_x, meta, params.likelihood, nll_points, params.seed)
    t0 = time.perf_counter()
    rows = sampler_rows(model, params.sampler, names, TARGETS, test=test_x, reference=train_x, n=n,
                        n_projections=params.eval.n_projections, data_range=meta.get("value_range"), seed=params.seed)
    sampling_seconds = time.perf_counter() - t0
    noise = None
    if meta.get("gmm"):
        noise = exact_noise(GaussianMixture.from_dict(meta["gmm"]), test_x, train_x, n,
                                           params.eval.n_projections, params.seed)
    long, pivot = tables(rows)
    nll_line = f"ODE NLL {nll['nll']:.4f} nats ({nll['n']} test points, {nll['nfe']:.0f} NFE)"
    if "gap" in nll:
        nll_line += (f", exact {nll['nll_exact']:.4f}, gap {nll['gap']:+.4f} "
                     f"(mean |Δ log p| per point {nll['abs_err_per_point']:.4f})")
    if noise is not None:
        e = noise
        nll_line += (f"\nSW₂ of {n} exact mixture samples to the test split ({e['repeats']} draws): "
                     f"{e['swd_mean']:.4f} ± {e['swd_sd']:.4f} (range {e['swd_min']:.4f}–{e['swd_max']:.4f})")
    seconds = time.perf_counter() - start
    print(f"\n{meta['name']} data ({where}); {about}\n{nll_line}\n\n{long}\n\n{pivot}\n\n"
          f"{n} samples per run, {torch.get_num_threads()} thread(s); {seconds:.0f} s in all "
          f"(likelihood {nll['seconds']:.0f} s, sampling {sampling_seconds:.0f} s)")
    report = {"date": date.today().isoformat(), "threads": torch.get_num_threads(), "seed": params.seed,
              "n_samples": n, "data": where, "model": info, "nll": nll, "exact_samples": noise, "rows": rows,
              "seconds": seconds,
              "sampling_seconds": sampling_seconds,
              "sampler_params": to_dict(params.sampler), "table": long, "swd_table": pivot}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
