"""Throughput: the project's training loop (`sbm.train.loop.train`) against a plain PyTorch loop, and
DDIM sampling speed, for the MLP (2-D points) and the diffusers U-Net (1×8×8 digit images).

Training. Both loops train the same network (a fresh copy, same initial weights), with the
same optimizer (AdamW, lr and weight decay of params `train`), batch size, gradient clipping
and loss (params `loss`, default dsm, over params `process`), in the same process on the same
device, after a warm-up of each. The plain loop is the minimum::

    idx = randint(n, (B,)); loss = loss_fn(model, x[idx]).mean()
    opt.zero_grad(); loss.backward(); clip_grad_norm_(...); opt.step()

The project's loop adds what the pipeline needs: accelerate (device placement, DDP, mixed
precision, gradient accumulation), the per-epoch permutation batches, per-step seeding,
the learning-rate warm-up, the EMA, the logged loss (dvclive, every `log_every` steps) and
one checkpoint at the end. Its cost over the plain loop is reported and must stay ≤ 10 %.

Repeats alternate the two loops (and which goes first); each loop's best run is its rate
(as `timeit` does: on a shared machine the other runs measure the neighbours), medians are
reported too.

Networks (`--net`):

- `mlp`: the default pipeline's case, `MLPNet` of params `model` on 20000 draws of the 2-D
  Gaussian mixture of params `data`; batch params `train.batch_size` (512).
- `unet`: `UNetNet` (a diffusers UNet2DModel) on the 1797 scikit-learn digits as (1, 8, 8)
  images in [-1, 1] (`--images random`: N(0, 1) images instead); channels `--unet-channels`
  (default 32,64), the other settings from params `model.unet` (2 ResNet blocks per level,
  attention at the 4×4 level and in the bottleneck, 16 GroupNorm groups); batch 128.
  Its process is params `process` with σ_max = the max pairwise distance of the images.

Sampling. Samples per second of the DDIM sampler (`--sample-steps` 50: 49 steps and the final
denoise, 50 network evaluations) through `sbm.eval.sweep.draw`, with an *untrained* model of
each network (the cost does not depend on the weights): 5000 points of the MLP in one batch
(params `sampler.batch_size`), 256 images of the U-Net in one batch. Best of `--sample-repeats`
after one warm-up draw.

Prints tables; merges the results into reports/benchmarks/train_throughput.json (one entry
per net, so `--net unet` keeps the MLP's) and writes the markdown summary
reports/benchmarks/train_throughput.md from it.

    python benchmarks/train_throughput.py                      # both nets, training and sampling
    python benchmarks/train_throughput.py --net mlp --threads 1 --steps 1000 --repeats 5
    python benchmarks/train_throughput.py --net unet --no-sampling
    python benchmarks/train_throughput.py --sampling-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sbm.config.params import load_params
from sbm.core.gmm import GaussianMixture
from sbm.core.losses import build_loss
from sbm.core.model import ScoreModel
from sbm.core.processes import build_process
from sbm.core.tensor import max_pairwise_distance
from sbm.eval.sweep import draw
from sbm.nets.score import MLPNet, UNetNet
from sbm.train.loop import make_optimizer, train

BUDGET = 0.10  # the project's loop may cost at most 10 % over the plain loop
OUT = ROOT / "reports" / "benchmarks" / "train_throughput.json"


@dataclasses.dataclass
class Setup:
    x: torch.Tensor  # training data (N, ...)
    make_model: Callable[[], ScoreModel]  # a fresh model, same initial weights every call
    dim: int  # numel per example
    data: str  # what x is, in words
    batch_size: int | None  # default training batch (None: params train.batch_size)
    steps: int  # default timed steps per run
    warmup: int  # default untimed steps of each loop
    sample_n: int  # samples drawn (one batch) in the sampling benchmark
    sample_unit: str


def _process(params, x: torch.Tensor):
    """params `process`, σ_max = null resolved as the prepare stage does (max pairwise distance)."""
    return build_process(params.process, {"sigma_max": max_pairwise_distance(x[:5000])})


def _mlp_setup(params, args) -> Setup:
    """The default pipeline's case: the residual MLP on the 2-D Gaussian mixture of params `data`."""
    g = params.data.gmm
    x, _ = GaussianMixture(g.weights, g.means, g.covs).sample(args.n or 20000,
                                                              generator=torch.Generator().manual_seed(params.seed))
    process = _process(params, x)
    m = params.model

    def make_model() -> ScoreModel:
        torch.manual_seed(params.seed)
        return ScoreModel(MLPNet(2, m.hidden, m.depth, m.embedding_dim), process, m.prediction, float(x.std()))

    return Setup(x, make_model, 2, f"{len(x)} points of the 2-D mixture", None, 500, 50,
                 params.sampler.batch_size, "points")


