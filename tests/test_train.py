"""The training loop: real short trainings reach the exact score; resume is exact (also after
kill -9 of the stage); shards and micro-batches partition each batch; failures are clear."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from sbm import io
from sbm.config.params import parse_params
from sbm.core.gmm import GaussianMixture
from sbm.core.losses import build_loss
from sbm.core.model import ScoreModel
from sbm.core.processes import NCSNLadder
from sbm.errors import TrainingError
from sbm.eval.truth import score_error_per_level
from sbm.latent.vae import write_space
from sbm.models.score import load_model
from sbm.nets.score import MLPNet
from sbm.train.loop import EMA, _Batches, batch_indices, shard, train

LADDER = NCSNLadder(0.1, 20.0, 10)


def _train_params(**train):
    base = {"steps": 800, "batch_size": 256, "lr": 3e-3, "warmup_steps": 50, "ema_decay": 0.99,
            "log_every": 50, "checkpoint_every": 10_000}
    return parse_params({"train": {**base, **train}}).train


def _model(x):
    torch.manual_seed(0)
    return ScoreModel(MLPNet(2, 64, 2, 32), LADDER, data_std=float(x.std()))


def _gaussian_baseline_errors(mixture, x):
    """Relative score error of the best single Gaussian (moment-matched): what a model that
    ignores the modes would reach. A trained model must beat it by far."""
    cov = torch.cov(x.T.double())
    fit = GaussianMixture([1.0], [x.double().mean(0).tolist()], [cov.tolist()])
    from sbm.core.model import AnalyticScoreModel

    model = AnalyticScoreModel(fit.exact_score_fn(LADDER), LADDER)
    return [e["rel_err"] for e in score_error_per_level(model, mixture, LADDER.grid(), 2000,
                                                        torch.Generator().manual_seed(1))]


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["dsm", "ssm", "esm"])
def test_short_training_learns_the_exact_score(mixture, loss, tmp_path):
    x, _ = mixture.sample(4000, generator=torch.Generator().manual_seed(0))
    model = _model(x)
    objective = parse_params({}).objective
    ema, result = train(model, build_loss(loss, objective, 2), x, _train_params(), seed=0,
                        ckpt_dir=tmp_path, progress=False)
    errs = [e["rel_err"] for e in score_error_per_level(ema, mixture, LADDER.grid(), 2000,
                                                        torch.Generator().manual_seed(1))]
    baseline = _gaussian_baseline_errors(mixture, x)
    # Thresholds: 800 steps reach ≤ 0.12 relative error at every level for all three
    # objectives (measured 0.04–0.09 at σ_min, ≤ 0.02 at σ ≥ 2); an untrained net or the
    # moment-matched Gaussian sits near 0.3–1 at the levels where the modes matter.
    assert max(errs) < 0.2, errs
    assert sum(errs) / len(errs) < 0.05, errs
    low = [i for i, s in enumerate(LADDER.sigma(LADDER.grid())) if s < 2.0]
    assert all(errs[i] < 0.25 * baseline[i] for i in low), (errs, baseline)
    assert result.steps == 800 and result.resumed_from == 0


def _loss():
    return build_loss("dsm", parse_params({}).objective, 2)


def _full_and_interrupted(mixture, tmp_path):
    """A 60-step run in tmp/a, and the same run stopped after 40 steps in tmp/b.
    -> (x, cfg of the full run, (full EMA model, its result), checkpoint dir of the stopped run)."""
    x, _ = mixture.sample(2000, generator=torch.Generator().manual_seed(0))
    cfg = _train_params(steps=60, checkpoint_every=20)
    full = train(_model(x), _loss(), x, cfg, seed=3, ckpt_dir=tmp_path / "a", progress=False)
    train(_model(x), _loss(), x, _train_params(steps=40, checkpoint_every=20), seed=3,
          ckpt_dir=tmp_path / "b", progress=False)
    return x, cfg, full, tmp_path / "b"


def test_resume_continues_exactly_where_it_stopped(mixture, tmp_path):
    x, cfg, (full, full_result), ckpt = _full_and_interrupted(mixture, tmp_path)
    resumed, result = train(_model(x), _loss(), x, cfg, seed=3, ckpt_dir=ckpt, progress=False)
    assert result.resumed_from == 40 and result.steps == 60
    # the logging window (50 steps) spans the resume: the reported loss is the uninterrupted one
    assert result.final_loss == full_result.final_loss
    for (k, a), b in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), k


def test_training_time_adds_up_over_resumes(mixture, tmp_path):
    """total_seconds counts every call that built the run: a resumed call reports the seconds
    its checkpoint recorded plus its own; a fresh call's total is its own time."""
    from sbm import io

    x, _ = mixture.sample(2000, generator=torch.Generator().manual_seed(0))
    _, first = train(_model(x), _loss(), x, _train_params(steps=20, checkpoint_every=10), seed=3, ckpt_dir=tmp_path,
                     progress=False)
    assert first.total_seconds == first.seconds > 0
    recorded = io.load_tensors(tmp_path / "step_00000020.safetensors")[1]["seconds"]
    assert 0 < recorded <= first.seconds
    _, second = train(_model(x), _loss(), x, _train_params(steps=30, checkpoint_every=10), seed=3, ckpt_dir=tmp_path,
                      progress=False)
    assert second.resumed_from == 20
    assert second.total_seconds == pytest.approx(recorded + second.seconds)
    assert io.load_tensors(tmp_path / "step_00000030.safetensors")[1]["seconds"] > recorded


