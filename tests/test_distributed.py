"""Training under `accelerate launch` with two processes (gloo on CPU) is the single-process
training of the same global batch: each process trains on a disjoint shard of every batch,
gradients are those of the whole batch, the logged loss is the global one, weights and EMA
agree on every process, and the quality matches a one-process run.

The processes are real: `accelerate launch --multi_gpu --num_processes 2 --main_process_port 0`
with ACCELERATE_USE_CPU=true runs tests/ddp_train.py (a tiny training) twice over; a
one-process run of the same script is the reference. About 30 s on 2 CPU cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sbm import io
from sbm.eval.truth import score_error_per_level
from sbm.models.score import load_model
from sbm.train.loop import batch_indices

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "ddp_train.py"
_spec = importlib.util.spec_from_file_location("ddp_train", DRIVER)
ddp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ddp)
SEED = 3  # the driver's training seed
DET_ACCUMULATION = 2  # the two-process det run also accumulates 2 micro-batches (250 = 63 + 62 + 63 + 62)


def _env() -> dict:
    # ACCELERATE_USE_CPU: without it `--multi_gpu` on a machine with a GPU would use NCCL/CUDA,
    # and on one without (if the code did not ask for cpu) would start unsynchronised copies.
    return {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            "PYTHONPATH": str(HERE.parent)}


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=HERE.parent)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    one, two = tmp_path_factory.mktemp("one_process"), tmp_path_factory.mktemp("two_processes")
    _run([sys.executable, str(DRIVER), str(one), "--expect-world", "1"])
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--main_process_port", "0", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
          str(DRIVER), str(two), "--expect-world", "2", "--accumulation", str(DET_ACCUMULATION)])
    return {"one": one, "two": two}


def _records(root: Path, run: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / run).glob("rank*.json"))]


def _per_step(record: dict, key: str) -> list[list]:
    a = record["accumulation"]
    items = record[key]
    return [items[i : i + a] for i in range(0, len(items), a)]


@pytest.mark.parametrize("run", ["det", "dsm"])
def test_two_gloo_processes_split_every_global_batch(runs, run):
    recs = _records(runs["two"], run)
    assert [r["rank"] for r in recs] == [0, 1]
    for r in recs:
        assert r["initialized"] and r["world_size"] == 2 and r["backend"] == "gloo", r
        assert r["result_world_size"] == 2 and r["is_main"] == (r["rank"] == 0)
    cfg = ddp.RUNS[run]["train"]
    n, batch = ddp.RUNS[run]["n"], cfg["batch_size"]
    steps = [_per_step(r, "micro_batches") for r in recs]
    assert all(len(s) == cfg["steps"] for s in steps)
    for k in range(cfg["steps"]):
        shards = [[i for micro in s[k] for i in micro] for s in steps]
        assert all(shards), (k, [len(x) for x in shards])
        assert not set(shards[0]) & set(shards[1]), f"step {k}: the processes share examples"
        # in order: rank 0's shard, then rank 1's, is exactly the single-process batch of step k
        assert shards[0] + shards[1] == batch_indices(n, batch, k, SEED).tolist(), k
        assert abs(len(shards[0]) - len(shards[1])) <= 1
    # one process: the same global batches
    (single,) = _records(runs["one"], run)
    assert single["world_size"] == 1 and single["backend"] is None and single["result_world_size"] == 1
    for k, micro in enumerate(_per_step(single, "micro_batches")):
        assert micro[0] == batch_indices(n, batch, k, SEED).tolist()


def test_processes_draw_different_reproducible_noise(runs):
    r0, r1 = (_per_step(r, "rng") for r in _records(runs["two"], "dsm"))
    assert all(a != b for a, b in zip(r0, r1)), "both processes drew the same noise at some step"
    assert len(set(s[0] for s in r0)) == len(r0), "a process repeated its noise"
    # the noise is a function of (seed, process, step): process 0 of two draws what the single process draws
    (single,) = _records(runs["one"], "dsm")
    assert r0 == _per_step(single, "rng")


def _state(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = io.load_tensors(path)
    return tensors


def test_two_processes_follow_the_single_process_trajectory(runs):
    """A loss with no randomness: 2 processes × 2 micro-batches, uneven shards, give the
    single-process trajectory (float summation order only: measured ≤ 2e-6 after 30 steps)."""
    recs = _records(runs["two"], "det")
    (single,) = _records(runs["one"], "det")
    assert recs[0]["ema_digest"] == recs[1]["ema_digest"], "EMA differs between processes"
    assert recs[0]["final_loss"] == recs[1]["final_loss"], "logged loss not reduced across processes"
    assert recs[0]["final_loss"] == pytest.approx(single["final_loss"], rel=1e-5)
    for name in ("net", "ema"):
        a, b = _state(runs["one"] / "det" / f"{name}.safetensors"), _state(runs["two"] / "det" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst < 2e-5, f"{name}: two-process weights differ from one-process by {worst}"


def test_two_processes_train_as_well_as_one(runs):
    """DSM, 600 steps, global batch 256: the 2-process model (each process 128 examples and
    its own noise) is as good as the 1-process one. Measured: final loss 0.5166 (1 process)
    vs 0.5180 (2); mean relative score error over the 10 levels 0.026 vs 0.021, max 0.14 vs
    0.08. Tolerances: final loss within 5 %, mean score error within 0.02 and both < 0.05."""
    (single,) = _records(runs["one"], "dsm")
    recs = _records(runs["two"], "dsm")
    assert recs[0]["ema_digest"] == recs[1]["ema_digest"]
    assert recs[0]["final_loss"] == recs[1]["final_loss"]
    assert abs(recs[0]["final_loss"] - single["final_loss"]) < 0.05 * single["final_loss"]
    errors = {}
    for key in ("one", "two"):
        model, _ = load_model(runs[key] / "dsm" / "ema.safetensors")
        errs = [e["rel_err"] for e in score_error_per_level(model, ddp.mixture(), ddp.LADDER.grid(), 2000,
                                                            torch.Generator().manual_seed(1))]
        errors[key] = sum(errs) / len(errs)
        assert max(errs) < 0.25, (key, errs)
    assert errors["one"] < 0.05 and errors["two"] < 0.05, errors
    assert abs(errors["one"] - errors["two"]) < 0.02, errors