def _unet_setup(params, args) -> Setup:
    """The diffusers U-Net on digit-sized (1, 8, 8) images."""
    if args.images == "digits":
        from sklearn.datasets import load_digits

        x = torch.from_numpy(load_digits().data / 16.0 * 2.0 - 1.0).float().reshape(-1, 1, 8, 8)
        what = f"{len(x)} scikit-learn digits, 1×8×8"
    else:
        x = torch.randn(args.n or 2000, 1, 8, 8, generator=torch.Generator().manual_seed(params.seed))
        what = f"{len(x)} random N(0, 1) images, 1×8×8"
    process = _process(params, x)
    m, u = params.model, params.model.unet
    channels = [int(c) for c in args.unet_channels.split(",")]
    attention = list(u.attention) if len(u.attention) == len(channels) else [False] * (len(channels) - 1) + [True]

    def make_model() -> ScoreModel:
        torch.manual_seed(params.seed)
        net = UNetNet(1, 8, 8, channels, u.layers_per_block, attention, u.mid_attention, u.norm_groups)
        return ScoreModel(net, process, m.prediction, float(x.std()))

    return Setup(x, make_model, 64, what, 128, 60, 10, 256, "images")


# name -> (params, args) -> Setup
NETS: dict[str, Callable] = {"mlp": _mlp_setup, "unet": _unet_setup}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(make_model, loss_fn, x: torch.Tensor, cfg, steps: int, device: torch.device) -> float:
    """Seconds for `steps` steps of the minimal loop (module docstring)."""
    model = make_model().to(device)
    x = x.to(device)
    opt = make_optimizer(model.net.parameters(), cfg)  # the very optimizer the project builds
    g = torch.Generator(device=device).manual_seed(0)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(x), (cfg.batch_size,), device=device, generator=g)
        loss = loss_fn(model, x[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.net.parameters(), cfg.grad_clip)
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def project_loop(make_model, loss_fn, x: torch.Tensor, cfg, steps: int, live: bool) -> float:
    """Seconds of `sbm.train.loop.train`'s loop for `steps` steps (fresh checkpoint folder)."""
    cfg = dataclasses.replace(cfg, steps=steps, checkpoint_every=steps)
    with tempfile.TemporaryDirectory() as tmp:
        _, result = train(make_model(), loss_fn, x, cfg, seed=0, ckpt_dir=Path(tmp) / "ckpt",
                          live_dir=Path(tmp) / "live" if live else None, progress=False)
    return result.seconds


def bench_training(name: str, setup: Setup, params, args, device: torch.device) -> dict:
    cfg = params.train
    batch = args.batch_size or setup.batch_size
    if batch:
        cfg = dataclasses.replace(cfg, batch_size=batch)
    steps, warmup = args.steps or setup.steps, args.warmup if args.warmup is not None else setup.warmup
    loss_fn = build_loss(params.loss, params.objective, setup.dim)
    mk, x = setup.make_model, setup.x

    plain_loop(mk, loss_fn, x, cfg, warmup, device)
    project_loop(mk, loss_fn, x, cfg, warmup, not args.no_live)
    times: dict[str, list[float]] = {"plain": [], "project": []}
    runners = {"plain": lambda: plain_loop(mk, loss_fn, x, cfg, steps, device),
               "project": lambda: project_loop(mk, loss_fn, x, cfg, steps, not args.no_live)}
    for r in range(args.repeats):
        for which in (("plain", "project") if r % 2 == 0 else ("project", "plain")):
            times[which].append(runners[which]())

    rate = {k: steps / min(v) for k, v in times.items()}
    median_rate = {k: steps / statistics.median(v) for k, v in times.items()}
    overhead = rate["plain"] / rate["project"] - 1
    n_params = sum(p.numel() for p in mk().net.parameters())
    report = {
        "net": name, "data": setup.data, "n_params": n_params, "process": params.process.name, "loss": params.loss,
        "batch_size": cfg.batch_size, "steps": steps, "warmup": warmup, "repeats": args.repeats,
        "log_every": cfg.log_every, "dvclive": not args.no_live,
        "plain": {"steps_per_s": rate["plain"], "median_steps_per_s": median_rate["plain"], "seconds": times["plain"]},
        "project": {"steps_per_s": rate["project"], "median_steps_per_s": median_rate["project"],
                    "seconds": times["project"]},
        "overhead": overhead, "median_overhead": median_rate["plain"] / median_rate["project"] - 1,
        "budget": BUDGET, "within_budget": overhead <= BUDGET,
    }
    print(f"\n{name}: {setup.data} ({n_params} parameters), {params.loss}, batch {cfg.batch_size}, "
          f"{steps} steps × {args.repeats} repeats on {device} ({torch.get_num_threads()} threads)")
    print(f"{'loop':<20} {'steps/s':>9} {'ms/step':>8} {'median steps/s':>15}   runs (s)")
    for label, key in (("plain PyTorch loop", "plain"), ("sbm.train.loop.train", "project")):
        r = rate[key]
        print(f"{label:<20} {r:9.2f} {1e3 / r:8.2f} {median_rate[key]:15.2f}   "
              f"{' '.join(f'{t:.2f}' for t in times[key])}")
    print(f"overhead of sbm.train.loop.train: {100 * overhead:+.1f} % best-of-{args.repeats} "
          f"({100 * report['median_overhead']:+.1f} % median; budget {100 * BUDGET:.0f} %) -> "
          f"{'OK' if overhead <= BUDGET else 'OVER BUDGET'}")
    return report


def bench_sampling(name: str, setup: Setup, params, args, device: torch.device) -> dict:
    model = setup.make_model().to(device).eval()
    n = setup.sample_n
    cfg = dataclasses.replace(params.sampler, name="ddim", steps=args.sample_steps, batch_size=n, eta=0.0)
    shape = tuple(setup.x.shape[1:])
    draw(model, dataclasses.replace(cfg, batch_size=min(n, 64)), min(n, 64), shape, seed=1)  # warm-up
    seconds, nfe = [], 0
    for r in range(args.sample_repeats):
        _sync(device)
        t0 = time.perf_counter()
        x, nfe, _ = draw(model, cfg, n, shape, seed=r)
        _sync(device)
        seconds.append(time.perf_counter() - t0)
        assert x.shape == (n, *shape)
    best, med = min(seconds), statistics.median(seconds)
    report = {"net": name, "sampler": "ddim", "eta": 0.0, "steps": args.sample_steps, "nfe": nfe,
              "denoise": cfg.denoise, "n": n, "batch_size": n, "shape": list(shape), "unit": setup.sample_unit,
              "seconds": seconds, "samples_per_s": n / best, "median_samples_per_s": n / med,
              "ms_per_nfe": 1e3 * best / nfe, "n_params": sum(p.numel() for p in model.net.parameters())}
    print(f"\nsampling {name}: ddim, {args.sample_steps} steps ({nfe} NFE), {n} "
          f"{_what(shape, setup.sample_unit)} in one batch: {n / best:.1f} {setup.sample_unit}/s best-of-"
          f"{args.sample_repeats} ({n / med:.1f} median; {1e3 * best / nfe:.2f} ms per network evaluation; "
          f"runs {' '.join(f'{s:.2f}' for s in seconds)} s)")
    return report


def _what(shape, unit: str) -> str:
    return f"{shape[0]}-D {unit}" if len(shape) == 1 else f"{'×'.join(map(str, shape))} {unit}"


def _load_previous(path: Path) -> dict:
    try:
        old = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return old if "training" in old else {}  # the older single-net layout is replaced


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# Throughput: training loop overhead and DDIM sampling speed",
        "",
        f"Generated by `benchmarks/train_throughput.py` on {report['date']}: {env['cpu_count']} CPU cores, "
        f"torch {env['torch']} ({env['threads']} threads), device {env['device']}. "
        "Numbers are best-of-N (medians in parentheses); the JSON next to this file has every run.",
        "",
        "## Training: `sbm.train.loop.train` vs a plain PyTorch loop",
        "",
        "Same network, initial weights, optimizer, batch, clipping and loss; the project's loop adds "
        "accelerate, permutation batches, per-step seeding, lr warm-up, the EMA, dvclive logging and "
        f"a final checkpoint. Budget: at most {100 * BUDGET:.0f} % slower.",
        "",
        "| net | data | parameters | batch | steps × repeats | plain steps/s | project steps/s | overhead | "
        "verdict |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|:--|",
    ]
    for name, t in report["training"].items():
        lines.append(
            f"| {name} | {t['data']} | {t['n_params']:,} | {t['batch_size']} | {t['steps']} × {t['repeats']} | "
            f"{t['plain']['steps_per_s']:.2f} ({t['plain']['median_steps_per_s']:.2f}) | "
            f"{t['project']['steps_per_s']:.2f} ({t['project']['median_steps_per_s']:.2f}) | "
            f"{100 * t['overhead']:+.1f} % ({100 * t['median_overhead']:+.1f} %) | "
            f"{'within budget' if t['within_budget'] else '**over budget**'} |")
    if report.get("sampling"):
        lines += [
            "",
            "## Sampling: DDIM, untrained models (the cost does not depend on the weights)",
            "",
            "| net | samples | one batch of | steps | NFE | samples/s | ms per network evaluation |",
            "|:--|:--|--:|--:|--:|--:|--:|",
        ]
        for name, s in report["sampling"].items():
            lines.append(
                f"| {name} | {_what(s['shape'], s['unit'])} | {s['n']} | {s['steps']} | {s['nfe']} | "
                f"{s['samples_per_s']:.1f} ({s['median_samples_per_s']:.1f}) | {s['ms_per_nfe']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", choices=[*sorted(NETS), "all"], default="all", help="network(s) (default: all)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="model/train/loss/process settings")
    ap.add_argument("--batch-size", type=int, default=None, help="default: mlp params train.batch_size, unet 128")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per run (default: mlp 500, unet 60)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps of each loop first (mlp 50, unet 10)")
    ap.add_argument("--repeats", type=int, default=5, help="alternating plain/project runs; best compared")
    ap.add_argument("--n", type=int, default=None, help="training examples (mlp 20000; unet --images random 2000)")
    ap.add_argument("--images", choices=["digits", "random"], default="digits", help="unet training images")
    ap.add_argument("--unet-channels", default="32,64", help="unet channels per level (default 32,64)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--no-live", action="store_true", help="the project's loop without dvclive logging")
    ap.add_argument("--no-sampling", action="store_true", help="training comparison only")
    ap.add_argument("--sampling-only", action="store_true", help="sampling throughput only")
    ap.add_argument("--sample-steps", type=int, default=50, help="DDIM steps (default 50)")
    ap.add_argument("--sample-repeats", type=int, default=3, help="timed draws per net (best reported)")
    ap.add_argument("--out", default=str(OUT), help="JSON (merged per net); the .md is written beside it")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # what accelerate picks
    out = Path(args.out)
    report = _load_previous(out)
    report.setdefault("training", {})
    report.setdefault("sampling", {})
    report.update({"date": time.strftime("%Y-%m-%d"), "environment": {
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
    }, "budget": BUDGET})

    for name in sorted(NETS) if args.net == "all" else [args.net]:
        setup = NETS[name](params, args)
        if not args.sampling_only:
            report["training"][name] = bench_training(name, setup, params, args, device)
        if not args.no_sampling:
            report["sampling"][name] = bench_sampling(name, setup, params, args, device)

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = out.with_suffix(".md")
    md.write_text(markdown(report))
    print(f"\nwrote {out} and {md}")
    return report


if __name__ == "__main__":
    main()
