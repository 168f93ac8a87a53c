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
    # sampling keeps no autograd graph (a graph over 1000 steps of a real U-Net is tens of GB)
    class WithWeight(torch.nn.Module):
        config = ExactEps.config

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x, t):
            return SimpleNamespace(sample=self.scale * ExactEps()(x, t).sample)

    w, _, _ = peer.sample_peer(WithWeight(), DDIMScheduler.from_config(ddpm.config), 5, 4, batch_size=4, seed=0)
    assert not w.requires_grad
    # written in sbm's format (params sampler.quantize): the same draws, rounded to the 17 levels
    from sbm.core.units import quantize

    q, _, _ = peer.sample_peer(ExactEps(), DDIMScheduler.from_config(ddpm.config), 25, 10, batch_size=10, seed=0,
                               write=lambda v: quantize(v, 17))
    assert torch.equal(q, quantize(y, 17)) and not torch.equal(q, y)


# --------------------------------------------------------------------------- the default NFE and the sbm rows


def test_default_nfe_of_params_own_sampler_is_20_for_dpmpp_2m_at_20_steps(peer):
    from sbm.config.params import SamplerParams

    assert peer.default_nfe(SamplerParams(name="dpmpp_2m", steps=20), 1000) == 20  # 19 steps + the denoise
    assert peer.default_nfe(SamplerParams(name="dpmpp_2m", steps=20, denoise=False), 1000) == 19
    own = load_params(ROOT / "params.yaml").sampler
    if (own.name, own.steps, own.denoise) == ("dpmpp_2m", 20, True):  # params' default today
        assert peer.default_nfe(own, 1000) == 20


@pytest.mark.parametrize("name, settings, native, nfe", [
    ("dpmpp_2m", {"steps": 20}, 1000, 20),
    ("euler_maruyama", {"steps": 20}, 1000, 20),
    ("euler_maruyama", {"steps": None}, 1000, 1000),  # null steps: the process's own grid
    ("ode_heun", {"steps": 11}, 1000, 21),  # two evaluations a step
    ("pc", {"steps": 20, "predictor": "reverse_diffusion", "corrector": "langevin", "corrector_steps": 1}, 1000, 40),
    ("annealed_langevin", {"steps": None, "steps_per_level": 100}, 10, 1001),
])
def test_default_nfe_matches_the_samplers_table_and_round_trips_through_settings_for_nfe(peer, name, settings,
                                                                                         native, nfe):
    from sbm.config.params import SamplerParams
    from sbm.core.samplers import SAMPLERS
    from sbm.eval.sweep import settings_for_nfe

    cfg = SamplerParams(name=name, **settings)
    assert peer.default_nfe(cfg, native) == nfe == SAMPLERS[name].nfe(cfg, native)
    # settings_for_nfe at the default NFE spends exactly that many evaluations
    assert SAMPLERS[name].nfe(settings_for_nfe(cfg, name, nfe, native), native) == nfe


def test_a_solver_picked_nfe_has_no_default_nfe(peer):
    from sbm.config.params import SamplerParams

    assert peer.default_nfe(SamplerParams(name="ode_adaptive"), 1000) is None
    assert peer.sbm_targets(SamplerParams(name="ode_adaptive"), 1000, False) == [
        (10, False), (25, False), (50, False), (None, True)]


def test_sbm_targets_add_the_default_nfe_once_sorted(peer):
    from sbm.config.params import SamplerParams

    assert peer.sbm_targets(SamplerParams(name="dpmpp_2m", steps=20), 1000, False) == [
        (10, False), (20, True), (25, False), (50, False)]
    assert peer.sbm_targets(SamplerParams(name="dpmpp_2m", steps=25), 1000, False) == [
        (10, False), (25, True), (50, False)]  # the default already one of NFES: flagged, not repeated
    assert peer.sbm_targets(SamplerParams(name="dpmpp_2m", steps=20), 1000, True) == [
        (10, False), (20, True), (25, False), (50, False), (1000, False)]


