"""Importance-sampled training times (objective.t_sampling importance, eq. (8) of sbm.core.losses) and
the --nll-levers mode of benchmarks/samplers_nll.py (issue #16)."""

import json
import math

import pytest
import torch

from sbm.config.params import ObjectiveParams, parse_params
from sbm.core.losses import (
    dsm_loss,
    importance_t,
    importance_weight,
    level_weight,
    sample_levels,
)
from sbm.core.model import AnalyticScoreModel
from sbm.core.processes import VESDE, VPSDE, SubVPSDE
from sbm.errors import ConfigError

PROCESSES = {"ve": lambda: VESDE(0.01, 20.0, 1e-3), "vp": lambda: VPSDE(0.1, 20.0, 1e-3),
             "subvp": lambda: SubVPSDE(0.1, 20.0, 1e-3), "vp-tmin1e-5": lambda: VPSDE(0.1, 20.0, 1e-5)}


def _grid(process, n=400_001):
    """t on [t_min, 1], float64, dense near t_min (where VP's q ∝ 1/t peaks): geometric in t − t_min + 1e-9."""
    return process.t_min - 1e-9 + torch.logspace(-9, math.log10(1 - process.t_min + 1e-9), n, dtype=torch.float64)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_importance_density_integrates_to_the_closed_form_cdf(name):
    """q(t) = u/(importance_weight), u = 1/(1 − t_min), integrated by the trapezoid rule from t_min equals the
    closed-form CDF (log σ̃²(t) − log σ̃²(t_min))/Z of eq. (8) and ends at 1: g²/σ² = d log σ̃²/dt."""
    process = PROCESSES[name]()
    t = _grid(process)
    q = 1 / ((1 - process.t_min) * importance_weight(process, t))
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(q, t)])
    ls = process.sigma_tilde(t).log()
    exact = (ls - ls[0]) / (ls[-1] - ls[0])
    assert abs(float(cdf[-1]) - 1) < 1e-6
    assert float((cdf - exact).abs().max()) < 1e-6


@pytest.mark.parametrize("name", list(PROCESSES))
def test_importance_draws_follow_the_cdf(name):
    """Empirical CDF of 100k `importance_t` draws at 9 quantiles of eq. (8) within 5 binomial standard errors."""
    process, n = PROCESSES[name](), 100_000
    t = importance_t(process, n, generator=torch.Generator().manual_seed(0)).double()
    assert ((t >= process.t_min - 1e-7) & (t <= 1.0)).all()
    lo, hi = process.sigma_tilde(torch.tensor([process.t_min, 1.0], dtype=torch.float64)).log().tolist()
    for p in torch.linspace(0.1, 0.9, 9, dtype=torch.float64):
        tp = process.t_from_sigma_tilde(torch.exp(lo + (hi - lo) * p.reshape(1)), clip=False)
        frac = float((t <= tp).double().mean())
        assert abs(frac - float(p)) < 5 * math.sqrt(float(p * (1 - p)) / n), (float(p), frac)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_importance_weighted_average_is_the_uniform_average(name):
    """For a fixed integrand h(t), mean of importance_weight(t) h(t) over t ~ q equals ∫ h dt/(1 − t_min)
    (the uniform-t expectation), within 5 Monte Carlo standard errors."""
    process, n = PROCESSES[name](), 400_000
    h = lambda t: torch.sin(5 * t) + t**2 + 0.3
    t = importance_t(process, n, generator=torch.Generator().manual_seed(1)).double()
    v = importance_weight(process, t) * h(t)
    grid = _grid(process)
    uniform = float(torch.trapezoid(h(grid), grid)) / (1 - process.t_min)
    se = float(v.std()) / math.sqrt(n)
    assert abs(float(v.mean()) - uniform) < 5 * se, (float(v.mean()), uniform, se)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_likelihood_weighting_with_importance_draws_is_constant(name):
    """λ/σ² × u/q = Z/(1 − t_min), Z = log σ̃(1)²/σ̃(t_min)², at every t: the importance-sampled
    likelihood-weighted DSM of Song et al. (2021b) is the σ²-weighted DSM up to that constant."""
    process = PROCESSES[name]()
    model = AnalyticScoreModel(lambda x, t: torch.zeros_like(x), process)
    t = sample_levels(process, 1000, ObjectiveParams(t_sampling="importance"),
                      generator=torch.Generator().manual_seed(2)).double()
    w = level_weight(model, t, ObjectiveParams(weighting="likelihood", t_sampling="importance"))
    lo, hi = process.sigma_tilde(torch.tensor([process.t_min, 1.0], dtype=torch.float64)).log().tolist()
    assert torch.allclose(w, torch.full_like(w, 2 * (hi - lo) / (1 - process.t_min)), rtol=1e-9)


