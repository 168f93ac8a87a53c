"""DPM-Solver++ (2M, 3M), UniPC and EDM's sampler (`sbm.core.samplers` eq. 10–12) driven by the exact
score of the 2-D Gaussian mixture (the `mixture` fixture): they reproduce it, their error against a
fine reference solution of the probability-flow ODE falls at their order, EDM without churn is
Heun's method in σ̃ written out, and each spends the NFE its `SamplerSpec` states at every budget.
(Against diffusers' schedulers step for step: tests/test_solvers_reference.py.)"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from sbm.config.params import SamplerParams, parse_params
from sbm.core.model import AnalyticScoreModel
from sbm.core.processes import VESDE, VPSDE, SubVPSDE, process_from_config
from sbm.core.samplers import SAMPLERS, build_sampler, dpm_solver_pp, edm, edm_update, schedule_for
from sbm.errors import ConfigError
from sbm.eval.distances import sliced_wasserstein

pytestmark = pytest.mark.usefixtures("one_thread")

VE = VESDE(0.01, 20.0)
VP = VPSDE()
SUBVP = SubVPSDE()
DDPM = process_from_config({"name": "ddpm", "beta_schedule": "linear", "beta_min": 0.1, "beta_max": 20.0,
                            "n_timesteps": 200})
NEW = ["dpmpp_2m", "dpmpp_3m", "unipc", "edm"]


def _exact_x_T(mixture, process, n, g, dtype=torch.float32):
    """x_1 ~ p_1 exactly (α(1) x₀ + σ(1) ε), so that only the sampler's error is measured."""
    x0, _ = mixture.sample(n, generator=g)
    return process.perturb(x0.to(dtype), torch.ones(n, dtype=dtype), torch.randn(n, 2, generator=g, dtype=dtype))


# ------------------------------------------------------------------ they reproduce the mixture

N_MIX = 4000  # a weight's s.e. ≤ sqrt(.24/4000) ≈ 0.008
ACCURACY_CASES = [
    (dict(name="dpmpp_2m", steps=21, schedule="logsnr"), VP),
    (dict(name="dpmpp_3m", steps=21), DDPM),
    (dict(name="unipc", steps=21, schedule="karras"), VE),
    (dict(name="unipc", order=3, steps=21, schedule="logsnr"), SUBVP),
    (dict(name="edm", steps=11, schedule="karras"), VE),
    (dict(name="edm", steps=26, schedule="karras", churn=10.0, s_tmin=0.05, s_tmax=10.0), VP),
]


@pytest.mark.parametrize("kw,process", ACCURACY_CASES,
                         ids=[f"{kw['name']}-{type(p).__name__}-{kw.get('schedule', 'uniform')}"
                              for kw, p in ACCURACY_CASES])
def test_new_samplers_reproduce_the_mixture(mixture, kw, process):
    """At 20–50 NFE: SW₂ to fresh true samples within 3× the true-vs-true floor (≈ 0.25 at n = 4000;
    a weight off by 0.03 alone gives ≈ 1.4) and every weight within 0.04 (5 s.e.)."""
    g = torch.Generator().manual_seed(1)
    cfg = SamplerParams(**kw)
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    out = build_sampler(cfg)(model, _exact_x_T(mixture, process, N_MIX, g), schedule_for(cfg, process), generator=g)
    assert out.nfe == SAMPLERS[cfg.name].nfe(cfg, len(process.grid())) <= 51
    assert torch.isfinite(out.x).all()
    sw = sliced_wasserstein(out.x, mixture.sample(N_MIX, generator=g)[0], 128, generator=g)
    floor = np.mean([sliced_wasserstein(mixture.sample(N_MIX, generator=g)[0], mixture.sample(N_MIX, generator=g)[0],
                                        128, generator=g) for _ in range(8)])
    assert sw < 3 * floor, (sw, floor)
    w = torch.bincount(mixture.nearest_component(out.x), minlength=3).double() / N_MIX
    assert (w - mixture.weights).abs().max() < 0.04, w


# ------------------------------------------------------------------ they converge at their order

