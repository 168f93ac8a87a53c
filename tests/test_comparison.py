"""Sampler comparison: NFE budgets are met, rows carry the distances and the floor, every run is
drawn with each sampling seed and summarised as mean ± sd of the per-seed scores."""

import dataclasses
import statistics

import pytest
import torch

from sbm.config.params import SamplerParams
from sbm.core.model import AnalyticScoreModel
from sbm.core.processes import VPSDE, NCSNLadder
from sbm.core.samplers import SAMPLERS
from sbm.eval.distances import distance_report
from sbm.eval.quality import QualityMeter, embed
from sbm.eval.spread import seed_range
from sbm.eval.sweep import (
    compare_samplers,
    conditional_sampler_params,
    draw,
    over_seeds,
    sample_quality,
    settings_for_nfe,
)
from sbm.pipeline.plots import _log_tick


@pytest.mark.parametrize("name", [n for n, spec in SAMPLERS.items() if spec.nfe(SamplerParams(name=n), 10) is not None])
@pytest.mark.parametrize("budget", [10, 21, 50])
def test_settings_for_nfe_meet_the_budget(mixture, name, budget):
    process = NCSNLadder(0.05, 20.0, 10) if "langevin" in name else VPSDE(0.1, 20.0, 1e-3)
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    native = len(process.grid())
    cfg = settings_for_nfe(SamplerParams(batch_size=50), name, budget, native)
    _, nfe, _ = draw(model, cfg, 50, (2,), seed=0)
    assert nfe == SAMPLERS[name].nfe(cfg, native)
    # Heun and EDM spend 2 per step and pc 1 + corrector_steps: a budget can be missed by one step's cost
    slack = {"ode_heun": 1, "edm": 1, "pc": 1, "annealed_langevin": 9}.get(name, 0)
    assert budget - slack <= nfe <= budget, (name, budget, nfe)


def test_conditional_sampler_params_is_the_sampler_or_a_budgeted_one():
    process = VPSDE(0.1, 20.0, 1e-3)
    model = AnalyticScoreModel(lambda x, t: -x, process)
    base = SamplerParams(name="euler_maruyama", steps=50, n_samples=7, eta=0.3)
    assert conditional_sampler_params(base, None, 10, model) is base  # null: params sampler as it is
    cfg = conditional_sampler_params(base, "dpmpp_2m", 10, model)
    assert cfg == settings_for_nfe(base, "dpmpp_2m", 10, len(process.grid()))
    assert cfg.name == "dpmpp_2m" and SAMPLERS["dpmpp_2m"].nfe(cfg, len(process.grid())) == 10
    assert (cfg.n_samples, cfg.eta) == (7, 0.3)  # the other settings are params sampler's


def test_compare_samplers_rows(mixture):
    process = VPSDE(0.1, 20.0, 1e-3)
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    test, _ = mixture.sample(400, generator=torch.Generator().manual_seed(1))
    ref, _ = mixture.sample(400, generator=torch.Generator().manual_seed(2))
    rows = compare_samplers(model, SamplerParams(), ["ddim", "ode_adaptive"], [10, 40], test=test, reference=ref,
                            n=400, n_projections=32, progress=False)
    assert [(r["sampler"], r["budget"]) for r in rows] == [("ddim", 10), ("ddim", 40), ("ode_adaptive", None)]
    ddim10, ddim40 = rows[0], rows[1]
    assert ddim10["nfe"] == 10 and ddim40["nfe"] == 40
    # one seed (the default): each score is its single value, with no sd
    assert all(set(r["swd"]) == {"mean", "values"} and r["swd"]["values"] == [r["swd"]["mean"]] for r in rows)
    # the exact-score ODE sampler at 40 steps is as close to the test points as real data is,
    # up to the noise of SW₂ at n = 400 (the floor itself varies by ~2× between draws)
    assert ddim40["swd"]["mean"] < 3 * ddim40["swd_floor"]
    assert all(r["non_finite"] == 0 and r["swd_floor"] > 0 for r in rows)


class _Flat(torch.nn.Module):
    """The identity feature map on flattened points."""

    num_features = 2

    def forward(self, x):
        return x.reshape(len(x), -1).double()


def _meter(real):
    feature = _Flat()
    return QualityMeter(feature, embed(feature, real), kid_subsets=10, kid_subset_size=100, seed=0)


