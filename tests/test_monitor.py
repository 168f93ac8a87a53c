"""The training monitor: at every checkpoint a picture of the EMA model's samples and their small-n
quality are logged through dvclive (the files dvc.yaml declares), a resumed run continues those
curves exactly, and showing them never changes what is trained."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from sbm import io
from sbm.config.params import parse_params
from sbm.core.losses import build_loss
from sbm.core.model import ScoreModel
from sbm.core.processes import build_process
from sbm.eval.evaluator import (
    EVALUATOR_FILE,
    NO_EVALUATOR_FILE,
    save_evaluator,
    train_evaluator,
)
from sbm.latent.vae import write_space
from sbm.nets.score import build_net
from sbm.pipeline import data
from sbm.pipeline.monitoring import OnDevice, build_monitor
from sbm.pipeline.prepared import load_split
from sbm.pipeline.training import fit
from sbm.train.loop import train
from sbm.train.monitor import Monitor

pytestmark = pytest.mark.usefixtures("one_thread")

PARAMS = {
    "seed": 0,
    "score": {"space": "pixel"},
    "data": {"name": "digits"},
    "model": {"unet": {"channels": [8, 16], "layers_per_block": 1, "attention": [False, False],
                       "mid_attention": False, "norm_groups": 4}},
    "evaluator": {"channels": [8, 16], "hidden": 16, "steps": 30, "kid_subsets": 10},
    "monitor": {"n_grid": 16, "n_quality": 32},
}
STEPS = {"batch_size": 32, "warmup_steps": 2, "log_every": 2, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Prepared digits in pixel space, with a small evaluator: (directory, params, meta)."""
    d = tmp_path_factory.mktemp("digits")
    params = parse_params(PARAMS)
    meta = data.prepare(params.data, params.seed, d / "prepared")
    write_space(d / "space", meta["shape"])
    x, y = load_split(d / "prepared", "train")
    save_evaluator(d / "evaluator" / EVALUATOR_FILE, train_evaluator(x, y, params.evaluator, params.seed), {})
    return d, params, meta


def _setup(digits, **train):
    d, params, meta = digits
    x, _ = load_split(d / "prepared", "train")
    torch.manual_seed(0)
    model = ScoreModel(build_net(params.model, meta["shape"]), build_process(params.process, meta), "eps",
                       float(x.std()))
    loss = build_loss("dsm", params.objective, meta["dim"])
    cfg = parse_params({**PARAMS, "train": {**STEPS, **train}}).train
    return model, loss, x, cfg


def _monitor(digits, **monitor) -> Monitor:
    d, _, _ = digits
    params = parse_params({**PARAMS, "monitor": {**PARAMS["monitor"], **monitor}})
    return build_monitor(params, data=d / "prepared", space=d / "space", evaluator=d / "evaluator")


def _rows(tsv) -> dict[int, float]:
    header, *rows = tsv.read_text().splitlines()
    cols = header.split("\t")
    return {int(float(r.split("\t")[cols.index("step")])): float(r.split("\t")[-1]) for r in rows}


def _steps(tsv) -> list[int]:
    header, *rows = tsv.read_text().splitlines()
    col = header.split("\t").index("step")
    return [int(float(r.split("\t")[col])) for r in rows]


def test_every_checkpoint_logs_a_picture_and_quality_rows(digits, tmp_path):
    model, loss, x, cfg = _setup(digits, steps=6)
    monitor = _monitor(digits)
    live = tmp_path / "live"
    train(model, loss, x, cfg, seed=0, ckpt_dir=tmp_path / "ckpt", live_dir=live, progress=False,
          on_checkpoint=monitor)
    images = sorted(p.name for p in (live / "plots" / "images" / "samples").iterdir())
    assert images == ["000002.png", "000004.png", "000006.png"]
    with Image.open(live / "plots" / "images" / "samples" / "000006.png") as img:
        assert img.mode == "RGB" and img.size[0] > 4 * 32  # 4 × 4 digits, each enlarged to 32 pixels
    quality = live / "plots" / "metrics" / "quality"
    assert sorted(p.stem for p in quality.glob("*.tsv")) == ["fid", "kid", "precision", "recall"]
    for tsv in quality.glob("*.tsv"):
        assert _steps(tsv) == [2, 4, 6], tsv.name
    assert _steps(live / "plots" / "metrics" / "loss.tsv") == [2, 4, 6]
    summary = json.loads((live / "metrics.json").read_text())
    assert {"fid", "fid_floor", "kid", "kid_floor"} <= set(summary["quality"])
    assert summary["quality"]["fid"] > summary["quality"]["fid_floor"] >= 0  # 6 steps: far from the data
    assert monitor.seconds > 0


