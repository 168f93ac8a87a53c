"""Samplers driven by the exact score of a mixture: they must reproduce it."""

import numpy as np
import pytest
import torch

from sbm.config.params import SAMPLERS as SAMPLER_NAMES
from sbm.config.params import SamplerParams
from sbm.core.gmm import GaussianMixture
from sbm.core.model import AnalyticScoreModel
from sbm.core.processes import VESDE, VPSDE, NCSNLadder, SubVPSDE, process_from_config
from sbm.core.samplers import (
    SAMPLERS,
    annealed_langevin,
    build_sampler,
    ddim_step,
    ddpm_step,
    initial_state,
    langevin,
    reverse_diffusion_step,
    run_loop,
    schedule_for,
    snr_langevin_update,
)
from sbm.errors import ConfigError
from sbm.eval.distances import sliced_wasserstein

# NCSN's motivating example (Song & Ermon 2019, Fig. 3): modes far apart, weights 0.8 / 0.2.
TWO_MODES = GaussianMixture([0.8, 0.2], [[5.0, 5.0], [-5.0, -5.0]], [[[1.0, 0.0], [0.0, 1.0]]] * 2)
LADDER = NCSNLadder(0.05, 20.0, 10)


def _weights(x):
    lab = TWO_MODES.nearest_component(x)
    return torch.bincount(lab, minlength=2).float() / len(lab)


def test_annealed_langevin_recovers_unequal_weights_plain_langevin_does_not():
    model = AnalyticScoreModel(TWO_MODES.exact_score_fn(LADDER), LADDER)
    g = torch.Generator().manual_seed(0)
    n = 3000  # binomial s.e. of a weight: sqrt(.16/3000) ≈ 0.007
    out = annealed_langevin(model, LADDER.prior_sample((n, 2), generator=g), LADDER.grid(),
                            step_size=1e-3, steps_per_level=100, generator=g)
    w = _weights(out.x)
    assert abs(w[0] - 0.8) < 0.04, w
    assert out.nfe == 10 * 100 + 1  # levels × steps + the final Tweedie denoise
    # the samples also have the right spread within a mode (unit covariance)
    inner = out.x[TWO_MODES.nearest_component(out.x) == 0]
    assert torch.allclose(inner.std(0), torch.ones(2), atol=0.1)

    # Plain Langevin on the data score from a broad uniform start: each particle stays in
    # the basin it starts in, so the weights follow the basins' areas (≈ ½/½), not 0.8/0.2.
    x = 8 * (2 * torch.rand((n, 2), generator=g) - 1)
    plain = langevin(model, x, LADDER.grid(), step_size=0.1, n_steps=1000, generator=g)
    w_plain = _weights(plain.x)
    assert abs(w_plain[0] - 0.8) > 0.2, w_plain
    assert plain.nfe == 1000


def test_tweedie_denoise_is_the_posterior_mean():
    """For x₀ ~ N(μ, s²I): E[x₀ | x_σ] = μ + s²/(s²+σ²)(x_σ − μ) (Efron 2011)."""
    mu, s2 = torch.tensor([1.0, -2.0]), 0.5
    gauss = GaussianMixture([1.0], [mu.tolist()], [[[s2, 0.0], [0.0, s2]]])
    model = AnalyticScoreModel(gauss.exact_score_fn(LADDER), LADDER)
    x = torch.randn(100, 2) * 3
    ladder = torch.tensor([0.4])
    sigma2 = LADDER.sigma(ladder).item() ** 2
    identity = lambda m, x, i, sched, cond=None, generator=None: x  # noqa: E731 (no update)
    out = run_loop(identity, model, x, ladder, denoise=True)
    expect = mu + s2 / (s2 + sigma2) * (x - mu)
    assert torch.allclose(out.x, expect, atol=1e-5)
    assert out.nfe == 1


def test_callback_sees_every_level_and_generator_makes_runs_reproducible(mixture):
    model = AnalyticScoreModel(mixture.exact_score_fn(LADDER), LADDER)
    seen = []
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(3)
        x = LADDER.prior_sample((50, 2), generator=g)
        runs.append(annealed_langevin(model, x, LADDER.grid(), step_size=1e-3, steps_per_level=3, generator=g,
                                      callback=lambda i, t, x: seen.append(i)).x)
    assert seen == list(range(10)) * 2
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("name", ["langevin", "annealed_langevin"])
def test_samplers_built_from_params(mixture, name):
    cfg = SamplerParams(name=name, steps_per_level=2, langevin_steps=5, step_size=1e-3)
    sampler = build_sampler(cfg)
    model = AnalyticScoreModel(mixture.exact_score_fn(LADDER), LADDER)
    x_T = initial_state(cfg, LADDER, (20, 2))
    out = sampler(model, x_T, LADDER.grid())
    assert out.x.shape == (20, 2) and torch.isfinite(out.x).all()
    assert out.nfe == SAMPLERS[name].nfe(cfg, len(LADDER.grid()))