def test_sampling_runs_hold_the_default_nfe_once_drawn_with_params_own_settings(peer):
    from sbm.config.params import SamplerParams

    model = SimpleNamespace(process=SimpleNamespace(grid=lambda: torch.linspace(1, 0, 1000)))
    base = SamplerParams(name="dpmpp_2m", steps=20, batch_size=100)
    runs = peer.sampling_runs({"sbm latent": {"kind": "sbm", "model": model, "space": None}}, base, 100, 100,
                              1000, False)
    assert [(r[0], r[1], r[2], r[3]) for r in runs] == [
        ("sbm latent", "dpmpp_2m", 10, False), ("sbm latent", "dpmpp_2m", 20, True),
        ("sbm latent", "dpmpp_2m", 25, False), ("sbm latent", "dpmpp_2m", 50, False)]
    assert [r[2] for r in runs].count(20) == 1
    assert runs[1][4].args[3] is None  # the default row: params' sampler as it is, not re-derived
    assert [r[4].args[3] for r in runs if not r[3]] == [10, 25, 50]


def test_the_table_marks_the_default_row(peer):
    floor = peer.summarise([{"fid": 2.0}])
    row = {"model": "sbm latent", "sampler": "dpmpp_2m", "nfe": 20, "default": True, "seconds_per_sample": 1e-3,
           "train_seconds": None, "parameters": "1", "metrics": peer.summarise([{"fid": 3.0}])}
    assert "| dpmpp_2m (default) |" in peer.table([row], floor).replace("  ", " ").replace("  ", " ")


# --------------------------------------------------------------------------- issue #15's goals


def _row(model, sampler, target, fids, default=False):
    return {"model": model, "sampler": sampler, "target_nfe": target, "nfe": target, "default": default,
            "metrics": {"fid": {"values": fids, **dict(zip(("mean", "sd"), _mean_sd(fids)))}}}


def _mean_sd(values):
    from sbm.eval import spread

    return spread.mean_sd(values) if len(values) > 1 else (values[0], None)


def _rows(peer, *, ddim=(9.0, 8.0, 7.0), ddpm=6.0, sbm=(6.5, 5.0, 4.5, 4.0), pixel=1.0):
    """The peer's DDIM 10/25/50 and DDPM 1000; sbm latent at 10, 20 (default), 25, 50; an sbm pixel
    row that beats everything (never the goals' model)."""
    rows = [_row(peer.PEER, "ddim", n, [f - 0.5, f + 0.5]) for n, f in zip((10, 25, 50), ddim)]
    if ddpm is not None:
        rows.append(_row(peer.PEER, "ddpm", 1000, [ddpm - 0.5, ddpm + 0.5]))
    rows += [_row("sbm latent", "dpmpp_2m", n, [f, f], default=n == 20) for n, f in zip((10, 20, 25, 50), sbm)]
    rows += [_row("sbm pixel", "dpmpp_2m", n, [pixel, pixel], default=n == 20) for n in (10, 20, 25, 50)]
    return rows


def _goals(peer, rows, floor_fid=4.0):
    floor = peer.summarise([{"fid": floor_fid}, {"fid": floor_fid}])
    return {g["goal"]: g for g in peer.goals(rows, floor, sbm_model="sbm latent")}


def test_goals_met(peer):
    g = _goals(peer, _rows(peer, ddim=(9.0, 8.0, 7.0), ddpm=6.0, sbm=(6.5, 5.0, 4.5, 4.0)))
    assert [g[k]["met"] for k in (1, 2, 3)] == [True, True, True]
    assert g[1]["compared"][0] == {"row": "sbm latent dpmpp_2m (default) NFE 20", "fid_mean": 5.0, "fid_sd": 0.0,
                                   "missing": False}
    assert g[1]["compared"][1]["row"] == f"{peer.PEER} ddpm NFE 1000"  # the best peer row: DDPM here
    assert g[1]["compared"][1]["fid_sd"] == pytest.approx(math.sqrt(0.5))
    assert "best peer row: peer (diffusers) ddpm NFE 1000" in g[1]["note"]
    assert g[1]["ratio"] == pytest.approx(5.0 / 6.0)
    assert g[2]["ratio"] == pytest.approx(6.5 / 7.0) and g[2]["compared"][1]["row"] == f"{peer.PEER} ddim NFE 50"
    assert g[3]["ratio"] == pytest.approx(5.0 / 4.0)  # ≤ 1.3
    assert "mean" in g[1]["description"] and "mean" in g[2]["description"] and "mean" in g[3]["description"]


