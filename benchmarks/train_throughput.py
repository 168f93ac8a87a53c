"""Training throughput: the project's loop (`sbm.train.train`) against a plain PyTorch loop.

Both loops train the same network (a fresh copy, same initial weights), with the same
optimizer (AdamW, lr and weight decay of params `train`), batch size, gradient clipping
and loss (params `loss`, default dsm over the noise process's levels), in the same process
on the same device, after a warm-up of each. The plain loop is the minimum::

    idx = randint(n, (B,)); loss = loss_fn(model, x[idx]).mean()
    opt.zero_grad(); loss.backward(); clip_grad_norm_(...); opt.step()

The project's loop adds what the pipeline needs: accelerate (device placement, DDP, mixed
precision, gradient accumulation), the per-epoch permutation batches, per-step seeding,
the learning-rate warm-up, the EMA, the logged loss (dvclive, every `log_every` steps) and
one checkpoint at the end. Its cost over the plain loop is reported and must stay ≤ 10 %.

Repeats alternate the two loops (and which goes first); each loop's best run is its rate
(as `timeit` does: on a shared machine the other runs measure the neighbours), medians are
reported too. Prints a table; writes reports/benchmarks/train_throughput.json.

    python benchmarks/train_throughput.py                      # MLP on the 2-D mixture
    python benchmarks/train_throughput.py --threads 1 --steps 1000 --repeats 5
    python benchmarks/train_throughput.py --net mlp --batch-size 4096

`--net` picks the network from NETS (extend it with the image U-Net when it exists).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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

from sbm.config import load_params  # noqa: E402
from sbm.gmm import GaussianMixture  # noqa: E402
from sbm.losses import build_loss  # noqa: E402
from sbm.models import ScoreModel  # noqa: E402
from sbm.nets import MLPNet  # noqa: E402
from sbm.processes import NCSNLadder  # noqa: E402
from sbm.train import make_optimizer, train  # noqa: E402

BUDGET = 0.10  # the project's loop may cost at most 10 % over the plain loop


def _mlp_setup(params, n: int, seed: int):
    """The default pipeline's case: the residual MLP on the 2-D Gaussian mixture of params `data`."""
    g = params.data.gmm
    x, _ = GaussianMixture(g.weights, g.means, g.covs).sample(n, generator=torch.Generator().manual_seed(seed))
    sigma_max = float(torch.cdist(x[:2000], x[:2000]).max())
    process = NCSNLadder(params.process.sigma_min, sigma_max, params.process.n_levels)
    m = params.model

    def make_model() -> ScoreModel:
        torch.manual_seed(seed)
        return ScoreModel(MLPNet(2, m.hidden, m.depth, m.embedding_dim), process, m.prediction, float(x.std()))

    return x, make_model, 2


# name -> (params, n examples, seed) -> (data (N, ...), make_model(), numel per example)
NETS: dict[str, Callable] = {"mlp": _mlp_setup}


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
    """Seconds of `sbm.train.train`'s loop for `steps` steps (fresh checkpoint folder)."""
    cfg = dataclasses.replace(cfg, steps=steps, checkpoint_every=steps)
    with tempfile.TemporaryDirectory() as tmp:
        _, result = train(make_model(), loss_fn, x, cfg, seed=0, ckpt_dir=Path(tmp) / "ckpt",
                          live_dir=Path(tmp) / "live" if live else None, progress=False)
    return result.seconds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", choices=sorted(NETS), default="mlp", help="network and data (default: mlp)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="model/train/loss settings")
    ap.add_argument("--batch-size", type=int, default=None, help="default: params train.batch_size")
    ap.add_argument("--steps", type=int, default=500, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=50, help="untimed steps of each loop first")
    ap.add_argument("--repeats", type=int, default=5, help="alternating plain/project runs; best compared")
    ap.add_argument("--n", type=int, default=20000, help="training examples")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--no-live", action="store_true", help="the project's loop without dvclive logging")
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "train_throughput.json"))
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    cfg = params.train
    if args.batch_size:
        cfg = dataclasses.replace(cfg, batch_size=args.batch_size)
    x, make_model, dim = NETS[args.net](params, args.n, params.seed)
    loss_fn = build_loss(params.loss, params.objective, dim)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # what accelerate picks

    plain_loop(make_model, loss_fn, x, cfg, args.warmup, device)
    project_loop(make_model, loss_fn, x, cfg, args.warmup, not args.no_live)
    times: dict[str, list[float]] = {"plain": [], "project": []}
    runners = {"plain": lambda: plain_loop(make_model, loss_fn, x, cfg, args.steps, device),
               "project": lambda: project_loop(make_model, loss_fn, x, cfg, args.steps, not args.no_live)}
    for r in range(args.repeats):
        for name in (("plain", "project") if r % 2 == 0 else ("project", "plain")):
            times[name].append(runners[name]())

    rate = {k: args.steps / min(v) for k, v in times.items()}
    median_rate = {k: args.steps / statistics.median(v) for k, v in times.items()}
    overhead = rate["plain"] / rate["project"] - 1
    n_params = sum(p.numel() for p in make_model().net.parameters())
    report = {
        "net": args.net, "n_params": n_params, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "loss": params.loss,
        "batch_size": cfg.batch_size, "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
        "log_every": cfg.log_every, "dvclive": not args.no_live,
        "plain": {"steps_per_s": rate["plain"], "median_steps_per_s": median_rate["plain"], "seconds": times["plain"]},
        "project": {"steps_per_s": rate["project"], "median_steps_per_s": median_rate["project"],
                    "seconds": times["project"]},
        "overhead": overhead, "median_overhead": median_rate["plain"] / median_rate["project"] - 1,
        "budget": BUDGET, "within_budget": overhead <= BUDGET,
    }
    rows = [("plain PyTorch loop", "plain"), ("sbm.train.train", "project")]
    print(f"{args.net} ({n_params} parameters), {params.loss}, batch {cfg.batch_size}, {args.steps} steps × "
          f"{args.repeats} repeats on {device} ({torch.get_num_threads()} threads)")
    print(f"{'loop':<20} {'steps/s':>9} {'ms/step':>8} {'median steps/s':>15}   runs (s)")
    for label, key in rows:
        r = rate[key]
        print(f"{label:<20} {r:9.1f} {1e3 / r:8.3f} {median_rate[key]:15.1f}   "
              f"{' '.join(f'{t:.2f}' for t in times[key])}")
    print(f"overhead of sbm.train.train: {100 * overhead:+.1f} % best-of-{args.repeats} "
          f"({100 * report['median_overhead']:+.1f} % median; budget {100 * BUDGET:.0f} %) -> "
          f"{'OK' if overhead <= BUDGET else 'OVER BUDGET'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