# ------------------------------------------------------------------ the whole sampler family
#
# Every sampler is driven by the exact score of the `mixture` fixture and must reproduce
# it. x_T is drawn from the exact marginal p_1 = α_1 x₀ + σ_1 ε (not the prior) so that only
# the sampler's own error is measured: for VE with σ_max = 20 the prior N(0, 400 I) misses
# the mixture's mean (−0.8, −1.6) by 0.09 sd, which alone moves the weights by ≈ 0.02.

VE = VESDE(0.01, 20.0)
VP = VPSDE()
SUBVP = SubVPSDE()
DDPM_LIN = process_from_config({"name": "ddpm", "beta_schedule": "linear", "beta_min": 0.1, "beta_max": 20.0,
                                "n_timesteps": 200})
DDPM_COS = process_from_config({"name": "ddpm", "beta_schedule": "cosine", "beta_min": 0.1, "beta_max": 20.0,
                                "n_timesteps": 200})


pytestmark = pytest.mark.usefixtures("one_thread")


N_MIX = 4000  # weight s.e. ≤ sqrt(.24/4000) ≈ 0.008: a 0.04 tolerance is 5 s.e. (≥ 3.9 after ≤ 0.01 of bias)
N_PROJ = 128

# (sampler params, process): every sampler and every process at least once; steps chosen
# so the discretisation bias of the weights is ≤ 0.01 (measured at n = 20000; the largest,
# ≈ 0.009, are the pc samplers with the reverse-diffusion predictor).
ACCURACY_CASES = [
    (dict(name="euler_maruyama", steps=200), VE),
    (dict(name="pc", steps=100, predictor="reverse_diffusion", corrector="langevin"), VP),
    (dict(name="pc", steps=100, predictor="euler_maruyama", corrector="annealed_langevin", step_size=1e-4), LADDER),
    (dict(name="pc", steps=100, predictor="reverse_diffusion", corrector="none"), SUBVP),
    (dict(name="ddpm", steps=None), DDPM_LIN),
    (dict(name="ddim", steps=50, eta=0.0), DDPM_COS),
    (dict(name="ddim", steps=50, eta=0.5), DDPM_LIN),
    (dict(name="ode_euler", steps=100), SUBVP),
    (dict(name="ode_heun", steps=30), VE),
    (dict(name="ode_heun", steps=30), VP),
    (dict(name="ode_adaptive"), VP),
]


def _exact_x_T(mixture, process, n, g):
    """x_1 ~ p_1 exactly: α(1) x₀ + σ(1) ε with x₀ from the mixture."""
    x0, _ = mixture.sample(n, generator=g)
    return process.perturb(x0, torch.ones(n), torch.randn(n, mixture.dim, generator=g))


def _sw_floor(mixture, n, g, pairs=8):
    """Mean SW₂ between independent true samples of size n: what sampling noise alone gives
    (≈ 0.25 at n = 4000, dominated by the multinomial noise of the weights across modes ≈ 11 apart)."""
    return float(np.mean([sliced_wasserstein(mixture.sample(n, generator=g)[0], mixture.sample(n, generator=g)[0],
                                             N_PROJ, generator=g) for _ in range(pairs)]))


@pytest.mark.parametrize("kw,process", ACCURACY_CASES,
                         ids=[f"{kw['name']}-{type(p).__name__}-{kw.get('predictor', '')}{kw.get('corrector', '')}"
                              f"{kw.get('eta', '')}" for kw, p in ACCURACY_CASES])
