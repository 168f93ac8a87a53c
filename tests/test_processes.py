"""Noise processes: marginals against a simulation of their forward SDE, and their contracts."""

import math

import pytest
import torch

from sbm.config.params import parse_params
from sbm.core.losses import relative_weight
from sbm.core.processes import (
    VESDE,
    VPSDE,
    DDPMSchedule,
    NCSNLadder,
    SubVPSDE,
    build_process,
    ddpm_betas,
    process_from_config,
)
from sbm.errors import ConfigError

SDES = {
    "ve": VESDE(0.05, 10.0, 0.0),
    "vp": VPSDE(0.1, 20.0, 1e-3),
    "subvp": SubVPSDE(0.1, 20.0, 1e-3),
}


@pytest.mark.parametrize("name", list(SDES))
def test_marginals_match_a_simulation_of_the_forward_sde(name):
    """Simulate dx = f dt + g dw by Euler–Maruyama with fine steps from x₀ ~ N(m, s²I) and
    compare mean and std at several t with α(t) m and √(α² s² + σ²) (equation 1)."""
    process = SDES[name]
    g = torch.Generator().manual_seed(0)
    n, steps, m, s = 40_000, 2000, 2.0, 0.5
    x = (m + s * torch.randn(n, 1, generator=g, dtype=torch.float64))
    t0 = 0.0
    checks = {0.1: None, 0.3: None, 0.6: None, 1.0: None}
    dt = 1.0 / steps
    for k in range(steps):
        t = torch.full((n,), t0 + k * dt, dtype=torch.float64)
        f, gt = process.sde(x, t)
        x = x + f * dt + gt[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=g, dtype=torch.float64)
        tk = round(t0 + (k + 1) * dt, 6)
        if tk in checks:
            checks[tk] = (x.mean().item(), x.std().item())
    for tk, (mean, std) in checks.items():
        a, sig = process.marginal(torch.tensor([tk], dtype=torch.float64))
        want_mean, want_std = (a * m).item(), math.sqrt(a.item() ** 2 * s**2 + sig.item() ** 2)
        # Monte-Carlo s.e. of the mean is std/√n ≈ 0.005·std; Euler–Maruyama bias at 2000 steps is smaller
        assert mean == pytest.approx(want_mean, abs=5 * want_std / math.sqrt(n) + 2e-3), (name, tk)
        assert std == pytest.approx(want_std, rel=0.02), (name, tk)


def test_ddpm_sde_is_the_vp_sde_it_discretises():
    betas = ddpm_betas("linear", 1000, 0.1, 20.0)
    ddpm, vp = DDPMSchedule(betas), VPSDE(0.1, 20.0, 1e-3)
    t = torch.tensor([0.1, 0.5, 0.9])
    # the discrete ᾱ and the continuous exp(−∫β) agree to O(β²) per step; g = √(Nβ_i) and √β(t)
    # differ by the grid offset (t_i = (i+1)/N against i/(N−1)), under 1%
    assert torch.allclose(ddpm.alpha(t), vp.alpha(t), atol=2e-3)
    assert torch.allclose(ddpm.sde(torch.ones(3, 1), t)[1], vp.sde(torch.ones(3, 1), t)[1], rtol=1e-2)


def test_ncsn_ladder_is_geometric_with_the_vp_levels_at_its_grid():
    ladder = NCSNLadder(0.01, 10.0, 5)
    sig = ladder.sigma(ladder.grid())
    ratios = sig[:-1] / sig[1:]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))
    assert sig[0].item() == pytest.approx(10.0) and sig[-1].item() == pytest.approx(0.01)
    t = ladder.sample_t(1000, generator=torch.Generator().manual_seed(0))
    assert set(t.tolist()) <= set(ladder.levels_t().tolist())


@pytest.mark.parametrize("process", [*SDES.values(), NCSNLadder(0.01, 5.0, 7), DDPMSchedule(ddpm_betas("cosine", 50, 0.1, 20)),
                                     build_process(parse_params({"process": {"name": "ddpm", "n_timesteps": 100,
                                                                             "beta_schedule": "cosine"}}).process)])
def test_config_round_trip_and_grid(process):
    again = process_from_config(process.to_config())
    t = torch.linspace(0.05, 1.0, 9)
    assert torch.allclose(again.sigma(t), process.sigma(t)) and torch.allclose(again.alpha(t), process.alpha(t))
    grid = process.grid(10)
    assert grid[0] == pytest.approx(1.0) and grid[-1] == pytest.approx(process.t_min, abs=1e-6)
    assert (grid[1:] < grid[:-1]).all()
    x = process.prior_sample((4000, 3), generator=torch.Generator().manual_seed(0))
    assert x.std().item() == pytest.approx(process.prior_std(), rel=0.05)
    # prior log-density is the Gaussian's
    lp = process.prior_logp(torch.zeros(1, 3))
    assert lp.item() == pytest.approx(-1.5 * math.log(2 * math.pi * process.prior_std() ** 2))


def test_likelihood_weighting_is_g2():
    """λ(t) = g(t)² for `likelihood`: for VE, g²/σ² = 2 ln(σ_max/σ_min), a constant."""
    ve = SDES["ve"]
    t = torch.tensor([0.1, 0.5, 0.9])
    assert torch.allclose(relative_weight(ve, t, "likelihood"), torch.full((3,), 2 * math.log(10.0 / 0.05)))
    assert torch.equal(relative_weight(ve, t, "sigma2"), torch.ones(3))


def test_build_process_uses_the_data_diameter_and_checks_it():
    cfg = parse_params({"process": {"name": "ve", "sigma_min": 0.5}}).process
    assert build_process(cfg, {"sigma_max": 12.0}).sigma_max == 12.0
    with pytest.raises(ConfigError, match="needs the prepared data's meta.json"):
        build_process(cfg, {})
    with pytest.raises(ConfigError, match=r"sigma_min = 0.5 >= sigma_max = 0.4 \(the data max pairwise distance\)"):
        build_process(cfg, {"sigma_max": 0.4})