def test_importance_dsm_loss_has_the_uniform_expectation(mixture):
    """The likelihood-weighted DSM loss of the exact score on the mixture: its mean over importance draws
    matches its mean over uniform draws (one objective, two estimators) within 5 combined standard
    errors, and the importance estimator's standard deviation is several times smaller (VP)."""
    process = VPSDE(0.1, 20.0, 1e-3)
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    x0 = mixture.sample(100_000, generator=torch.Generator().manual_seed(3))[0].double()
    out = {}
    for ts in ("uniform", "importance"):
        torch.manual_seed(4)
        v = dsm_loss(model, x0, cfg=ObjectiveParams(weighting="likelihood", t_sampling=ts)).double()
        out[ts] = (float(v.mean()), float(v.std()) / math.sqrt(len(v)), float(v.std()))
    (mu, su, sdu), (mi, si, sdi) = out["uniform"], out["importance"]
    assert abs(mu - mi) < 5 * math.hypot(su, si), out
    assert sdi < sdu / 3, out


def test_t_sampling_importance_is_a_param():
    assert parse_params({"objective": {"t_sampling": "importance"}}).objective.t_sampling == "importance"
    with pytest.raises(ConfigError, match=r"allowed: uniform, lognormal, importance"):
        parse_params({"objective": {"t_sampling": "loguniform"}})


# ------------------------------------------------------------------ the benchmark mode


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("samplers_nll")


def test_nll_levers_quick_runs_both_mixtures(bench, tmp_path):
    """--nll-levers --quick: every quick lever on both mixtures, the exact score's gap near 0, the hf mixture's
    exact density in the prepared (x/R) coordinates, and a JSON without machine paths."""
    out = tmp_path / "levers.json"
    report = bench.main(["--nll-levers", "--quick", "--threads", "1", "--out", str(out)])
    rows = {(r["mixture"], r["lever"]): r for r in report["rows"]}
    assert set(rows) == {(m, lv) for m in bench.MIXTURES for lv in bench.QUICK_LEVERS}
    for m in bench.MIXTURES:
        exact = rows[(m, "exact-vp")]
        assert exact["train_steps"] == 0 and abs(exact["gap"]) < 5 * exact["gap_se"] + 0.02, exact
        assert all(math.isfinite(r["gap"]) and 0 <= r["dw_max"] < 1 for (mm, _), r in rows.items() if mm == m)
    hf = next(i for i in report["mixtures"] if i["mixture"] == "hf3d")
    assert hf["dim"] == 3
    assert torch.allclose(torch.tensor(hf["truth"]["means"]), torch.tensor(bench.MIXTURE_3D["means"]) / bench.HF_RANGE)
    text = out.read_text()
    json.loads(text)
    assert str(tmp_path.parent) not in text and "/tmp" not in text and str(bench.ROOT) not in text


def test_nll_levers_refuses_unknown_names(bench, tmp_path):
    with pytest.raises(SystemExit, match="--levers: unknown"):
        bench.main(["--nll-levers", "--levers", "vx", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="--mixtures: unknown"):
        bench.main(["--nll-levers", "--mixtures", "moons", "--out", str(tmp_path / "x.json")])


def test_the_plain_mode_runs_on_the_mixture_whatever_params_data_names(bench, tmp_path):
    """params.yaml's data is the digits; the samplers/NLL mode needs a known density, so it prepares
    params data.gmm (the gap to the exact NLL is only defined there)."""
    out = tmp_path / "plain.json"
    report = bench.main(["--quick", "--samplers", "ddim", "--steps-train", "50", "--n", "200",
                         "--nll-points", "20", "--data", str(tmp_path / "none"), "--out", str(out)])
    assert json.loads(out.read_text())["nll"]["n"] == 20
    nll = report["nll"]
    assert math.isfinite(nll["gap"]) and nll["nll_exact"] == pytest.approx(nll["nll"] - nll["gap"], abs=1e-9)
    assert {r["sampler"] for r in report["rows"]} == {"ddim"}