def test_goals_not_met(peer):
    g = _goals(peer, _rows(peer, ddim=(9.0, 8.0, 4.0), ddpm=6.0, sbm=(6.5, 5.0, 4.5, 4.0)), floor_fid=3.0)
    assert [g[k]["met"] for k in (1, 2, 3)] == [False, False, False]
    assert g[1]["compared"][1]["row"] == f"{peer.PEER} ddim NFE 50"  # the best peer row: DDIM 50 here
    assert g[1]["ratio"] == pytest.approx(5.0 / 4.0)
    assert g[3]["ratio"] == pytest.approx(5.0 / 3.0)


def test_goal_2_is_met_at_equal_fid_and_goal_1_is_not(peer):
    g = _goals(peer, _rows(peer, ddim=(9.0, 8.0, 6.5), ddpm=5.0, sbm=(6.5, 5.0, 4.5, 4.0)), floor_fid=5.0 / 1.3)
    assert g[1]["met"] is False and g[2]["met"] is True and g[3]["met"] is True  # 5.0 / (5 / 1.3) = 1.3


def test_goals_with_a_missing_row_are_not_decided(peer):
    # --quick: DDPM runs at 50 steps, not the goal's 1000: goal 1 cannot be met, only refuted
    rows = [r for r in _rows(peer) if r["sampler"] != "ddpm"] + [_row(peer.PEER, "ddpm", 50, [30.0])]
    g = _goals(peer, rows)
    assert g[1]["met"] is None and "missing: peer (diffusers) ddpm NFE 1000" in g[1]["note"]
    assert g[1]["compared"][1]["row"] == f"{peer.PEER} ddim NFE 50"  # the best of the rows present
    assert g[2]["met"] is True and g[3]["met"] is True
    # the rows present already beat the default: refuted whatever the missing row says
    rows = [r for r in _rows(peer, ddim=(9.0, 8.0, 4.0)) if r["sampler"] != "ddpm"]
    assert _goals(peer, rows)[1]["met"] is False
    # no sbm row at 10, no DDIM 50, no default: None, the missing figure flagged
    rows = [r for r in _rows(peer) if not (r["model"] == "sbm latent" and r["target_nfe"] in (10, 20))
            and not (r["sampler"] == "ddim" and r["target_nfe"] == 50)]
    g = _goals(peer, rows)
    assert g[1]["met"] is None and g[2]["met"] is None and g[3]["met"] is None
    assert g[2]["compared"][0]["missing"] and g[2]["compared"][1]["missing"] and g[2]["ratio"] is None
    # a row whose every seed scored NaN counts as missing
    rows = _rows(peer)
    rows[5]["metrics"]["fid"]["mean"] = math.nan  # sbm latent at 20, the default
    assert _goals(peer, rows)[3]["met"] is None


def test_goals_list_the_two_measured_elsewhere_and_print_as_a_table(peer):
    entries = peer.goals(_rows(peer), peer.summarise([{"fid": 4.0}]), sbm_model="sbm latent")
    assert [g["goal"] for g in entries] == [1, 2, 3, 4, 5]
    assert [g["measured"] for g in entries] == [True, True, True, False, False]
    assert "reports/distill_eval.json" in entries[3]["note"] and "stage-time table" in entries[4]["note"]
    text = peer.goals_table(entries)
    lines = text.splitlines()
    assert len(lines) == 2 + 5 and "not measured here" in lines[5] and "not measured here" in lines[6]
    assert "5 ± 0" in lines[2] and "0.83 (< 1)" in lines[2] and "| yes " in lines[2]
    assert json.loads(json.dumps(peer.finite_or_none(entries))) == peer.finite_or_none(entries)
    assert "0.0049 (< 1)" in peer.goals_table([{**entries[0], "ratio": 0.004948}])  # not "0.00"
