"""The training monitor of stages distill and train_vae (issue #17, "DVCLive, fully"): at every
checkpoint a picture and the small-n quality rows land in the plot files dvc.yaml declares, and a
run stopped after its first checkpoint and rerun continues those curves without duplicates."""

from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from sbm.config.params import parse_params, read_yaml
from sbm.core.model import ScoreModel
from sbm.core.processes import build_process
from sbm.eval.evaluator import EVALUATOR_FILE, save_evaluator, train_evaluator
from sbm.latent.vae import write_space
from sbm.models.score import save_model
from sbm.nets.score import build_net
from sbm.pipeline import data
from sbm.pipeline import monitoring
from sbm.pipeline.monitoring import build_reconstruction_monitor
from sbm.pipeline.prepared import load_split

from stage_runs import Killed, killed_after_first_checkpoint, run_stage

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
STAGES = read_yaml(ROOT / "dvc.yaml")["stages"]
PARAMS = {
    "seed": 0,
    "score": {"space": "pixel"},
    "data": {"name": "digits"},
    "model": {"unet": {"channels": [8, 16], "layers_per_block": 1, "attention": [False, False],
                       "mid_attention": False, "norm_groups": 4}},
    "evaluator": {"channels": [8, 16], "hidden": 16, "steps": 30, "kid_subsets": 10},
    "monitor": {"n_grid": 16, "n_quality": 32},
    "train": {"warmup_steps": 2, "log_every": 2, "checkpoint_every": 2},
    # rounds 4 -> 2 student steps, 4 optimiser steps each: checkpoints at 2 and 4
    "distill": {"steps": 2, "teacher_steps": 8, "steps_per_round": 4, "batch_size": 32},
    "vae": {"channels": [8, 16], "norm_groups": 4, "latent_channels": 2, "steps": 4, "batch_size": 32},
}
QUALITY = ["fid", "kid", "precision", "recall"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Prepared digits in pixel space, a small evaluator and an (untrained) score teacher."""
    d = tmp_path_factory.mktemp("digits")
    params = parse_params(PARAMS)
    meta = data.prepare(params.data, params.seed, d / "prepared")
    space = write_space(d / "space", meta["shape"])
    x, y = load_split(d / "prepared", "train")
    save_evaluator(d / "evaluator" / EVALUATOR_FILE, train_evaluator(x, y, params.evaluator, params.seed), {})
    torch.manual_seed(0)
    teacher = ScoreModel(build_net(params.model, meta["shape"]), build_process(params.process, meta), "eps",
                         float(x.std()))
    save_model(d / "score.safetensors", teacher, extra={"loss": "dsm", "data_shape": meta["shape"],
                                                         "data_range": meta.get("value_range"), "space": space,
                                                         "space_dir": str(d / "space")})
    return d


def _params(tmp_path, **overrides) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**PARAMS, **overrides}))
    return path


def _steps(tsv: Path) -> list[int]:
    header, *rows = tsv.read_text().splitlines()
    col = header.split("\t").index("step")
    return [int(float(r.split("\t")[col])) for r in rows if r.strip()]


def _declared_plots(stage: str) -> dict[str, dict]:
    return {next(iter(p)) if isinstance(p, dict) else p: (next(iter(p.values())) if isinstance(p, dict) else {})
            for p in STAGES[stage].get("plots", [])}


def _check_shown(plots: Path, steps: list[int]) -> None:
    """plots (a live directory's plots/): one picture and one quality row per checkpoint, once each."""
    assert sorted(p.name for p in (plots / "images" / "samples").iterdir()) == [f"{s:06d}.png" for s in steps]
    with Image.open(plots / "images" / "samples" / f"{steps[-1]:06d}.png") as img:
        assert img.mode == "RGB"
    quality = plots / "metrics" / "quality"
    assert sorted(p.stem for p in quality.glob("*.tsv")) == QUALITY
    for tsv in quality.glob("*.tsv"):
        assert _steps(tsv) == steps, tsv.name
    loss = _steps(plots / "metrics" / "loss.tsv")
    assert loss == sorted(set(loss)) and loss[-1] == steps[-1]  # increasing, no duplicated row


def _sampler_spy(monkeypatch) -> list:
    """-> the list of the `sampler` settings each build_monitor call gets from now on."""
    samplers, build = [], monitoring.build_monitor

    def spy(params, **kw):
        samplers.append(kw["sampler"])
        return build(params, **kw)

    monkeypatch.setattr(monitoring, "build_monitor", spy)
    return samplers


def test_distill_shows_each_round_sampled_its_own_way_and_a_rerun_continues(digits, tmp_path, monkeypatch):
    d = digits
    live = tmp_path / "live"
    argv = ["--params", str(_params(tmp_path)), "--data", str(d / "prepared"), "--space", str(d / "space"),
            "--model", str(d / "score.safetensors"), "--text-model", str(tmp_path / "none.safetensors"),
            "--evaluator", str(d / "evaluator"), "--out", str(tmp_path / "student.safetensors"),
            "--checkpoints", str(tmp_path / "ckpt"), "--live", str(live), "--metrics", str(tmp_path / "distill.json")]
    samplers = _sampler_spy(monkeypatch)
    restore = killed_after_first_checkpoint(monkeypatch)
    with pytest.raises(Killed):
        run_stage("distill", argv, monkeypatch)
    _check_shown(live / "round_0004" / "plots", [2])
    restore()
    stale = live / "round_0016" / "plots" / "metrics"  # a round of other settings (teacher_steps 32), persisted
    stale.mkdir(parents=True)
    (stale / "loss.tsv").write_text("step\tloss\n0\t1.0\n")
    run_stage("distill", argv, monkeypatch)  # resumes round 4 at step 2, then trains round 2
    for name in ("round_0004", "round_0002"):
        _check_shown(live / name / "plots", [2, 4])
    assert sorted(p.name for p in live.iterdir()) == ["round_0002", "round_0004"]  # this run's rounds only
    assert not list(live.rglob("metrics.json"))  # no summaries inside the declared plot directory
    # each round's student drawn with DDIM (η = 0) at its own steps (+ 1 grid points), as evaluate_distill does
    assert [(s.name, s.steps, s.eta) for s in samplers] == [("ddim", 5, 0.0), ("ddim", 5, 0.0), ("ddim", 3, 0.0)]
    assert (tmp_path / "student.safetensors").is_file()

    plots = _declared_plots("distill")
    assert plots["reports/live/distill"] == {"cache": False, "persist": True, "x": "step"}
    assert "data/models/evaluator" in STAGES["distill"]["deps"] and "monitor" in STAGES["distill"]["params"]


def test_a_consistency_student_is_shown_with_the_consistency_sampler(digits, tmp_path, monkeypatch):
    """distill.method = consistency: one run (live/consistency), its student drawn by the consistency
    sampler at distill.steps + 1 grid points (as evaluate_distill), a picture and quality rows per checkpoint."""
    d = digits
    live = tmp_path / "live"
    params = _params(tmp_path, distill={**PARAMS["distill"], "method": "consistency", "teacher_steps": 6})
    argv = ["--params", str(params), "--data", str(d / "prepared"), "--space", str(d / "space"),
            "--model", str(d / "score.safetensors"), "--text-model", str(tmp_path / "none.safetensors"),
            "--evaluator", str(d / "evaluator"), "--out", str(tmp_path / "student.safetensors"),
            "--checkpoints", str(tmp_path / "ckpt"), "--live", str(live), "--metrics", str(tmp_path / "distill.json")]
    samplers = _sampler_spy(monkeypatch)
    run_stage("distill", argv, monkeypatch)
    assert [(s.name, s.steps) for s in samplers] == [("consistency", 3)]
    assert sorted(p.name for p in live.iterdir()) == ["consistency"]
    _check_shown(live / "consistency" / "plots", [2, 4])


def test_train_vae_shows_reconstructions_and_their_quality_and_a_rerun_continues(digits, tmp_path, monkeypatch):
    d = digits
    live = tmp_path / "live"
    argv = ["--params", str(_params(tmp_path, score={"space": "latent"})), "--data", str(d / "prepared"),
            "--evaluator", str(d / "evaluator"), "--out", str(tmp_path / "latent"),
            "--checkpoints", str(tmp_path / "ckpt"), "--live", str(live),
            "--metrics", str(tmp_path / "train_vae.json"), "--plot", str(tmp_path / "reconstructions.png")]
    restore = killed_after_first_checkpoint(monkeypatch)
    with pytest.raises(Killed):
        run_stage("train_vae", argv, monkeypatch)
    _check_shown(live / "plots", [2])
    restore()
    run_stage("train_vae", argv, monkeypatch)
    _check_shown(live / "plots", [2, 4])
    with Image.open(live / "plots" / "images" / "samples" / "000004.png") as img:
        assert img.size[1] > img.size[0]  # 4 × 4 real digits above 4 × 4 reconstructions
    assert (tmp_path / "latent" / "vae.safetensors").is_file()

    plots = _declared_plots("train_vae")
    assert plots["reports/live/train_vae/plots/metrics"]["x"] == "step"
    assert plots["reports/live/train_vae/plots/images"] == {"cache": False, "persist": True}
    assert "data/models/evaluator" in STAGES["train_vae"]["deps"] and "monitor" in STAGES["train_vae"]["params"]


def test_train_vae_in_pixel_space_still_declares_an_empty_images_folder(digits, tmp_path, monkeypatch):
    d = digits
    live = tmp_path / "live"
    run_stage("train_vae", ["--params", str(_params(tmp_path)), "--data", str(d / "prepared"),
                         "--evaluator", str(tmp_path / "nowhere"), "--out", str(tmp_path / "latent"),
                         "--checkpoints", str(tmp_path / "ckpt"), "--live", str(live),
                         "--metrics", str(tmp_path / "m.json"), "--plot", str(tmp_path / "r.png")], monkeypatch)
    assert (live / "plots" / "images").is_dir() and not list((live / "plots" / "images").iterdir())
    assert _steps(live / "plots" / "metrics" / "loss.tsv") == []


def test_a_perfect_autoencoder_scores_exactly_the_floor(digits):
    """The VAE monitor measures the reconstructions of the floor's own real examples: an identity
    autoencoder's quality equals the floor (so FID − floor is what the autoencoder loses)."""
    d = digits

    class Identity(torch.nn.Module):
        def encode(self, x):
            return x

        def decode(self, z):
            return z

    m = build_reconstruction_monitor(parse_params(PARAMS), data=d / "prepared", evaluator=d / "evaluator")
    assert m.active and m.n_grid == 16 and m.n_quality == 32
    x = m.draw(Identity(), m.n_quality)
    assert m.measure(x) == pytest.approx(m.floor, rel=1e-9)
    picture = m.picture(x[:16])  # real examples above their reconstructions: here the same tiles twice
    half = picture.shape[0] // 2
    assert picture.ndim == 3 and picture.shape[0] == 2 * half and (picture[:half] == picture[half:]).all()