def test_fingerprints_compare_floats_to_four_significant_digits():
    """Data statistics recomputed under another thread count differ in their last bits: the
    same run; a real change of a setting: another run."""
    from sbm.train.loop import fingerprint

    base = {"sigma_max": 12.345678, "lr": 1e-3, "nested": [{"std": 0.987654321}], "name": "dsm"}
    jitter = {"sigma_max": 12.345679, "lr": 1e-3 * (1 + 1e-7), "nested": [{"std": 0.987654322}], "name": "dsm"}
    assert fingerprint(base) == fingerprint(jitter)
    for changed in ({**base, "sigma_max": 12.4}, {**base, "lr": 1.1e-3}, {**base, "name": "ssm"}):
        assert fingerprint(changed) != fingerprint(base)


def test_learning_rate_schedules_warm_up_then_hold_or_decay_to_their_floor():
    """Eq. 2: the same linear warm-up; constant holds lr; cosine falls monotonically from lr right
    after the warm-up to lr·lr_min_ratio at `steps`, halfway (lr(1 + r)/2) at the midpoint."""
    from sbm.train.loop import learning_rate

    const = _train_params(steps=1000, lr=2e-3, warmup_steps=100)
    cos = _train_params(steps=1000, lr=2e-3, warmup_steps=100, lr_schedule="cosine", lr_min_ratio=0.1)
    for k in range(100):
        assert learning_rate(k, const) == learning_rate(k, cos) == pytest.approx(2e-3 * (k + 1) / 100)
    assert all(learning_rate(k, const) == 2e-3 for k in range(99, 1000))
    assert learning_rate(100, cos) == pytest.approx(2e-3)
    assert learning_rate(550, cos) == pytest.approx(2e-3 * 0.55)
    assert learning_rate(1000, cos) == pytest.approx(2e-4)
    decay = [learning_rate(k, cos) for k in range(100, 1001)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert learning_rate(999, _train_params(steps=1000, warmup_steps=0, lr_schedule="cosine")) > 0
    assert learning_rate(0, _train_params(steps=10, warmup_steps=0, lr=1e-3)) == 1e-3  # no warm-up: lr at once


def test_the_loop_applies_the_cosine_schedule_and_resumes_on_it(mixture, tmp_path):
    """The logged lr curve is eq. 2 step by step (the warm-up's climb included); a cosine run stopped at a checkpoint resumes to the
    uninterrupted weights; extending a cosine run (another `steps`, another schedule) retrains, while
    a constant run resumes onto more steps as before."""
    import pandas as pd

    from sbm.train.loop import learning_rate

    x, _ = mixture.sample(2000, generator=torch.Generator().manual_seed(0))
    cfg = _train_params(steps=60, checkpoint_every=20, warmup_steps=10, log_every=1, lr_schedule="cosine",
                        lr_min_ratio=0.0)
    full, _ = train(_model(x), _loss(), x, cfg, seed=3, ckpt_dir=tmp_path / "a", live_dir=tmp_path / "live",
                    progress=False)
    logged = pd.read_csv(tmp_path / "live" / "plots" / "metrics" / "lr.tsv", sep="\t")
    # the curve's step counts the steps done: its value at step s is that of 0-based step s − 1
    assert logged["lr"].tolist() == pytest.approx([learning_rate(int(k) - 1, cfg) for k in logged["step"]])
    assert logged["lr"].iloc[-1] < 0.01 * cfg.lr
    train(_model(x), _loss(), x, cfg, seed=3, ckpt_dir=tmp_path / "b", progress=False)
    (tmp_path / "b" / "step_00000060.safetensors").unlink()  # as if killed before the last checkpoint
    resumed, result = train(_model(x), _loss(), x, cfg, seed=3, ckpt_dir=tmp_path / "b", progress=False)
    assert result.resumed_from == 40
    for (k, a), b in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), k
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, longer = train(_model(x), _loss(), x, dataclasses.replace(cfg, steps=80), seed=3,
                          ckpt_dir=tmp_path / "b", progress=False)
    assert longer.resumed_from == 0
    const = dataclasses.replace(cfg, lr_schedule="constant")
    train(_model(x), _loss(), x, const, seed=3, ckpt_dir=tmp_path / "c", progress=False)
    _, more = train(_model(x), _loss(), x, dataclasses.replace(const, steps=80), seed=3, ckpt_dir=tmp_path / "c",
                    progress=False)
    assert more.resumed_from == 60


