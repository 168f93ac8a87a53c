"""GPU check: train and sample the image pipeline's score model with a real-sized U-Net on one GPU,
and print the throughput. Run through benchmarks/gpu_check.sh (which refuses without CUDA).

    python benchmarks/gpu_check.py [--profile profiles/cifar10.yaml] [--steps 400] [--warmup 50]
                                   [--n-samples 256] [--out reports/benchmarks/gpu_check.json]
    python benchmarks/gpu_check.py --cpu-dry-run --out /tmp/gpu_check.json    # the same code, tiny, on CPU

What it runs (the code paths of stages prepare → train_score → sample, pixel space):

1. Data: scripts/make_synthetic_rgb.py writes `--n-images` synthetic 32×32 RGB images to a
   temporary directory; `sbm.pipeline.data.prepare` reads them as the profile's data.hf block
   says (data.hf.path replaced by that directory): (N, 3, 32, 32) in [-1, 1].
2. Training: the profile's network (default profiles/cifar10.yaml: the DDPM CIFAR-10 U-Net,
   ≈ 36 M parameters) and its `train` settings (batch, lr, mixed precision bf16) with
   `train.steps = --steps`, through `sbm.train.loop.train` (accelerate: the GPU when there is
   one). Throughput: images/s = batch × (steps − warmup) / the wall time between the end of
   step `--warmup` and the last step (CUDA synchronised at both ends).
3. Sampling: `--n-samples` samples in one batch with the profile's sampler (params `sampler`:
   default Euler–Maruyama, 50 steps) from the EMA model on the same device, float32, the
   sampler functions of `sbm.core.samplers` with x_T moved to the device (stage sample's `draw`
   keeps everything on the CPU). Throughput: samples/s and network evaluations (NFE).

Prints a summary line per part and writes the numbers (device, versions, settings, peak GPU
memory) to `--out` as JSON. `--cpu-dry-run`: profiles/synthetic_rgb32.yaml's tiny U-Net, 3
steps, 4 samples at 3 steps, on the CPU; it checks the code path, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sbm.config.profiles import load_profile, merge, validate  # noqa: E402
from sbm.core.losses import build_loss  # noqa: E402
from sbm.core.model import ScoreModel  # noqa: E402
from sbm.core.processes import build_process  # noqa: E402
from sbm.core.samplers import build_sampler, initial_state, schedule_for  # noqa: E402
from sbm.nets.score import build_net  # noqa: E402
from sbm.pipeline.data import prepare  # noqa: E402
from sbm.pipeline.prepared import load_meta, load_split  # noqa: E402
from sbm.train.loop import train  # noqa: E402


def _synthetic_module():
    spec = importlib.util.spec_from_file_location("make_synthetic_rgb", ROOT / "scripts" / "make_synthetic_rgb.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_dry_run else "cpu")
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    _synthetic_module().write(work / "images", n=args.n_images, size=32, seed=0)
    profile = merge(load_profile(args.profile), {"data": {"hf": {"path": str(work / "images")}}})
    params = validate(profile, args.params, source=str(args.profile))
    if params.data.name != "hf" or params.score.space != "pixel":
        raise SystemExit(f"gpu_check: {args.profile} must set data.name = hf and score.space = pixel")
    meta = prepare(params.data, params.seed, work / "prepared")
    x, _ = load_split(work / "prepared", "train")
    meta = load_meta(work / "prepared")
    if list(x.shape[1:]) != [3, 32, 32]:
        raise SystemExit(f"gpu_check: the profile's data came out {list(x.shape[1:])}, expected [3, 32, 32]")

    torch.manual_seed(params.seed)
    process = build_process(params.process, meta)
    model = ScoreModel(build_net(params.model, meta["shape"]), process, params.model.prediction, float(x.std()))
    loss_fn = build_loss(params.loss, params.objective, meta["dim"])
    n_params = sum(p.numel() for p in model.net.parameters())
    cfg = dataclasses.replace(params.train, steps=args.steps, warmup_steps=min(params.train.warmup_steps, args.steps),
                              checkpoint_every=args.steps, log_every=min(params.train.log_every, args.steps))
    marks: dict[int, float] = {}

    def clock(net: torch.nn.Module, step: int) -> None:  # step: 0-based, after the optimizer step
        if step + 1 in (args.warmup, args.steps):
            _sync(device)
            marks[step + 1] = time.perf_counter()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    print(f"gpu_check: training {args.steps} steps of {n_params / 1e6:.1f} M parameters, batch {cfg.batch_size}, "
          f"mixed precision {cfg.mixed_precision}, on {device}", flush=True)
    t0 = time.perf_counter()
    ema, result = train(model, loss_fn, x, cfg, seed=params.seed, ckpt_dir=work / "ckpt", progress=False,
                        after_step=clock)
    train_wall = time.perf_counter() - t0
    timed = args.steps - args.warmup
    train_s = marks[args.steps] - marks[args.warmup]
    training = {"steps": args.steps, "warmup_steps_untimed": args.warmup, "batch_size": cfg.batch_size,
                "mixed_precision": cfg.mixed_precision, "timed_seconds": round(train_s, 4),
                "images_per_s": round(cfg.batch_size * timed / train_s, 2), "ms_per_step": round(1000 * train_s / timed, 3),
                "wall_seconds": round(train_wall, 2), "final_loss": result.final_loss,
                "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None}
    print(f"gpu_check: training {training['images_per_s']:.1f} images/s ({training['ms_per_step']:.1f} ms/step, "
          f"steps {args.warmup + 1}..{args.steps}), final loss {result.final_loss:.4g}", flush=True)

    scfg = params.sampler if args.sample_steps is None else dataclasses.replace(params.sampler, steps=args.sample_steps)
    net = ema.to(device).eval()
    sampler, schedule = build_sampler(scfg), schedule_for(scfg, net.process)
    rates = []
    for repeat in range(args.sample_repeats + 1):  # the first draw is a warm-up
        g = torch.Generator().manual_seed(params.seed + repeat)
        x_T = initial_state(scfg, net.process, (args.n_samples, *meta["shape"]), data_range=meta.get("value_range"),
                            generator=g).to(device)
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = sampler(net, x_T, schedule, generator=g, progress=False)
        _sync(device)
        if repeat:
            rates.append(args.n_samples / (time.perf_counter() - t0))
    finite = bool(torch.isfinite(out.x).all())
    sampling = {"sampler": scfg.name, "steps": scfg.steps, "nfe": out.nfe, "n_samples": args.n_samples,
                "samples_per_s": round(max(rates), 3), "repeats": args.sample_repeats, "finite": finite}
    print(f"gpu_check: sampling {sampling['samples_per_s']:.2f} samples/s ({scfg.name}, NFE {out.nfe}, "
          f"batch {args.n_samples}; finite: {finite})", flush=True)
    return {"profile": str(args.profile), "cpu_dry_run": bool(args.cpu_dry_run), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "n_params": n_params, "unet": dataclasses.asdict(params.model.unet),
            "n_images": args.n_images, "training": training, "sampling": sampling,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None, help="default profiles/cifar10.yaml (dry run: profiles/synthetic_rgb32.yaml)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 400; dry run 3)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 50; dry run 1)")
    ap.add_argument("--n-images", type=int, default=2048, help="synthetic training images")
    ap.add_argument("--n-samples", type=int, default=None, help="samples in the timed batch (default 256; dry run 4)")
    ap.add_argument("--sample-steps", type=int, default=None, help="sampler steps (default: the profile's sampler.steps)")
    ap.add_argument("--sample-repeats", type=int, default=2, help="timed draws after one warm-up draw (best counts)")
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny run on the CPU: checks the code path only")
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "gpu_check.json"))
    args = ap.parse_args(argv)
    dry = args.cpu_dry_run
    args.profile = args.profile or str(ROOT / "profiles" / ("synthetic_rgb32.yaml" if dry else "cifar10.yaml"))
    args.steps = args.steps or (3 if dry else 400)
    args.warmup = args.warmup if args.warmup is not None else (1 if dry else 50)
    args.n_samples = args.n_samples or (4 if dry else 256)
    if dry:
        args.n_images, args.sample_repeats = min(args.n_images, 64), 1
        args.sample_steps = args.sample_steps or 3
    if not 1 <= args.warmup < args.steps:
        ap.error(f"--warmup {args.warmup}: must be >= 1 and below --steps {args.steps}")
    if not dry and not torch.cuda.is_available():
        sys.exit(f"gpu_check: no CUDA device visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}); "
                 "this check needs a GPU and a CUDA build of torch (--cpu-dry-run checks the code path on the CPU)")
    out = run(args)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"gpu_check: wrote {path}")


if __name__ == "__main__":
    main()