def test_sampler_reproduces_the_mixture(mixture, kw, process):
    """SW₂ to fresh true samples within 3× the true-vs-true floor (over 100 seeds the
    true-vs-true SW₂ at n = 4000 has mean 0.25, 95th percentile 0.45 and maximum 0.53, so
    3 × floor ≈ 0.75 is not reached by sampling noise; a weight off by 0.03 alone gives
    SW₂ ≈ √(0.03 · 8²) ≈ 1.4), and every mixture weight within 0.04 (see N_MIX)."""
    g = torch.Generator().manual_seed(1)
    cfg = SamplerParams(**kw)
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    out = build_sampler(cfg)(model, _exact_x_T(mixture, process, N_MIX, g), schedule_for(cfg, process), generator=g)
    assert torch.isfinite(out.x).all()
    sw = sliced_wasserstein(out.x, mixture.sample(N_MIX, generator=g)[0], N_PROJ, generator=g)
    floor = _sw_floor(mixture, N_MIX, g)
    assert sw < 3 * floor, (sw, floor)
    w = torch.bincount(mixture.nearest_component(out.x), minlength=3).double() / N_MIX
    assert (w - mixture.weights).abs().max() < 0.04, w


def test_the_registry_holds_exactly_the_configs_sampler_names():
    """sbm.config.params.SAMPLERS validates `sampler.name`; the config layer cannot import the
    registry, so this test keeps the two in step (same names, same order)."""
    assert tuple(SAMPLERS) == SAMPLER_NAMES


#: every sampler whose NFE the steps set (all but ode_adaptive), and the pc/ddim variants
FIXED_STEP = [dict(name=n) for n, spec in SAMPLERS.items() if spec.nfe(SamplerParams(name=n), 10) is not None] + [
    dict(name="pc", predictor="none", corrector="langevin", corrector_steps=3),
    dict(name="pc", predictor="euler_maruyama", corrector="annealed_langevin", corrector_steps=2),
    dict(name="pc", predictor="reverse_diffusion", corrector="none"),
    dict(name="ddim", eta=0.7),
]


@pytest.mark.parametrize("kw", FIXED_STEP, ids=lambda kw: "-".join(str(v) for v in kw.values()))
@pytest.mark.parametrize("process,steps", [(VP, 2), (VP, 7), (DDPM_LIN, 7), (DDPM_LIN, None)],
                         ids=["vp-2", "vp-7", "ddpm-7", "ddpm-native"])
@pytest.mark.parametrize("denoise", [True, False], ids=["denoise", "no_denoise"])
def test_fixed_step_samplers_count_their_evaluations(mixture, kw, process, steps, denoise):
    """The NFE counted on a run (`CountingModel`) is the registry's `SamplerSpec.nfe`."""
    cfg = SamplerParams(steps=steps, steps_per_level=2, langevin_steps=5, step_size=1e-4, denoise=denoise, **kw)
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    seen = []
    schedule = schedule_for(cfg, process)
    out = build_sampler(cfg)(model, process.prior_sample((8, 2)), schedule, callback=lambda i, t, x: seen.append(i))
    assert out.x.shape == (8, 2) and torch.isfinite(out.x).all()
    assert out.nfe == SAMPLERS[cfg.name].nfe(cfg, len(process.grid()))
    assert seen == ([0] if cfg.name == "langevin" else list(range(len(schedule))))


def test_ode_adaptive_leaves_its_nfe_to_the_solver():
    cfg = SamplerParams(name="ode_adaptive")
    assert SAMPLERS["ode_adaptive"].nfe(cfg, 1000) is None
    assert SAMPLERS["ode_adaptive"].for_budget(cfg, 50, 1000) == cfg


def test_schedule_for_uses_steps_or_the_native_grid():
    assert len(schedule_for(SamplerParams(steps=None), LADDER)) == 10
    assert len(schedule_for(SamplerParams(steps=None), DDPM_LIN)) == 200
    assert len(schedule_for(SamplerParams(steps=None), VP)) == 1000
    s = schedule_for(SamplerParams(steps=25), VP)
    assert len(s) == 25 and s[0] == 1 and s[-1] == pytest.approx(VP.t_min)


def test_pc_with_neither_predictor_nor_corrector_is_refused():
    with pytest.raises(ConfigError, match="predictor"):
        build_sampler(SamplerParams(name="pc", predictor="none", corrector="none"))