def test_a_constant_schedule_keeps_the_fingerprint_of_checkpoints_written_before_schedules():
    """lr_schedule constant (the default) leaves the fingerprint as it was before the setting existed,
    so those checkpoints still resume; a cosine schedule changes it."""
    from sbm.train.loop import LOOP_VERSION, Trainer, fingerprint

    cfg = _train_params()
    before = {k: v for k, v in vars(cfg).items()
              if k not in ("steps", "checkpoint_every", "log_every", "launcher", "lr_schedule", "lr_min_ratio")}
    old = fingerprint({"config": None, "seed": 0, "n": 10, "loop": LOOP_VERSION, "train": before})
    assert Trainer(cfg, seed=0, ckpt_dir=".").fingerprint(10) == old
    assert Trainer(dataclasses.replace(cfg, lr_schedule="cosine"), seed=0, ckpt_dir=".").fingerprint(10) != old


def test_truncated_checkpoint_falls_back_to_the_previous_good_one(mixture, tmp_path):
    x, cfg, (full, _), ckpt = _full_and_interrupted(mixture, tmp_path)
    newest = sorted(ckpt.glob("step_*.safetensors"))[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # killed mid-copy
    with pytest.warns(UserWarning, match=f"{newest.name}.*corrupt or truncated"):
        resumed, result = train(_model(x), _loss(), x, cfg, seed=3, ckpt_dir=ckpt, progress=False)
    assert result.resumed_from == 20
    for a, b in zip(full.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)


def test_changed_configuration_does_not_resume(mixture, tmp_path):
    x, _ = mixture.sample(2000, generator=torch.Generator().manual_seed(0))
    train(_model(x), _loss(), x, _train_params(steps=20, checkpoint_every=10), seed=3, ckpt_dir=tmp_path,
          config_for_fingerprint={"loss": "dsm"}, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, result = train(_model(x), _loss(), x, _train_params(steps=30, checkpoint_every=10), seed=3,
                          ckpt_dir=tmp_path, config_for_fingerprint={"loss": "ssm"}, progress=False)
    assert result.resumed_from == 0


def test_another_network_never_resumes_a_checkpoint_even_without_a_configuration(mixture, tmp_path):
    """No config_for_fingerprint: the network's parameter shapes still keep a different model
    (here a wider MLP) from loading a checkpoint it happens to share a directory with, while the
    same network resumes."""
    x, _ = mixture.sample(2000, generator=torch.Generator().manual_seed(0))
    train(_model(x), _loss(), x, _train_params(steps=20, checkpoint_every=10), seed=3, ckpt_dir=tmp_path,
          progress=False)
    torch.manual_seed(0)
    wider = ScoreModel(MLPNet(2, 96, 2, 32), LADDER, data_std=float(x.std()))
    with pytest.warns(UserWarning, match="different training configuration"):
        _, result = train(wider, _loss(), x, _train_params(steps=30, checkpoint_every=10), seed=3,
                          ckpt_dir=tmp_path, progress=False)
    assert result.resumed_from == 0
    _, same = train(_model(x), _loss(), x, _train_params(steps=30, checkpoint_every=10), seed=3,
                    ckpt_dir=tmp_path / "other", progress=False)
    assert same.resumed_from == 0  # a fresh directory: nothing to resume
    _, again = train(_model(x), _loss(), x, _train_params(steps=40, checkpoint_every=10), seed=3,
                     ckpt_dir=tmp_path / "other", progress=False)
    assert again.resumed_from == 30


def test_non_finite_loss_stops_with_the_step_and_last_checkpoint(mixture, tmp_path):
    x, _ = mixture.sample(2000, generator=torch.Generator().manual_seed(0))
    calls = {"n": 0}

    def exploding(model, xb, cond=None):
        calls["n"] += 1
        value = _loss()(model, xb, cond)
        return value * float("nan") if calls["n"] > 25 else value

    with pytest.raises(TrainingError, match=r"loss is nan at step 25.*step_00000020\.safetensors"):
        train(_model(x), exploding, x, _train_params(steps=60, checkpoint_every=20), seed=3,
              ckpt_dir=tmp_path, progress=False)
    assert (tmp_path / "step_00000020.safetensors").exists()


def test_bad_data_is_refused_before_training(mixture, tmp_path):
    x, _ = mixture.sample(100)
    with pytest.raises(TrainingError, match="batch_size = 256 exceeds the 100 training examples"):
        train(_model(x), _loss(), x, _train_params(), seed=0, ckpt_dir=tmp_path, progress=False)
    model = _model(x)
    x[3, 1] = float("nan")
    with pytest.raises(TrainingError, match="NaN or inf"):
        train(model, _loss(), x, _train_params(batch_size=10), seed=0, ckpt_dir=tmp_path, progress=False)


# ---------------------------------------------------------------- sharding, accumulation, EMA, resume


def test_shards_partition_the_global_batch():
    batches = _Batches(1003, 100, 7, "cpu")
    for step in (0, 1, 9, 10, 11, 25, 9, 0):  # across epochs (10 batches per epoch) and back
        idx = batch_indices(1003, 100, step, 7)
        assert torch.equal(batches(step), idx)  # the per-epoch cache changes nothing
        for world, accumulation in ((1, 1), (2, 1), (3, 2), (4, 3), (7, 5)):
            parts = [shard(shard(idx, r, world), j, accumulation) for r in range(world) for j in range(accumulation)]
            assert torch.equal(torch.cat(parts), idx)  # disjoint, in order, together the batch
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def _det_loss(model, x, cond=None):
    t = torch.full((x.shape[0],), 0.5)
    return (model(x, t) - x).pow(2).sum(1)


def test_gradient_accumulation_is_the_same_step_as_one_big_batch(mixture, tmp_path):
    """A loss with no randomness: 3 uneven micro-batches (250 = 83 + 84 + 83) per step give the
    weights of one batch of 250 (float summation order only)."""
    x, _ = mixture.sample(1000, generator=torch.Generator().manual_seed(0))
    runs = {}
    for a in (1, 3):
        cfg = _train_params(steps=20, batch_size=250, gradient_accumulation=a, checkpoint_every=10)
        runs[a] = train(_model(x), _det_loss, x, cfg, seed=1, ckpt_dir=tmp_path / str(a), progress=False)
    (m1, r1), (m3, r3) = runs[1], runs[3]
    for (k, a), b in zip(m1.net.state_dict().items(), m3.net.state_dict().values()):
        assert torch.allclose(a, b, atol=2e-6, rtol=0), (k, (a - b).abs().max())
    assert r1.final_loss == pytest.approx(r3.final_loss, rel=1e-5)


def test_micro_batches_need_an_example_each(mixture, tmp_path):
    x, _ = mixture.sample(100)
    with pytest.raises(TrainingError, match=r"batch_size = 4 is smaller than 1 process\(es\) × "
                                            r"train.gradient_accumulation = 5"):
        train(_model(x), _loss(), x, _train_params(batch_size=4, gradient_accumulation=5), seed=0,
              ckpt_dir=tmp_path, progress=False)


def test_ema_follows_equation_1():
    net = MLPNet(2, 8, 1, 4)
    ema = EMA(net, 0.9).attach(net)
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update(net, step)
        d = min(0.9, (1 + step) / (10 + step))
        ref = {k: d * ref[k] + (1 - d) * v for k, v in net.state_dict().items()}
    for k, v in ref.items():
        assert torch.allclose(ema.shadow[k], v, atol=1e-6), k


def test_rerun_after_the_last_step_reports_the_finished_run(mixture, tmp_path):
    x, _ = mixture.sample(2000, generator=torch.Generator().manual_seed(0))
    cfg = _train_params(steps=40, checkpoint_every=20, log_every=15)
    first, r1 = train(_model(x), _loss(), x, cfg, seed=3, ckpt_dir=tmp_path, progress=False)
    again, r2 = train(_model(x), _loss(), x, cfg, seed=3, ckpt_dir=tmp_path, progress=False)
    assert r2.resumed_from == 40 and r2.steps == 40 and r2.checkpoint == r1.checkpoint
    assert r2.final_loss == r1.final_loss and r1.final_loss == r1.final_loss  # not nan
    for a, b in zip(first.net.state_dict().values(), again.net.state_dict().values()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- kill -9 and rerun the stage

ROOT = Path(__file__).resolve().parents[1]
STAGE_PARAMS = {
    "seed": 0,
    "score": {"space": "pixel"},
    "data": {"name": "gmm", "n_train": 2000, "n_test": 200},
    "process": {"n_levels": 10},
    "model": {"hidden": 32, "depth": 2, "embedding_dim": 16},
    # checkpoints (every 100) fall inside logging windows (every 30): the resumed run must
    # still report the uninterrupted run's loss
    "train": {"steps": 600, "batch_size": 128, "warmup_steps": 20, "checkpoint_every": 100, "log_every": 30},
    # the stage's monitor runs too (no evaluator here: a scatter of the samples per checkpoint), and
    # the killed-and-resumed model must still equal the uninterrupted one bitwise
    "monitor": {"n_grid": 64},
}


def _stage_cmd(work: Path, data_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "stages" / "train_score.py"), "--params", str(work / "params.yaml"),
            "--data", str(data_dir), "--space", str(data_dir.parent / "space"),
            "--evaluator", str(data_dir.parent / "evaluator"), "--out", str(work / "score.safetensors"),
            "--checkpoints", str(work / "ckpt"),
            "--live", str(work / "live"), "--metrics", str(work / "train_score.json")]


def _stage_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}


def _run_stage(work: Path, data_dir: Path) -> dict:
    proc = subprocess.run(_stage_cmd(work, data_dir), env=_stage_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return io.read_json(work / "train_score.json")


@pytest.mark.slow
def test_stage_killed_after_a_checkpoint_resumes_to_the_uninterrupted_model(tmp_path):
    from sbm.pipeline import data

    data_dir = tmp_path / "prepared"
    meta = data.prepare(parse_params(STAGE_PARAMS).data, STAGE_PARAMS["seed"], data_dir)
    write_space(tmp_path / "space", meta["shape"])  # pixel space: train on the data
    (tmp_path / "evaluator").mkdir()  # as train_evaluator writes it for data it does not measure
    io.write_json(tmp_path / "evaluator" / "none.json", {"reason": "not measured in this test"})
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for work in (killed, clean):
        work.mkdir()
        (work / "params.yaml").write_text(yaml.safe_dump(STAGE_PARAMS))

    proc = subprocess.Popen(_stage_cmd(killed, data_dir), env=_stage_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((killed / "ckpt").glob("step_*.safetensors")):
        assert proc.poll() is None, f"the stage ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the stage finished before it could be killed; raise train.steps"
    present = sorted(int(p.stem.split("_")[1]) for p in (killed / "ckpt").glob("step_*.safetensors"))
    assert present and present[-1] < 600 and not (killed / "score.safetensors").exists()

    resumed = _run_stage(killed, data_dir)
    assert resumed["resumed_from"] == present[-1] > 0  # the newest checkpoint on disk at the kill
    assert resumed["steps"] == 600
    uninterrupted = _run_stage(clean, data_dir)
    assert uninterrupted["resumed_from"] == 0
    a, _ = load_model(killed / "score.safetensors")
    b, _ = load_model(clean / "score.safetensors")
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(va, vb), k  # bitwise: every step's batch and noise are functions of (seed, step)
    pictures = {w: sorted(p.name for p in (w / "live/plots/images/samples").iterdir()) for w in (killed, clean)}
    assert pictures[killed] == pictures[clean] == [f"{s:06d}.png" for s in range(100, 601, 100)]
    assert resumed["final_loss"] == pytest.approx(uninterrupted["final_loss"], rel=1e-12)

    # once more: nothing left to train; the report still names the finished run
    again = _run_stage(killed, data_dir)
    assert again["resumed_from"] == 600 and again["steps"] == 600
    assert again["final_loss"] == pytest.approx(uninterrupted["final_loss"], rel=1e-12)


def test_resumed_run_continues_the_dvclive_curve_without_duplicates(mixture, tmp_path):
    """The live dir persists with the checkpoints: rows logged after the last checkpoint (a
    kill) are dropped on resume, and a finished run whose curve was deleted gets it back."""
    x, _ = mixture.sample(2000, generator=torch.Generator().manual_seed(0))
    live, ckpt = tmp_path / "live", tmp_path / "ckpt"
    tsv = live / "plots" / "metrics" / "loss.tsv"
    train(_model(x), _loss(), x, _train_params(steps=40, checkpoint_every=20, log_every=10), seed=3,
          ckpt_dir=ckpt, live_dir=live, progress=False)
    (ckpt / "step_00000040.safetensors").unlink()  # as if killed between step 30's log and step 40's checkpoint
    train(_model(x), _loss(), x, _train_params(steps=60, checkpoint_every=20, log_every=10), seed=3,
          ckpt_dir=ckpt, live_dir=live, progress=False)
    rows = [line.split("\t") for line in tsv.read_text().splitlines()]
    col = rows[0].index("step")
    steps = [int(float(r[col])) for r in rows[1:]]
    assert steps == [10, 20, 30, 40, 50, 60]
    import shutil

    shutil.rmtree(live)  # DVC without persist would delete it before the rerun
    _, result = train(_model(x), _loss(), x, _train_params(steps=60, checkpoint_every=20, log_every=10), seed=3,
                      ckpt_dir=ckpt, live_dir=live, progress=False)
    assert result.resumed_from == 60 and tsv.is_file()
    tsv.write_text("step\tloss\n")  # a header only (a pixel-space run's empty VAE curve): also restored
    train(_model(x), _loss(), x, _train_params(steps=60, checkpoint_every=20, log_every=10), seed=3,
          ckpt_dir=ckpt, live_dir=live, progress=False)
    assert len(tsv.read_text().strip().splitlines()) == 2


def test_train_never_changes_the_model_it_was_given(mixture, tmp_path):
    """The loop trains a copy: the given model's weights and object graph are as before, and the
    returned EMA model is a different object holding different (trained) weights."""
    x, _ = mixture.sample(256, generator=torch.Generator().manual_seed(0))
    model = _model(x)
    net_before = model.net
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ema, result = train(model, _loss(), x, _train_params(steps=20, checkpoint_every=10), seed=3, ckpt_dir=tmp_path,
                        progress=False)
    assert model.net is net_before and model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert ema is not model and ema.net is not model.net
    assert any(not torch.equal(v, before[k]) for k, v in ema.state_dict().items())
    assert result.steps == 20 and result.resumed_from == 0