def test_every_run_is_drawn_with_each_seed_and_reported_as_mean_and_sd(mixture):
    """Seeds 5, 6, 7: each row's value for seed s is the score of the samples `draw` gives with seed s
    (different draws, so different values), its mean and sd (n − 1) those of the three values; the
    floors are one number, the real training points' (the meter's floor at n, SW₂ of the subsets of `seed`)."""
    process = VPSDE(0.1, 20.0, 1e-3)
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    test, _ = mixture.sample(300, generator=torch.Generator().manual_seed(1))
    ref, _ = mixture.sample(300, generator=torch.Generator().manual_seed(2))
    meter, n, seeds = _meter(test), 200, (5, 6, 7)
    (row,) = compare_samplers(model, SamplerParams(), ["ddim"], [10], test=test, reference=ref, n=n,
                              n_projections=32, seed=5, seeds=seeds, progress=False, quality=meter)
    cfg = dataclasses.replace(settings_for_nfe(SamplerParams(), "ddim", 10, len(process.grid())),
                              batch_size=min(SamplerParams().batch_size, n))
    for i, s in enumerate(seeds):
        x, _, _ = draw(model, cfg, n, (2,), seed=s)
        assert row["fid"]["values"][i] == pytest.approx(meter(x)["fid"], rel=1e-9)
        d = distance_report(x, test, ref, n, 32, seed=5)
        assert row["swd"]["values"][i] == pytest.approx(d["swd"], rel=1e-9) and row["swd_floor"] == d["swd_floor"]
    for k in ("fid", "kid", "precision", "recall", "swd", "mmd"):
        values = row[k]["values"]
        assert len(values) == 3
        assert row[k]["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert row[k]["sd"] == pytest.approx(statistics.stdev(values), rel=1e-9)
    for k in ("fid", "kid", "swd", "mmd"):  # continuous scores of different draws differ
        assert len(set(row[k]["values"])) == 3, (k, row[k])
    assert {k: row[f"{k}_floor"] for k in ("fid", "kid", "precision", "recall")} == meter.floor(ref, n)
    assert row["nfe"] == 10 and row["non_finite"] == 0


def test_over_seeds_summarises_scores_keeps_floors_once_and_combines_the_cost():
    def run(s):
        return {"fid": float(s), "fid_floor": 2.0, "nfe": 10 + s, "seconds_per_sample": 0.1 * s, "non_finite": s,
                "per_class": [s, 2 * s], **({"swd": 1.0} if s != 2 else {})}

    out = over_seeds(run, [1, 2, 3])
    assert out["fid"] == {"mean": 2.0, "sd": 1.0, "values": [1.0, 2.0, 3.0]}
    assert out["fid_floor"] == 2.0 and out["nfe"] == 13 and out["non_finite"] == 6 and out["per_class"] == [2.0, 4.0]
    assert out["seconds_per_sample"] == pytest.approx(0.2)
    assert "swd" not in out  # seed 2 has none: no summary of two values posing as three
    assert over_seeds(run, [4])["fid"] == {"mean": 4.0, "values": [4.0]}  # one seed: no sd
    with pytest.raises(ValueError, match=r"fid_floor differs between the sampling seeds \[0, 1\]"):
        over_seeds(lambda s: {"fid_floor": float(s)}, [0, 1])
    with pytest.raises(ValueError, match="eval.seeds = 0"):
        seed_range(3, 0)
    assert seed_range(3, 2) == (3, 4)


def test_sample_quality_scores_each_seeds_draw(mixture):
    """Accuracy (a duck-typed evaluator: the class is the side of x₀) and FID per seed are those of the samples
    `draw` gives with that seed; per-class accuracy is each class's mean over the seeds."""
    process = VPSDE(0.1, 20.0, 1e-3)
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    test, _ = mixture.sample(300, generator=torch.Generator().manual_seed(1))
    ref, _ = mixture.sample(300, generator=torch.Generator().manual_seed(2))

    class Side:
        def predict(self, x):
            return (x[:, 0] > 0).long()

    meter, cfg = _meter(test), SamplerParams(name="ddim", steps=10, batch_size=64)
    labels = torch.tensor([0, 1]).repeat_interleave(60)
    q = sample_quality(model, cfg, 120, (2,), meter=meter, reference=ref, seeds=(0, 1), labels=labels, cond=labels,
                       evaluator=Side())
    per_class = []
    for i, s in enumerate((0, 1)):
        x, nfe, _ = draw(model, cfg, 120, (2,), cond=labels, seed=s)
        pred = Side().predict(x)
        assert q["accuracy"]["values"][i] == float((pred == labels).double().mean())
        assert q["fid"]["values"][i] == pytest.approx(meter(x)["fid"], rel=1e-9)  # FID ignores the order of rows
        per_class.append([float((pred[labels == c] == c).double().mean()) for c in (0, 1)])
    assert q["fid"]["values"][0] != q["fid"]["values"][1] and q["nfe"] == nfe
    assert q["per_class"] == pytest.approx([statistics.fmean(c) for c in zip(*per_class)])
    assert q["fid_floor"] == meter.floor(ref, 120)["fid"]
    with pytest.raises(ValueError, match="119 labels for 120 samples"):
        sample_quality(model, cfg, 120, (2,), meter=meter, reference=ref, seeds=(0,), labels=labels[:-1],
                       evaluator=Side())


def test_log_axis_ticks_are_plain_numbers_at_1_2_5():
    assert [_log_tick(v) for v in (0.2, 0.3, 1, 2, 3, 5, 10, 20, 40, 50, 500)] == \
        ["0.2", "", "1", "2", "", "5", "10", "20", "", "50", "500"]