#: sampler params -> the order at which its error falls. UniC raises UniP-p to p + 1. DPM-Solver++(3M)
#: as published (Lu et al.'s code, diffusers, k-diffusion) weighs its second difference D₂ = ½h²x̂₀″ by
#: −α_s φ₃, half the −2α_s φ₃ that Taylor's expansion asks for, so its local error keeps an O(h³)
#: term and it converges at order 2 — with a constant several times below 2M's (asserted below).
ORDERS = {
    "dpmpp_2m": (dict(name="dpmpp_2m"), 2),
    "dpmpp_3m": (dict(name="dpmpp_3m"), 2),
    "unipc-1": (dict(name="unipc", order=1), 2),
    "unipc-2": (dict(name="unipc", order=2), 3),
    "unipc-3": (dict(name="unipc", order=3), 4),
    "edm": (dict(name="edm"), 2),
}
STEPS = (20, 40, 80, 160)


def _reference(mixture, process):
    """(model, x_T, reference): 200 points of the mixture's p_1 (float64), carried to t_min by RK45 at
    rtol = atol = 1e-11 and denoised there (eq. 2)."""
    g = torch.Generator().manual_seed(0)
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    x_T = _exact_x_T(mixture, process, 200, g, torch.float64)
    ends = torch.tensor([1.0, process.t_min], dtype=torch.float64)
    ode = build_sampler(SamplerParams(name="ode_adaptive", rtol=1e-11, atol=1e-11, denoise=True))
    return model, x_T, ode(model, x_T, ends).x


def _errors(model, x_T, ref, kw, schedule):
    """Median over the points of ‖x − x_ref‖ after each number of steps in STEPS. The median: the few
    points that start on the separatrix between two modes stretch any error there."""
    errs = []
    for steps in STEPS:
        cfg = SamplerParams(steps=steps + 1, schedule=schedule, denoise=True, **kw)
        x = build_sampler(cfg)(model, x_T, schedule_for(cfg, model.process).double()).x
        errs.append((x - ref).norm(dim=1).median().item())
    return errs


@pytest.mark.parametrize("process,schedule", [(VP, "logsnr"), (VE, "karras")], ids=["vp-logsnr", "ve-karras"])
def test_errors_fall_at_the_nominal_order(mixture, process, schedule):
    """Deterministic samplers from the same x_T at 20, 40, 80, 160 steps against RK45: the observed
    order log₂(e_K / e_2K), averaged over the three doublings, within [p − 0.4, p + 0.9] of the
    nominal p (higher-order methods converge faster than their order before the asymptotic regime),
    and 3M's error below 2M's at every step count."""
    model, x_T, ref = _reference(mixture, process)
    observed, errors = {}, {}
    for name, (kw, _) in ORDERS.items():
        errors[name] = e = _errors(model, x_T, ref, kw, schedule)
        observed[name] = math.log2(e[0] / e[-1]) / (len(STEPS) - 1)
    for name, (_, p) in ORDERS.items():
        assert p - 0.4 <= observed[name] <= p + 0.9, (name, observed[name], errors[name])
    assert all(a < b for a, b in zip(errors["dpmpp_3m"], errors["dpmpp_2m"])), errors


# ------------------------------------------------------------------ EDM: Heun in σ̃, and its churn


def _heun_in_sigma(model, x, times):
    """Karras et al. 2022, Alg. 1 for α = 1 (VE), written out: dx/dσ = (x − D(x; σ))/σ between the σ
    of consecutive `times`, Euler then the trapezoid, D = model.x0."""
    sig = model.process.sigma(times.double()).tolist()
    n = len(x)
    for i in range(len(times) - 1):
        d = (x - model.x0(x, times[i].expand(n))) / sig[i]
        x_euler = x + (sig[i + 1] - sig[i]) * d
        d_next = (x_euler - model.x0(x_euler, times[i + 1].expand(n))) / sig[i + 1]
        x = x + (sig[i + 1] - sig[i]) * (d + d_next) / 2
    return x


def test_edm_without_churn_is_heun_in_sigma(mixture):
    model = AnalyticScoreModel(mixture.exact_score_fn(VE), VE)
    x_T = _exact_x_T(mixture, VE, 300, torch.Generator().manual_seed(3), torch.float64)
    times = schedule_for(SamplerParams(steps=12, schedule="karras"), VE).double()
    g = torch.Generator().manual_seed(5)
    out = edm(model, x_T, times, churn=0.0, denoise=False, generator=g)
    torch.testing.assert_close(out.x, _heun_in_sigma(model, x_T, times), rtol=1e-12, atol=1e-12)
    assert out.nfe == 2 * 11
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(5).get_state())  # no noise drawn


