"""The default training stage on one process and on two (DDP over gloo, CPU): loss curves and quality.

Runs `stages/train_score.py` with the repository's params (or --params) on the prepared data
twice, with the same global batch (`train.batch_size`):

1. `python stages/train_score.py ...`                                       (1 process)
2. `accelerate launch --multi_gpu --num_processes 2 --main_process_port 0 stages/train_score.py ...`
   with ACCELERATE_USE_CPU=true                                              (2 gloo processes)

Every output (model, checkpoints, dvclive folder, metrics JSON) goes to a temporary folder,
so the pipeline's files are untouched. The 2-process run must report `world_size` = 2 in
its metrics JSON (asserted). Then it reads both dvclive loss curves
(<live>/plots/metrics/loss.tsv) and evaluates both final (EMA) models against the exact
score of the Gaussian mixture (data/prepared/meta.json "gmm"): the relative score error
`sbm.eval.truth.score_error_per_level` at the model's sampling grid, capped to 20 levels
(as the evaluate stage does), `eval.n_score_points` points per level, seeded by `seed`.

Prints a table; writes reports/benchmarks/distributed_curve.json and the curves
(overlaid, and the per-level score error) to reports/benchmarks/distributed_loss.png.

    python benchmarks/distributed_curve.py                 # params' train.steps (4000)
    python benchmarks/distributed_curve.py --steps 1000    # quicker

Threads: neither run sets torch's thread count. `accelerate launch` (torch.distributed.run)
sets OMP_NUM_THREADS=1 per process when it is not set, so on 2 cores the 1-process run uses
2 threads and each of the 2 processes 1: the same cores either way.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sbm.config.params import load_params
from sbm.core.gmm import GaussianMixture
from sbm.eval.truth import score_error_per_level
from sbm.models.score import load_model
from sbm.pipeline.prepared import load_meta

STAGE = ROOT / "stages" / "train_score.py"
LAUNCH_2 = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "0"]
MAX_LEVELS = 20


def _launcher(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable]
    # `accelerate launch` of this environment, as the module (the same as the console script);
    # the explicit defaults only silence accelerate's "not specified" warnings
    return [sys.executable, "-m", "accelerate.commands.launch", *LAUNCH_2[2:], "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no"]


def run_stage(processes: int, params_file: Path, data_dir: Path, work: Path) -> dict:
    """One run of the training stage into `work`; -> its metrics JSON, wall time, paths."""
    work.mkdir(parents=True, exist_ok=True)
    paths = {"out": work / "score.safetensors", "checkpoints": work / "checkpoints", "live": work / "live",
             "metrics": work / "train_score.json"}
    cmd = [*_launcher(processes), str(STAGE), "--params", str(params_file), "--data", str(data_dir),
           *(a for k, v in paths.items() for a in (f"--{k}", str(v)))]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    if processes > 1:
        env["ACCELERATE_USE_CPU"] = "true"  # gloo on CPU, even where a GPU exists
    shown = " ".join(LAUNCH_2 if processes > 1 else ["python"]) + " stages/train_score.py"
    print(f"[{processes} process{'es' if processes > 1 else ''}] {shown} ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (work / "stdout.log").write_text(proc.stdout)
    (work / "stderr.log").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    metrics = json.loads(paths["metrics"].read_text())
    if metrics.get("world_size") != processes:
        raise SystemExit(f"{processes}-process run reports world_size = {metrics.get('world_size')} "
                         f"(launcher did not start {processes} cooperating processes)")
    return {"result": metrics, "wall_seconds": wall, "command": shown, "paths": {k: str(v) for k, v in paths.items()}}


def read_curve(live_dir: Path) -> tuple[list[int], list[float]]:
    with open(live_dir / "plots" / "metrics" / "loss.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [int(float(r["step"])) for r in rows], [float(r["loss"]) for r in rows]


def score_errors(model_path: Path, gmm: GaussianMixture, n_points: int, seed: int) -> list[dict]:
    model, _ = load_model(model_path)
    levels = model.process.grid()
    if len(levels) > MAX_LEVELS:
        levels = model.process.grid(MAX_LEVELS)
    with torch.no_grad():
        return score_error_per_level(model, gmm, levels, n_points, torch.Generator().manual_seed(seed))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def plot(runs: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.5))
    style = {"1": dict(color="C0", lw=1.4), "2": dict(color="C3", lw=1.2, ls="--")}
    for key, r in runs.items():
        label = f"{key} process{'es' if key != '1' else ''} (final {r['final_loss']:.4f})"
        ax1.plot(r["curve"]["step"], r["curve"]["loss"], label=label, **style[key])
        ax2.plot(r["curve"]["step"], r["curve"]["loss"], label=label, **style[key])
        ax2.axhline(r["loss_mean_second_half"], color=style[key]["color"], lw=2, alpha=0.6,
                    label=f"mean {r['loss_mean_second_half']:.4f}")
        sig = [e["sigma"] for e in r["score_levels"]]
        ax3.plot(sig, [e["rel_err"] for e in r["score_levels"]], marker="o", ms=3,
                 label=f"{key} process{'es' if key != '1' else ''} (mean {r['score_rel_err_mean']:.4f})", **style[key])
    ax1.set(xlabel="step", ylabel="loss (global batch mean)", yscale="log", title="loss, whole run")
    steps = runs["1"]["curve"]["step"]
    half = [l for s, l in zip(steps, runs["1"]["curve"]["loss"]) if s >= steps[-1] / 2] + \
        [l for s, l in zip(runs["2"]["curve"]["step"], runs["2"]["curve"]["loss"]) if s >= steps[-1] / 2]
    if half:
        lo, hi = min(half), max(half)
        ax2.set(xlim=(steps[-1] / 2, steps[-1]), ylim=(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)))
    ax2.set(xlabel="step", ylabel="loss", title="loss, second half")
    ax3.set(xlabel="σ(t)", ylabel="relative score error", xscale="log", yscale="log",
            title="score error vs exact mixture score")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "prepared"), help="prepared data (gmm)")
    ap.add_argument("--steps", type=int, default=None, help="train.steps override (default: params)")
    ap.add_argument("--score-points", type=int, default=None, help="points per level (default: eval.n_score_points)")
    ap.add_argument("--keep", default=None, help="keep the runs' outputs in this folder (default: a temp dir)")
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "distributed_curve.json"))
    ap.add_argument("--png", default=str(ROOT / "reports" / "benchmarks" / "distributed_loss.png"))
    args = ap.parse_args(argv)

    params = load_params(args.params)
    data_dir = Path(args.data).resolve()
    meta = load_meta(data_dir)
    if "gmm" not in meta:
        raise SystemExit(f"{data_dir}/meta.json has no 'gmm': the score error needs the Gaussian-mixture data")
    gmm = GaussianMixture.from_dict(meta["gmm"])
    n_points = args.score_points or params.eval.n_score_points

    with tempfile.TemporaryDirectory(prefix="sbm_distributed_") as tmp:
        work = Path(args.keep).resolve() if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # a copy of the params: train.steps replaced when asked, and the training monitor off (its
        # pictures and small-n FID are not what this benchmark times, and 2-D data has no evaluator)
        raw = yaml.safe_load(Path(args.params).resolve().read_text())
        if args.steps is not None:
            raw["train"]["steps"] = args.steps
        raw.setdefault("monitor", {})["enabled"] = False
        params_file = work / "params.yaml"
        params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
        steps = load_params(params_file).train.steps

        runs = {}
        for processes in (1, 2):
            r = run_stage(processes, params_file, data_dir, work / f"p{processes}")
            step, loss = read_curve(Path(r["paths"]["live"]))
            levels = score_errors(Path(r["paths"]["out"]), gmm, n_points, params.seed)
            rel = [e["rel_err"] for e in levels]
            runs[str(processes)] = {
                "processes": processes, "label": "python, 1 process" if processes == 1 else
                "accelerate launch, 2 gloo processes", "command": r["command"], "world_size": r["result"]["world_size"],
                "final_loss": r["result"]["final_loss"], "train_seconds": r["result"]["train_seconds"],
                "wall_seconds": round(r["wall_seconds"], 2), "n_params": r["result"]["n_params"],
                "score_rel_err_mean": sum(rel) / len(rel), "score_rel_err_max": max(rel),
                "loss_mean_second_half": _mean([v for k, v in zip(step, loss) if k > step[-1] / 2]),
                "score_levels": levels, "curve": {"step": step, "loss": loss},
            }
            print(f"  final loss {runs[str(processes)]['final_loss']:.4f}, "
                  f"score error {runs[str(processes)]['score_rel_err_mean']:.4f}, "
                  f"{r['wall_seconds']:.1f} s", flush=True)

    one, two = runs["1"], runs["2"]
    n_common = min(len(one["curve"]["loss"]), len(two["curve"]["loss"]))
    diffs = [abs(a - b) / a for a, b in zip(one["curve"]["loss"][:n_common], two["curve"]["loss"][:n_common])]
    tail = diffs[n_common // 2:]
    report = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores", "torch": torch.__version__,
        "platform": platform.platform(), "params": str(Path(args.params).resolve().relative_to(ROOT))
        if Path(args.params).resolve().is_relative_to(ROOT) else args.params,
        "loss": params.loss, "process": params.process.name, "steps": steps, "batch_size": params.train.batch_size,
        "log_every": params.train.log_every, "score_points_per_level": n_points,
        "runs": runs,
        "curve_rel_diff_mean": sum(diffs) / len(diffs), "curve_rel_diff_mean_second_half": sum(tail) / len(tail),
        "final_loss_rel_diff": (two["final_loss"] - one["final_loss"]) / one["final_loss"],
        "score_rel_err_diff": two["score_rel_err_mean"] - one["score_rel_err_mean"],
        "wall_ratio": two["wall_seconds"] / one["wall_seconds"],
        "train_ratio": two["train_seconds"] / one["train_seconds"],
    }

    print(f"\n{params.loss} on {meta.get('name')} ({params.process.name} process), {steps} steps, "
          f"global batch {params.train.batch_size}, score error over {len(one['score_levels'])} levels × {n_points} points")
    head = f"| {'run':<36} | world size | final loss | score rel. err (mean) |  (max) | train s | wall s |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in (one, two):
        print(f"| {r['label']:<36} | {r['world_size']:>10} | {r['final_loss']:10.4f} | "
              f"{r['score_rel_err_mean']:21.4f} | {r['score_rel_err_max']:6.3f} | {r['train_seconds']:7.1f} | "
              f"{r['wall_seconds']:6.1f} |")
    print(f"mean logged loss over the second half: {one['loss_mean_second_half']:.4f} (1 process), "
          f"{two['loss_mean_second_half']:.4f} (2 processes)")
    print(f"loss curves: mean |Δ|/loss {report['curve_rel_diff_mean']:.2%} "
          f"(second half {report['curve_rel_diff_mean_second_half']:.2%}); final loss {report['final_loss_rel_diff']:+.2%}; "
          f"2-process wall time ×{report['wall_ratio']:.2f} (training ×{report['train_ratio']:.2f})")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(runs, Path(args.png), f"train_score ({params.loss}, {params.process.name}), {steps} steps, global batch "
         f"{params.train.batch_size}: 1 process vs 2 gloo processes")
    print(f"wrote {out} and {args.png}")
    return report


if __name__ == "__main__":
    main()