def test_ode_adaptive_agrees_with_fine_heun_and_is_deterministic(mixture):
    """RK45 (rtol = atol = 1e-6) and Heun with 1600 steps solve the same ODE from the same x_T.
    Most samples agree to ~1e-6; the worst ones start near the separatrix between modes,
    where the flow stretches errors: there Heun's error, measured at 100/400/1600 steps, is
    0.14 / 0.012 / 7e-4 (second order), RK45's ≈ 1e-4. Hence max < 3e-3 and median < 1e-4,
    against a data scale of ≈ 1."""
    g = torch.Generator().manual_seed(2)
    model = AnalyticScoreModel(mixture.exact_score_fn(VP), VP)
    x_T = VP.prior_sample((200, 2), generator=g)
    adaptive = build_sampler(SamplerParams(name="ode_adaptive", rtol=1e-6, atol=1e-6))
    heun = build_sampler(SamplerParams(name="ode_heun"))
    a = adaptive(model, x_T, VP.grid(), generator=torch.Generator().manual_seed(0))
    h = heun(model, x_T, VP.grid(1601))
    dist = (a.x - h.x).norm(dim=1)
    assert dist.max() < 3e-3 and dist.median() < 1e-4, (dist.max(), dist.median())
    assert 20 < a.nfe < 1000  # the solver's own evaluations (+ the denoise), far fewer than Heun's 3201
    # deterministic: the same x_T gives the same samples whatever the generator's state
    again = adaptive(model, x_T.clone(), VP.grid(), generator=torch.Generator().manual_seed(99))
    assert torch.equal(a.x, again.x)
    h2 = heun(model, x_T.clone(), VP.grid(1601), generator=torch.Generator().manual_seed(5))
    assert torch.equal(h.x, h2.x)


def test_ddim_with_eta_one_is_the_ddpm_posterior(mixture):
    """Eq. (7) with η = 1 rewrites eq. (6): with the same noise both give the same step,
    between consecutive DDPM steps and between any two times of a continuous process."""
    for process, (t, s) in [(DDPM_LIN, DDPM_LIN.time(torch.tensor([120, 119]))), (VE, torch.tensor([0.7, 0.4]))]:
        model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
        x = process.prior_sample((50, 2))
        a = ddpm_step(model, x, t, s, generator=torch.Generator().manual_seed(0))
        b = ddim_step(model, x, t, s, eta=1.0, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_reverse_diffusion_and_snr_corrector_discretise_like_score_sde(mixture):
    """Eq. (4) is score_sde's `discretize`: VE g_Δ² = σ_t² − σ_s²; DDPM f_Δ = (√(1−β_i) − 1) x,
    g_Δ² = β_i; the corrector's a_i of eq. (5) is 1 for VE and 1 − β_i for DDPM."""
    x = torch.randn(30, 2) * 3
    t, s = torch.tensor(0.6), torch.tensor(0.5)
    model = AnalyticScoreModel(mixture.exact_score_fn(VE), VE)
    g2 = VE.sigma(t.reshape(1)).item() ** 2 - VE.sigma(s.reshape(1)).item() ** 2
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    expect = x + g2 * model.score(x, t.expand(30)) + g2**0.5 * z
    got = reverse_diffusion_step(model, x, t, s, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, expect, atol=1e-4)

    model = AnalyticScoreModel(mixture.exact_score_fn(DDPM_LIN), DDPM_LIN)
    i = 150
    t, s = DDPM_LIN.time(torch.tensor([i, i - 1]))
    beta = DDPM_LIN.betas[i].item()
    expect = (2 - (1 - beta) ** 0.5) * x + beta * model.score(x, t.expand(30)) + beta**0.5 * z
    got = reverse_diffusion_step(model, x, t, s, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, expect, atol=1e-5)

    # the corrector step: δ = 2 a (r ‖z‖/‖s‖)², with a from the marginals
    for process, sched, a in [(VE, torch.tensor([0.6, 0.5]), 1.0), (DDPM_LIN, DDPM_LIN.time(torch.tensor([i, i - 1])),
                                                                    1 - beta)]:
        model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
        sc = model.score(x, sched[0].expand(30))
        ratio = z.norm(dim=1).mean() / sc.norm(dim=1).mean()
        delta = 2 * a * (0.16 * ratio) ** 2
        got = snr_langevin_update(model, x, 0, sched, snr=0.16, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(got, x + delta * sc + (2 * delta) ** 0.5 * z, atol=1e-5)


def test_ddpm_schedule_time_grid_round_trips():
    """The ddpm sampler's native grid visits every DDPM step N−1, …, 0 once (t_i = (i+1)/N)."""
    grid = DDPM_LIN.grid()
    assert torch.equal(DDPM_LIN.index(grid), torch.arange(199, -1, -1))
