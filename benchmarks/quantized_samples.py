"""Samples written on the data's grid or left continuous: the same draws scored both ways.

params `sampler.quantize` (default true) rounds image samples of quantised data (the digits: 17
levels) to the nearest level, as real examples are written (`sbm.core.units.quantize`, eq. 8). This
script measures what that does on one trained model: each sampling seed draws once with params'
sampler at each NFE budget, and the *same* samples are scored continuous (clamped to the data's range,
`sampler.quantize: false`) and quantised, on the calibrated evaluator's features (FID, KID,
precision/recall against the test split, n = the training split's size by default), next to the
floor. Each row also checks that rounding does not turn samples into copies of the training data
(`sbm.eval.distances.memorisation`, eq. 3: the fraction of samples equal to a training example next
to the test split's own, and the median nearest-training-example distance over the test split's).

    python benchmarks/quantized_samples.py                       # the pipeline's model, params' sampler
    python benchmarks/quantized_samples.py --nfe 10,20 --seeds 3 --threads 2

Prints one table and writes reports/benchmarks/quantized_samples.json (`--out`).
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

from sbm.config.params import load_params  # noqa: E402
from sbm.eval.distances import memorisation  # noqa: E402
from sbm.eval.spread import seed_range, summary  # noqa: E402
from sbm.eval.sweep import draw, settings_for_nfe  # noqa: E402
from sbm.latent.vae import decode_samples  # noqa: E402
from sbm.models.score import load_model  # noqa: E402
from sbm.pipeline.measured import load_model_measured  # noqa: E402
from sbm.pipeline.prepared import sample_format  # noqa: E402
from sbm.pipeline.stage import USER_ERRORS  # noqa: E402

FORMATS = ("continuous", "quantised")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="sampler and evaluator settings, seed")
    ap.add_argument("--data", default=str(ROOT / "data" / "prepared"), help="the prepared data (stage prepare)")
    ap.add_argument("--space", default=None, help="a latent model's space directory; omit for a pixel model")
    ap.add_argument("--model", default=str(ROOT / "data" / "models" / "score.safetensors"))
    ap.add_argument("--evaluator", default=str(ROOT / "data" / "models" / "evaluator"))
    ap.add_argument("--nfe", default="10,20", help="NFE budgets of params' sampler, comma-separated")
    ap.add_argument("--n", type=int, default=None, help="samples per seed (default: the training split's size)")
    ap.add_argument("--seeds", type=int, default=None, help="sampling seeds (default params eval.seeds)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "quantized_samples.json"))
    args = ap.parse_args(argv)
    try:
        args.nfe = [int(v) for v in args.nfe.split(",") if v.strip()]
    except ValueError:
        ap.error(f"--nfe {args.nfe!r}: comma-separated integers, e.g. 10,20")
    if not args.nfe or min(args.nfe) < 1:
        ap.error("--nfe: at least one budget, each >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        params = load_params(args.params)
        model, _ = load_model(args.model)
        d = load_model_measured(args.data, args.space, args.evaluator, need_evaluator="quantized_samples",
                                quantize=False)
    except USER_ERRORS as err:
        sys.exit(f"quantized_samples: {' '.join(str(err).split())}")
    if not d.meta.get("n_levels") or len(d.meta["shape"]) != 3:
        sys.exit(f"quantized_samples: {args.data} holds no quantised images (meta n_levels, shape {d.meta['shape']})")
    n = min(args.n or len(d.train), len(d.train))
    seeds = list(seed_range(params.seed, args.seeds or params.eval.seeds))
    meter = d.meter(params.evaluator, params.seed)
    floor = meter.floor(d.train, n)
    fmt = {f: sample_format(d.meta, quantize=f == "quantised") for f in FORMATS}
    print(f"quantized_samples: n = {n} against {len(d.test)} test examples, seeds {seeds}, floor FID "
          f"{floor['fid']:.3f}", flush=True)
    rows = []
    for nfe in args.nfe:
        cfg = settings_for_nfe(params.sampler, params.sampler.name, nfe, len(model.process.grid()))
        per_seed = {f: [] for f in FORMATS}
        actual = None
        for seed in seeds:
            z, actual, _ = draw(model, cfg, n, d.shape, seed=seed,
                                data_range=d.meta["value_range"] if d.vae is None else None)
            for f in FORMATS:
                x = decode_samples(d.vae, z, **fmt[f])
                per_seed[f].append({**meter(x), **memorisation(x, d.train, d.test)})
        for f in FORMATS:
            stats = {k: summary([s[k] for s in per_seed[f]]) for k in per_seed[f][0]}
            rows.append({"sampler": params.sampler.name, "nfe": actual, "format": f, "per_seed": per_seed[f],
                         **stats, "fid_over_floor": stats["fid"]["mean"] / floor["fid"]})
            r = rows[-1]
            print(f"  {params.sampler.name} NFE {actual:3d} {f:10s}: FID {r['fid']['mean']:.3f} "
                  f"± {r['fid'].get('sd', 0.0):.2g} ({r['fid_over_floor']:.3f}x floor), precision "
                  f"{r['precision']['mean']:.3f}, recall {r['recall']['mean']:.3f}, copies {r['copies']['mean']:.4f} "
                  f"(test {r['copies_floor']['mean']:.4f}), nn_ratio {r['nn_ratio']['mean']:.3f}", flush=True)
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "n": n, "n_test": len(d.test),
              "seeds": seeds, "threads": torch.get_num_threads(), "seconds": time.perf_counter() - start,
              "n_levels": d.meta["n_levels"], "value_range": d.meta["value_range"], "floor": floor,
              "sampler": dataclasses.asdict(params.sampler), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out} ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
