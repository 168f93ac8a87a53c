"""Samplers at matched NFE, and the probability-flow ODE likelihood against the exact one.

On the default Gaussian mixture (params `data`), with the score model the pipeline trains
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

from sbm.config.params import SAMPLERS, load_params, to_dict
from sbm.core.gmm import GaussianMixture
from sbm.core.likelihood import dataset_nll
from sbm.core.losses import build_loss
from sbm.core.model import ScoreModel
from sbm.core.processes import build_process
from sbm.eval.distances import distance_report
from sbm.eval.sweep import compare_samplers, settings_for_nfe
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
                     config_for_fingerprint={"loss": params.loss, "model": model.to_config()})
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
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "samplers_nll.json"))
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    params = load_params(args.params)
    steps_train = args.steps_train or (min(params.train.steps, 1000) if args.quick else params.train.steps)
    params = dataclasses.replace(
        params, seed=params.seed if args.seed is None else args.seed,
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
