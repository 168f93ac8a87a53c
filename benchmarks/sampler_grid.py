"""Samplers × time grids × NFE on one trained model, scored by the calibrated evaluator.

The stage `compare_samplers` compares samplers on params' own `sampler.schedule`; this script
adds the schedule (`sbm.core.schedules`: uniform, karras, logsnr) as a second axis, and runs on
any trained model — the pipeline's own, the pixel model `peer_diffusers.py --save-pixel-model`
writes, or a latent model with its space directory — so "which space, which solver, which grid"
is answered with the same meter (`sbm.eval.sweep.compare_samplers`: FID, KID, precision/recall
against the test split, mean ± sd over sampling seeds, next to the real-vs-real floor at the same n).

    python benchmarks/sampler_grid.py --model data/models/score.safetensors --space data/latent \
        --samplers euler_maruyama,dpmpp_2m,unipc --nfe 10,20,50 --schedules uniform,karras

Prints one table and writes reports/benchmarks/sampler_grid.json (`--out`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sbm.config.params import SCHEDULES, load_params, to_dict  # noqa: E402
from sbm.eval.spread import seed_range  # noqa: E402
from sbm.eval.sweep import compare_samplers  # noqa: E402
from sbm.models.score import load_model  # noqa: E402
from sbm.pipeline.measured import load_model_measured  # noqa: E402
from sbm.pipeline.stage import USER_ERRORS  # noqa: E402


def csv(kind):
    return lambda text: [kind(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="sampler settings, evaluator settings, seed")
    ap.add_argument("--data", default=str(ROOT / "data" / "prepared"), help="the prepared data (stage prepare)")
    ap.add_argument("--space", default=None, help="the model's space directory (stage train_vae); "
                                                   "omit for a pixel-space model")
    ap.add_argument("--model", default=str(ROOT / "data" / "models" / "score.safetensors"))
    ap.add_argument("--evaluator", default=str(ROOT / "data" / "models" / "evaluator"))
    ap.add_argument("--samplers", type=csv(str), default=["euler_maruyama", "dpmpp_2m", "unipc"])
    ap.add_argument("--nfe", type=csv(int), default=[10, 20, 50], help="NFE budgets")
    ap.add_argument("--schedules", type=csv(str), default=["uniform"], help=f"of {', '.join(SCHEDULES)}")
    ap.add_argument("--n", type=int, default=None, help="samples per run and seed (default: the training split)")
    ap.add_argument("--seeds", type=int, default=None, help="sampling seeds (default params eval.seeds)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "sampler_grid.json"))
    args = ap.parse_args(argv)
    if bad := [s for s in args.schedules if s not in SCHEDULES]:
        ap.error(f"--schedules: unknown {', '.join(bad)}; allowed: {', '.join(SCHEDULES)}")
    return args


def portable(path: str | None) -> str | None:
    """A path relative to the repository where it lies inside it (no machine paths in reports/)."""
    if path is None:
        return None
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name


def fmt(entry: dict | float | None) -> str:
    if entry is None:
        return "-"
    if not isinstance(entry, dict):
        return f"{entry:.4g}"
    sd = entry.get("sd")
    return f"{entry['mean']:.4g}" + (f" ± {sd:.2g}" if sd is not None else "")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        params = load_params(args.params)
        model, _ = load_model(args.model)
        d = load_model_measured(args.data, args.space, args.evaluator, need_evaluator="sampler_grid",
                                quantize=params.sampler.quantize)
        kind = "pixel" if d.vae is None else "latent"
    except USER_ERRORS as err:
        sys.exit(f"sampler_grid: {' '.join(str(err).split())}")
    n = min(args.n or len(d.train), len(d.train))
    seeds = seed_range(params.seed, args.seeds or params.eval.seeds)
    meter = d.meter(params.evaluator, params.seed)
    print(f"sampler_grid: a {kind}-space model, n = {n} against {len(d.test)} test examples, seeds {list(seeds)}, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    rows = []
    for schedule in args.schedules:
        base = dataclasses.replace(params.sampler, schedule=schedule)
        for r in compare_samplers(model, base, args.samplers, args.nfe, test=d.test, reference=d.train, n=n,
                                  n_projections=params.eval.n_projections, seed=params.seed, seeds=seeds,
                                  shape=d.shape, quality=meter, decode=d.decode, progress=False,
                                  data_range=d.meta.get("value_range") if d.vae is None else None):
            rows.append({"schedule": schedule, **r})
            ratio = r["fid"]["mean"] / r["fid_floor"] if "fid" in r else None
            print(f"  {r['sampler']:15s} {schedule:8s} NFE {r['nfe']:3d}: FID {fmt(r.get('fid'))}"
                  + (f" = {ratio:.2f}x floor" if ratio else " (non-finite samples)")
                  + f"; precision {fmt(r.get('precision'))}, recall {fmt(r.get('recall'))}", flush=True)
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "space": kind, "n": n,
              "n_test": len(d.test), "seeds": list(seeds), "threads": torch.get_num_threads(),
              "seconds": time.perf_counter() - start,
              "paths": {k: portable(getattr(args, k)) for k in ("params", "data", "space", "model", "evaluator")},
              "sampler": to_dict(params.sampler), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out} ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
