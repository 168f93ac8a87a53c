"""Samplers driven by the exact score of a mixture: they must reproduce it."""

import pytest
import torch

from sbm.config import SamplerParams
from sbm.gmm import GaussianMixture
from sbm.models import AnalyticScoreModel
from sbm.processes import NCSNLadder
from sbm.samplers import annealed_langevin, build_sampler, initial_state, langevin, run_loop

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
    assert out.nfe == (5 if name == "langevin" else 20) + int(cfg.denoise)