def test_a_resumed_run_continues_the_curves_without_duplicates(digits, tmp_path):
    """Killed after checkpoint 4 (its successor's checkpoint lost, and even the hook of 4 not run):
    the resumed run drops the later rows and pictures, shows step 4 again and continues; every value
    equals the uninterrupted run's."""
    model, loss, x, cfg = _setup(digits, steps=8)
    clean = tmp_path / "clean"
    train(model, loss, x, cfg, seed=0, ckpt_dir=clean / "ckpt", live_dir=clean / "live", progress=False,
          on_checkpoint=_monitor(digits))

    killed = tmp_path / "killed"
    _, _, _, first = _setup(digits, steps=6)
    train(model, loss, x, first, seed=0, ckpt_dir=killed / "ckpt", live_dir=killed / "live", progress=False,
          on_checkpoint=_monitor(digits))
    (killed / "ckpt" / "step_00000006.safetensors").unlink()  # resumes from 4: step 6's rows must go
    plots = killed / "live" / "plots"
    (plots / "images" / "samples" / "000004.png").unlink()  # as if killed before the hook of checkpoint 4
    for tsv in (plots / "metrics" / "quality").glob("*.tsv"):
        lines = tsv.read_text().splitlines()
        tsv.write_text("\n".join(ln for ln in lines if not ln.startswith("4\t")) + "\n")
    _, result = train(model, loss, x, cfg, seed=0, ckpt_dir=killed / "ckpt", live_dir=killed / "live",
                      progress=False, on_checkpoint=_monitor(digits))
    assert result.resumed_from == 4
    assert sorted(p.name for p in (plots / "images" / "samples").iterdir()) == [
        "000002.png", "000004.png", "000006.png", "000008.png"]
    for tsv in sorted((plots / "metrics" / "quality").glob("*.tsv")):
        assert _steps(tsv) == [2, 4, 6, 8], tsv.name
        want = _rows(clean / "live" / "plots" / "metrics" / "quality" / tsv.name)
        assert _rows(tsv) == pytest.approx(want, rel=1e-9), tsv.name
    assert _steps(plots / "metrics" / "loss.tsv") == [2, 4, 6, 8]

    # a rerun with nothing left to train shows nothing again
    _, again = train(model, loss, x, cfg, seed=0, ckpt_dir=killed / "ckpt", live_dir=killed / "live",
                     progress=False, on_checkpoint=_monitor(digits))
    assert again.resumed_from == 8
    for tsv in (plots / "metrics" / "quality").glob("*.tsv"):
        assert _steps(tsv) == [2, 4, 6, 8], tsv.name