def test_edm_churn_adds_noise_in_its_window_only(mixture):
    """One step 0.5 -> 0.4 of VE at K = 10 points, S_churn = 2: γ = 0.2, σ̂ = 1.2 σ̃, noise
    √(σ̂² − σ̃²) S_noise z, then Heun from σ̂ — as written out here; a window [S_tmin, S_tmax] that
    excludes σ̃ makes it the deterministic step, drawing no noise."""
    model = AnalyticScoreModel(mixture.exact_score_fn(VE), VE)
    x = _exact_x_T(mixture, VE, 100, torch.Generator().manual_seed(3), torch.float64)
    times = torch.linspace(0.5, 0.4, 10, dtype=torch.float64)[:2]  # the first step; K is set below
    sig_t = VE.sigma(times)[0].item()
    sig_hat = 1.2 * sig_t
    t_hat = torch.tensor(math.log(sig_hat / VE.sigma_min) / math.log(VE.sigma_max / VE.sigma_min),
                         dtype=torch.float64)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x_hat = x + math.sqrt(sig_hat**2 - sig_t**2) * 1.1 * z
    expect = _heun_in_sigma(model, x_hat, torch.stack([t_hat, times[1]]))

    schedule = torch.cat([times, torch.linspace(0.3, 0.0, 8, dtype=torch.float64)])  # K = 10 points
    got = edm_update(model, x, 1, schedule, churn=2.0, s_noise=1.1, s_tmin=0.0, s_tmax=None,
                     generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, expect, rtol=1e-10, atol=1e-10)
    plain = edm_update(model, x, 1, schedule, churn=0.0, s_noise=1.1, s_tmin=0.0, s_tmax=None)
    for window in [dict(s_tmin=sig_t * 1.01, s_tmax=None), dict(s_tmin=0.0, s_tmax=sig_t * 0.99)]:
        g = torch.Generator().manual_seed(7)
        outside = edm_update(model, x, 1, schedule, churn=2.0, s_noise=1.1, generator=g, **window)
        assert torch.equal(outside, plain)
        assert torch.equal(g.get_state(), torch.Generator().manual_seed(7).get_state())
    assert not torch.allclose(got, plain)


# ------------------------------------------------------------------ NFE at every budget


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("schedule", ["uniform", "karras", "logsnr"])
@pytest.mark.parametrize("denoise", [True, False], ids=["denoise", "no_denoise"])
def test_new_samplers_spend_their_budget(mixture, name, schedule, denoise):
    """For the budgets of compare_samplers, `for_budget` picks the steps and the run's counted NFE
    (`CountingModel`) is the spec's `nfe`, at most the budget (at most one below it)."""
    model = AnalyticScoreModel(mixture.exact_score_fn(VP), VP)
    spec = SAMPLERS[name]
    base = SamplerParams(name=name, schedule=schedule, denoise=denoise, churn=1.0)
    for budget in (5, 10, 20, 50):
        cfg = spec.for_budget(base, budget, 1000)
        seen = []
        out = build_sampler(cfg)(model, VP.prior_sample((8, 2)), schedule_for(cfg, VP),
                                 callback=lambda i, t, x: seen.append(i), generator=torch.Generator().manual_seed(0))
        assert out.nfe == spec.nfe(cfg, 1000), (budget, cfg.steps)
        assert budget - 1 <= out.nfe <= budget
        assert seen == list(range(cfg.steps)) and torch.isfinite(out.x).all()


def test_multistep_solvers_refuse_a_step_that_does_not_lower_the_noise(mixture):
    """A DDPM grid of more points than its N steps repeats levels (h = 0): a clear error, not a NaN."""
    model = AnalyticScoreModel(mixture.exact_score_fn(DDPM), DDPM)
    with pytest.raises(ValueError, match="does not lower the noise"):
        dpm_solver_pp(model, DDPM.prior_sample((4, 2)), DDPM.grid(300), order=2)


def test_edm_params_are_validated():
    with pytest.raises(ConfigError, match=r"sampler\.s_tmax = 1\.0 < sampler\.s_tmin = 2\.0"):
        parse_params({"sampler": {"s_tmin": 2.0, "s_tmax": 1.0}})
    with pytest.raises(ConfigError, match=r"sampler\.churn = -1\.0: must be >= 0"):
        parse_params({"sampler": {"churn": -1.0}})
    with pytest.raises(ConfigError, match=r"sampler\.order = 4: must be <= 3"):
        parse_params({"sampler": {"order": 4}})
    assert dataclasses.replace(SamplerParams(), s_tmin=0.5, s_tmax=None).s_tmax is None
