"""The pure helpers of benchmarks/peer_diffusers.py: the peer's wall-clock lr schedule, the
budget read from the pipeline's reports, mean ± sd and the table, the inputs check, the pixel
variant's params, and the peer's sampling loop against an exact ε (nothing is trained here)."""

import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sbm.config.params import load_params, to_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def peer(benchmark_script):
    return benchmark_script("peer_diffusers")


# --------------------------------------------------------------------------- lr schedule


def test_lr_warms_up_linearly_by_step_like_diffusers(peer):
    def lr(step: int) -> float:
        return peer.peer_lr(step, 0.5, lr=1e-3, warmup_steps=100, warmup_end=None, budget=10.0)

    assert lr(0) == 0.0  # get_cosine_schedule_with_warmup: step / warmup, the first step at 0
    assert lr(50) == pytest.approx(5e-4)
    assert lr(99) == pytest.approx(9.9e-4)


def test_lr_decays_by_cosine_over_the_wall_clock_left_after_warm_up(peer):
    def lr(elapsed: float) -> float:
        return peer.peer_lr(200, elapsed, lr=1e-3, warmup_steps=100, warmup_end=2.0, budget=12.0)

    assert lr(2.0) == pytest.approx(1e-3)
    assert lr(7.0) == pytest.approx(5e-4)  # half of the 10 s left
    assert lr(2.0 + 10 / 3) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 3)))
    assert lr(12.0) == pytest.approx(0.0, abs=1e-15) and lr(50.0) == pytest.approx(0.0, abs=1e-15)
    values = [lr(2.0 + 0.5 * i) for i in range(21)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_lr_is_zero_when_the_warm_up_outlasts_the_budget(peer):
    assert peer.peer_lr(100, 5.0, lr=1e-3, warmup_steps=100, warmup_end=5.0, budget=4.0) == 0.0


# --------------------------------------------------------------------------- budget


def _report(path: Path, **entries) -> Path:
    path.write_text(json.dumps(entries))
    return path


def test_budget_is_the_sum_of_both_training_stages(peer, tmp_path):
    budget = peer.read_budget(_report(tmp_path / "vae.json", space="latent", train_seconds=538.66),
                              _report(tmp_path / "score.json", space="latent", train_seconds=657.21))
    assert budget["seconds"] == pytest.approx(1195.87)
    assert budget["parts"] == {"train_vae": 538.66, "train_score": 657.21}
    assert "vae.json" in budget["source"] and "score.json" in budget["source"]


def test_a_pixel_pipeline_trains_no_vae(peer, tmp_path):
    budget = peer.read_budget(_report(tmp_path / "vae.json", space="pixel"),
                              _report(tmp_path / "score.json", train_seconds=60.0))
    assert budget["seconds"] == 60.0 and budget["parts"]["train_vae"] == 0.0


def test_a_missing_report_names_the_file_and_the_pipeline(peer, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"score\.json: missing.*make run"):
        peer.read_budget(_report(tmp_path / "vae.json", train_seconds=1.0), tmp_path / "score.json")
    with pytest.raises(ValueError, match="no train_seconds"):
        peer.read_budget(_report(tmp_path / "vae.json", space="latent"), _report(tmp_path / "s.json", train_seconds=1))


def test_missing_inputs_are_named_with_their_flags(peer, tmp_path):
    data, space, evaluator = tmp_path / "prepared", tmp_path / "latent", tmp_path / "evaluator"
    for d in (data, space, evaluator):
        d.mkdir()
    (data / "meta.json").write_text("{}")
    (evaluator / "none.json").write_text(json.dumps({"reason": "no labels"}))
    missing = peer.missing_inputs({"--data": data, "--space": space, "--model": tmp_path / "score.safetensors",
                                   "--evaluator": evaluator})
    assert missing == [f"--space {space}: no space.json", f"--model {tmp_path / 'score.safetensors'}: missing",
                       f"--evaluator {evaluator}: no evaluator (no labels); this benchmark needs labelled data"]


def test_bad_flags_stop_before_any_work(peer, capsys):
    for argv in (["--seeds", "0"], ["--budget-seconds", "-1"], ["--n", "3"],
                 ["--pixel-model", "a", "--save-pixel-model", "b"]):
        with pytest.raises(SystemExit):
            peer.parse_args(argv)
    assert "--seeds = 0: must be >= 1" in capsys.readouterr().err


# --------------------------------------------------------------------------- summaries and the table


def test_mean_sd_and_its_text(peer):
    assert peer.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert peer.mean_sd([4.0]) == (4.0, None)
    assert peer.mean_sd([1.0, math.nan, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert math.isnan(peer.mean_sd([math.nan])[0])
    assert peer.fmt_mean_sd(3.14159, 0.01234) == "3.142 ± 0.012"
    assert peer.fmt_mean_sd(0.0088, None) == "0.0088"
    assert peer.fmt_mean_sd(5337.2, 183.0) == "5337 ± 180"  # no exponents for big values
    assert peer.fmt_mean_sd(12345.6, 0.0) == "12350 ± 0"
    assert peer.fmt_mean_sd(math.nan, None) == "—"


def test_table_has_a_column_per_metric_and_the_fid_ratio_to_the_floor(peer):
    floor = peer.summarise([{"fid": 2.0, "recall": 0.9}, {"fid": 2.0, "recall": 0.9}])
    row = {"model": "peer (diffusers)", "sampler": "ddim", "nfe": 10, "seconds_per_sample": 1e-3,
           "train_seconds": 1195.9, "parameters": "1,001,729",
           "metrics": peer.summarise([{"fid": 5.0, "recall": 0.5}, {"fid": 7.0, "recall": 0.7}])}
    lines = peer.table([row], floor).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "model", "sampler", "NFE", "fid", "fid/floor", "recall", "s/sample", "train s", "parameters"]
    floor_row, peer_row = ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:4])
    assert floor_row[:6] == ["real train (floor)", "—", "—", "2 ± 0", "1.00", "0.9 ± 0"]
    assert peer_row == ["peer (diffusers)", "ddim", "10", "6 ± 1.4", "3.00", "0.6 ± 0.14", "1.00e-03", "1196",
                        "1,001,729"]