def test_the_monitor_leaves_training_bit_identical(digits, tmp_path):
    """Weights, EMA, loss and torch's global RNG state after training are the same with the
    monitor as without (the hook's draws and a hook that consumes the global RNG both included)."""
    model, loss, x, cfg = _setup(digits, steps=4)
    monitor = _monitor(digits, n_quality=0)

    def greedy(m, step, live):  # also draws from torch's global generator
        torch.randn(1000)
        monitor(m, step, live)

    runs = {}
    for name, hook in (("off", None), ("on", greedy)):
        torch.manual_seed(1)
        ema, result = train(model, loss, x, cfg, seed=0, ckpt_dir=tmp_path / name / "ckpt",
                            live_dir=tmp_path / name / "live", progress=False, on_checkpoint=hook)
        runs[name] = (ema.state_dict(), result.final_loss, torch.get_rng_state())
    assert (tmp_path / "on" / "live" / "plots" / "images" / "samples" / "000004.png").is_file()
    (off, loss_off, rng_off), (on, loss_on, rng_on) = runs["off"], runs["on"]
    assert loss_on == loss_off
    assert torch.equal(rng_on, rng_off)
    for k, v in off.items():
        assert torch.equal(v, on[k]), k
    a, _ = io.load_tensors(tmp_path / "off" / "ckpt" / "step_00000004.safetensors")
    b, _ = io.load_tensors(tmp_path / "on" / "ckpt" / "step_00000004.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_keeps_the_declared_images_folder_when_nothing_is_shown(digits, tmp_path):
    """monitor.enabled false: no hook, no quality curve, yet plots/images (a declared DVC plot) exists."""
    model, loss, x, cfg = _setup(digits, steps=2)
    monitor = _monitor(digits, enabled=False)
    assert not monitor.active

    class Args:
        checkpoints, live = tmp_path / "ckpt", tmp_path / "live"

    fit(model, loss, x, cfg, Args, seed=0, fingerprint={}, monitor=monitor)
    assert (tmp_path / "live" / "plots" / "images").is_dir()
    assert not (tmp_path / "live" / "plots" / "metrics" / "quality").exists()


def test_data_without_an_evaluator_is_pictured_only(tmp_path):
    """2-D data without labels: a scatter per checkpoint, no quality metrics."""
    params = parse_params({"seed": 0, "score": {"space": "pixel"},
                           "data": {"name": "swiss_roll", "n_train": 200, "n_test": 100},
                           "monitor": {"n_grid": 50, "n_quality": 32}})
    meta = data.prepare(params.data, params.seed, tmp_path / "prepared")
    write_space(tmp_path / "space", meta["shape"])
    (tmp_path / "evaluator").mkdir()
    (tmp_path / "evaluator" / NO_EVALUATOR_FILE).write_text(json.dumps({"reason": "no labels"}))
    monitor = build_monitor(params, data=tmp_path / "prepared", space=tmp_path / "space",
                            evaluator=tmp_path / "evaluator")
    assert monitor.active and monitor.measure is None and monitor.n_quality == 0 and monitor.n_grid == 50
    torch.manual_seed(0)
    model = ScoreModel(build_net(params.model, meta["shape"]), build_process(params.process, meta))
    samples = monitor.draw(model, 50)
    assert samples.shape == (50, 2)
    assert monitor.picture(samples) is not None  # a scatter figure


def test_a_missing_evaluator_directory_is_named(digits, tmp_path):
    d, params, _ = digits
    with pytest.raises(FileNotFoundError, match=r"nowhere: not a directory of stage train_evaluator.*monitor\.enabled"):
        build_monitor(params, data=d / "prepared", space=d / "space", evaluator=tmp_path / "nowhere")


def test_on_device_predicts_where_the_model_is_and_returns_where_x_is(digits):
    """The wrapper the monitor samples a model on an accelerator with (checked here on the CPU)."""
    model, _, x, _ = _setup(digits)
    t = torch.rand(8)
    wrapped = OnDevice(model.eval(), torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(wrapped.eps(x[:8], t), model.eps(x[:8], t))
        assert torch.equal(wrapped.x0(x[:8], t), model.x0(x[:8], t))
    assert wrapped.process is model.process


def _measure_on_rank_0(rank: int, init_file: str, out: str) -> None:
    """One of two gloo processes: rank 0 builds the monitor and measures, rank 1 waits at a barrier
    after it (as the other training processes do while the main process runs the monitor)."""
    import torch.distributed as dist

    os.environ.update(WORLD_SIZE="2", RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    if rank == 0:
        from sbm.eval.quality import frechet_distance, kernel_distance

        real, fake = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), torch.randn(64, 8)
        Path(out).write_text(json.dumps({"fid": frechet_distance(real, fake),
                                         "kid": kernel_distance(real, fake, subsets=5, subset_size=32)}))
    dist.barrier()
    dist.destroy_process_group()


def test_fid_and_kid_are_measured_by_one_process_of_a_group(tmp_path):
    """Only the main process runs the monitor: FID/KID must not synchronise over the process group
    (torchmetrics' default all-gather would wait for the other processes forever)."""
    import torch.multiprocessing as mp

    out = tmp_path / "measured.json"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_measure_on_rank_0, args=(r, str(tmp_path / "init"), str(out))) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, "FID/KID waited for the other process (synchronised compute)"
    assert all(p.exitcode == 0 for p in procs)
    got = json.loads(out.read_text())
    assert got["fid"] > 0 and math.isfinite(got["kid"])


def test_under_several_processes_the_monitor_still_measures(digits, monkeypatch):
    """WORLD_SIZE > 1 (set by accelerate): the main process pictures *and* measures."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monitor = _monitor(digits)
    assert monitor.active and monitor.n_grid == 16 and monitor.measure is not None and monitor.n_quality > 0