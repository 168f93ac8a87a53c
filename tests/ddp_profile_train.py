"""Driver for tests/test_profiles.py: train a profile's score model on prepared image data, as a
script, so the same code runs single-process and under
`accelerate launch --multi_gpu --num_processes 2 tests/ddp_profile_train.py ...`.

    python tests/ddp_profile_train.py OUT --profile profiles/synthetic_rgb32.yaml --data PREPARED

The model is built as stages/train_score.py builds it in pixel space (params `process`,
`model` (the profile's U-Net), `loss`, `objective`, `train` of params.yaml with the profile
applied, `sbm.config.profiles.validate`), on the prepared directory's training split. Every
process writes OUT/rank<r>.json: world size, backend, the loop's result, and digests of its
final raw weights and of its EMA (tests/ddp_train.py's `digest`), which must agree across
processes. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from ddp_train import digest  # the sibling driver (this script's directory is on sys.path)

from sbm.config.profiles import validate
from sbm.core.losses import build_loss
from sbm.core.model import ScoreModel
from sbm.core.processes import build_process
from sbm.nets.score import build_net
from sbm.pipeline.prepared import load_meta, load_split
from sbm.train.loop import train


def run(out: Path, profile: str, data: str, params: str = "params.yaml", expect_world: int | None = None) -> dict:
    import torch.distributed as dist

    p = validate(profile, params)
    x, _ = load_split(data, "train")  # (N, C, H, W) in [-1, 1]
    meta = load_meta(data)
    torch.manual_seed(p.seed)  # initial weights (under DDP rank 0's are broadcast)
    model = ScoreModel(build_net(p.model, meta["shape"]), build_process(p.process, meta), p.model.prediction,
                       float(x.std()))
    loss_fn = build_loss(p.loss, p.objective, meta["dim"])
    raw: dict[str, str] = {}

    def last_weights(net: torch.nn.Module, step: int) -> None:  # step: 0-based, after the optimizer step
        if step + 1 == p.train.steps:
            raw["digest"] = digest(net)

    out.mkdir(parents=True, exist_ok=True)
    ema, result = train(model, loss_fn, x, p.train, seed=p.seed, ckpt_dir=out / "ckpt", progress=False,
                        after_step=last_weights)
    initialized = dist.is_available() and dist.is_initialized()
    record = {"rank": dist.get_rank() if initialized else 0, "world_size": dist.get_world_size() if initialized else 1,
              "backend": dist.get_backend() if initialized else None, "result_world_size": result.world_size,
              "is_main": result.is_main_process, "steps": result.steps, "final_loss": result.final_loss,
              "shape": list(x.shape[1:]), "n_params": sum(q.numel() for q in model.net.parameters()),
              "raw_digest": raw.get("digest"), "ema_digest": digest(ema.net)}
    if expect_world is not None:
        assert record["world_size"] == expect_world, record
    (out / f"rank{record['rank']}.json").write_text(json.dumps(record))
    return record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--data", required=True, help="a prepared directory (stage prepare's output)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--expect-world", type=int, default=None)
    args = ap.parse_args()
    run(Path(args.out), args.profile, args.data, args.params, args.expect_world)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
