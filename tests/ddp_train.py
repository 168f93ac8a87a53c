"""Driver for tests/test_distributed.py: one tiny training, run as a script, so the same code
runs single-process (`python tests/ddp_train.py ...`) and under
`accelerate launch --multi_gpu --num_processes 2 tests/ddp_train.py ...`.

Every process records what it saw (world size, backend, the example indices of each of its
micro-batches, a digest of the torch RNG state as each micro-batch's loss starts, a digest
of its final EMA) in OUT/<run>/rank<r>.json; the main process also writes the EMA model
(OUT/<run>/ema.safetensors) and the raw weights (OUT/<run>/net.safetensors). Not collected
by pytest (no test_ prefix).

Runs:
- `det`: a loss with no randomness (regress x from the network at a fixed level), so two
  processes must follow the single-process trajectory up to float summation order; the
  global batch (250) deliberately does not divide evenly among processes × micro-batches.
- `dsm`: denoising score matching on the Gaussian mixture, for the quality comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from sbm import io
from sbm.config.params import parse_params
from sbm.core.gmm import GaussianMixture
from sbm.core.losses import build_loss
from sbm.core.model import ScoreModel
from sbm.core.processes import NCSNLadder
from sbm.models.score import save_model
from sbm.nets.score import MLPNet
from sbm.train.loop import train

LADDER = NCSNLadder(0.1, 20.0, 10)
MIXTURE = dict(weights=[0.6, 0.3, 0.1], means=[[-4.0, -4.0], [4.0, 4.0], [4.0, -4.0]],
               covs=[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.6], [0.6, 0.8]], [[0.5, 0.0], [0.0, 1.5]]])
RUNS = {
    "det": {"n": 2000, "train": {"steps": 30, "batch_size": 250, "lr": 1e-2, "warmup_steps": 5, "ema_decay": 0.9,
                                 "log_every": 10, "checkpoint_every": 1000}},
    "dsm": {"n": 4000, "train": {"steps": 600, "batch_size": 256, "lr": 3e-3, "warmup_steps": 50, "ema_decay": 0.99,
                                 "log_every": 50, "checkpoint_every": 1000}},
}


def mixture() -> GaussianMixture:
    return GaussianMixture(MIXTURE["weights"], MIXTURE["means"], MIXTURE["covs"])


def data(run: str) -> torch.Tensor:
    x, _ = mixture().sample(RUNS[run]["n"], generator=torch.Generator().manual_seed(0))
    return x


def model(x: torch.Tensor) -> ScoreModel:
    torch.manual_seed(0)
    return ScoreModel(MLPNet(2, 64, 2, 32), LADDER, data_std=float(x.std()))


def det_loss(model, x, cond=None):
    """No randomness: ‖F(x, t = 0.5) − x‖² per example."""
    t = torch.full((x.shape[0],), 0.5, device=x.device)
    return (model(x, t) - x).pow(2).sum(1)


def digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(name: str, out: Path, accumulation: int = 1, expect_world: int | None = None):
    """Train run `name`; every process records its view in out/rank<r>.json."""
    import torch.distributed as dist

    x = data(name)
    cfg = parse_params({"train": {**RUNS[name]["train"], "gradient_accumulation": accumulation}}).train
    inner = det_loss if name == "det" else build_loss("dsm", parse_params({}).objective, 2)
    seen: list[list[int]] = []
    rng: list[str] = []
    info: dict = {}

    def recording_loss(model, xb, cond):
        if not info:  # inside the training processes, while the process group is alive
            info["initialized"] = dist.is_available() and dist.is_initialized()
            info["world_size"] = dist.get_world_size() if info["initialized"] else 1
            info["rank"] = dist.get_rank() if info["initialized"] else 0
            info["backend"] = dist.get_backend() if info["initialized"] else None
            if expect_world is not None:
                assert info["world_size"] == expect_world, info
                assert expect_world == 1 or info["backend"] == "gloo", info
        seen.append(cond.tolist())  # cond carries each example's index in the training set
        rng.append(hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()[:16])  # noise to be drawn
        return inner(model, xb, None)

    out.mkdir(parents=True, exist_ok=True)
    ema, result = train(model(x), recording_loss, x, cfg, seed=3, ckpt_dir=out / "ckpt", cond=torch.arange(len(x)),
                        progress=False)
    net = ema.net  # ema is a copy of the model holding the EMA weights; the raw weights are in the checkpoint
    tensors, _ = io.load_tensors(result.checkpoint)
    raw = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    record = {**info, "micro_batches": seen, "rng": rng, "accumulation": accumulation, "final_loss": result.final_loss,
              "result_world_size": result.world_size, "is_main": result.is_main_process,
              "ema_digest": digest(net)}
    (out / f"rank{info['rank']}.json").write_text(json.dumps(record))
    if result.is_main_process:
        save_model(out / "ema.safetensors", ema)
        io.save_tensors(out / "net.safetensors", raw, {"kind": "raw"})
    return ema, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--runs", default="det,dsm")
    ap.add_argument("--accumulation", type=int, default=1, help="gradient_accumulation of the det run")
    ap.add_argument("--expect-world", type=int, default=None)
    args = ap.parse_args()
    for name in args.runs.split(","):
        run(name, Path(args.out) / name, args.accumulation if name == "det" else 1, args.expect_world)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