def test_json_holds_no_nan(peer):
    assert peer.finite_or_none({"a": [1.0, math.nan], "b": (math.inf, "x")}) == {"a": [1.0, None], "b": [None, "x"]}


# --------------------------------------------------------------------------- the pixel variant's params


def test_pixel_params_change_only_the_space_the_steps_and_the_monitor(peer, tmp_path):
    base = load_params(ROOT / "params.yaml")
    pixel = load_params(peer.pixel_params(ROOT / "params.yaml", 7, tmp_path / "params.yaml"))
    assert pixel.score.space == "pixel" and pixel.train.steps == 7 and not pixel.monitor.enabled
    a, b = to_dict(base), to_dict(pixel)
    for d in (a, b):
        d["score"].pop("space")
        d["train"].pop("steps")
        d["monitor"].pop("enabled")
    assert a == b


# --------------------------------------------------------------------------- the peer's sampling loop


def test_peer_sampling_loop_recovers_gaussian_data_from_its_exact_eps(peer):
    """x₀ ~ N(m, s²) per pixel: E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ m)/(ᾱ s² + 1 − ᾱ). DDPM at 1000 steps
    with this ε must give back mean m and sd s; DDIM spends one call per step."""
    from diffusers import DDIMScheduler

    m, s = 0.3, 0.2
    ddpm = peer.peer_scheduler()

    class ExactEps:
        config = SimpleNamespace(in_channels=1, sample_size=8)

        def __call__(self, x, t):
            a = ddpm.alphas_cumprod[int(t)]
            return SimpleNamespace(sample=(1 - a).sqrt() * (x - a.sqrt() * m) / (a * s * s + 1 - a))

    x, nfe, seconds = peer.sample_peer(ExactEps(), peer.peer_scheduler(), 1000, 100, batch_size=60, seed=0)
    assert x.shape == (100, 1, 8, 8) and nfe == 1000 and seconds > 0
    assert float(x.mean()) == pytest.approx(m, abs=0.01) and float(x.std()) == pytest.approx(s, abs=0.01)
    y, nfe, _ = peer.sample_peer(ExactEps(), DDIMScheduler.from_config(ddpm.config), 25, 10, batch_size=10, seed=0)
    assert nfe == 25 and torch.equal(y, peer.sample_peer(ExactEps(), DDIMScheduler.from_config(ddpm.config), 25,
                                                         10, batch_size=10, seed=0)[0])
