"""sbm.core.likelihood against exact answers: the probability-flow ODE log-likelihood with the
exact score of a Gaussian mixture / a Gaussian, the Hutchinson estimator against the exact
divergence, and bits/dim of quantised data under known densities.

Error budget of the ODE likelihood with the exact score (sbm.core.likelihood, eq. 3):
logp − log p₀(x) = [log p_{t_min}(x) − log p₀(x)] + [log π(x_1) − log p_1(x_1)] + solver error.
- t_min: VP/sub-VP at t_min = 1e-5 have σ(t_min) ≈ 3e-3, and log p_{t_min} − log p₀ ≤ 1.2e-5
  on the mixture; VE at t_min = 0 has σ(0) = σ_min = 0.01, ≤ 1.3e-3. Both well below 0.02,
  and the exact-identity tests compare against p_{t_min} itself (gmm.log_prob(x, α, σ)).
- prior: per example, to first order −α(1) m·x_1/σ(1)² (m = the data mean), spread
  α(1)‖m‖/σ(1): the mixture below has ‖m‖ = 1.79, so VE with σ_max = 50 is off by 0.036 nats
  (std; up to 0.14 over 200 points) and VP/sub-VP (α(1) = 0.0066) by 0.012 (up to 0.035).
  Centring the mixture removes this term; the second-order term ≈ α(1)²λ_max(C)/(2σ(1)²)·(z²−1)
  with λ_max(C) ≈ 25 is then ≈ 0.005·(z²−1) for σ_max = 50 (up to 0.045) and 4× smaller for
  σ_max = 100 (≤ 0.012), ≈ 1e-4 for VP. On average over the data the prior term is
  −KL(p_1‖π) ≈ −‖m‖²/(2σ_max²) = −6e-4 (VE, 50).
- solver: RK45 at rtol = atol = 1e-6 leaves ≤ 2.5e-4 (1e-5: ≤ 6e-3), measured.
"""

import math

import pytest
import torch

from sbm.core.gmm import GaussianMixture
from sbm.core.likelihood import LikelihoodResult, dataset_nll, ode_log_likelihood
from sbm.core.model import AnalyticScoreModel
from sbm.core.processes import VESDE, VPSDE, SubVPSDE
from sbm.core.units import bin_width, bits_per_dim, dequantize

PROCESSES = {
    "vp": lambda sigma_max=None: VPSDE(0.1, 20, t_min=1e-5),
    "ve": lambda sigma_max=50.0: VESDE(0.01, sigma_max, t_min=0.0),
    "subvp": lambda sigma_max=None: SubVPSDE(0.1, 20, t_min=1e-5),
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def centred(gmm: GaussianMixture) -> GaussianMixture:
    m = (gmm.weights[:, None] * gmm.means).sum(0)
    return GaussianMixture(gmm.weights, gmm.means - m, gmm.covs)


def marginal(process, t: float):
    return process.marginal(torch.tensor([t], dtype=torch.float64))


# --------------------------------------------------------------------------- exact score of a mixture


@pytest.mark.parametrize("name", list(PROCESSES))
def test_ode_likelihood_of_exact_mixture_score_is_exact(mixture, name):
    """Both endpoints accounted for exactly: delta_logp + log p_1(x_1) = log p_{t_min}(x)."""
    process = PROCESSES[name]()
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    x, _ = mixture.sample(150, generator=gen(0))
    res = ode_log_likelihood(model, x.double(), rtol=1e-6, atol=1e-6)
    assert isinstance(res, LikelihoodResult) and res.logp.shape == (150,) and res.x_T.shape == (150, 2)
    assert torch.allclose(res.logp, res.prior_logp + res.delta_logp)
    assert torch.allclose(res.prior_logp, process.prior_logp(res.x_T).double())
    assert 20 < res.nfe < 1000
    a0, s0 = marginal(process, process.t_min)
    a1, s1 = marginal(process, 1.0)
    ode = res.delta_logp + mixture.log_prob(res.x_T, a1, s1)
    assert (ode - mixture.log_prob(x.double(), a0, s0)).abs().max() < 1e-3
    # against log p₀ itself, without corrections: the prior term averages to −KL(p_1‖π) ≈ 0
    # (|mean| ≤ 6e-4 plus the sampling noise of the mean, ≤ 0.036/√150 = 0.003)
    assert abs(float((res.logp - mixture.log_prob(x.double())).mean())) < 0.01


@pytest.mark.parametrize("name", list(PROCESSES))
def test_ode_likelihood_matches_mixture_log_prob_per_example(mixture, name):
    """The headline: within 0.02 nats of log p₀(x) for every example, at the default
    tolerances (1e-5). The mixture is centred (no first-order prior error, see the module
    docstring) and VE uses σ_max = 100 (second-order prior error ≤ 0.012)."""
    gmm = centred(mixture)
    process = PROCESSES[name](100.0) if name == "ve" else PROCESSES[name]()
    model = AnalyticScoreModel(gmm.exact_score_fn(process), process)
    x, _ = gmm.sample(200, generator=gen(1))
    res = ode_log_likelihood(model, x.double())
    err = (res.logp - gmm.log_prob(x.double())).abs()
    assert err.max() < 0.02, float(err.max())


def test_ode_likelihood_keeps_float32_inputs_and_is_deterministic(mixture):
    process = PROCESSES["vp"]()
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    x, _ = mixture.sample(50, generator=gen(2))  # float32
    a = ode_log_likelihood(model, x)
    b = ode_log_likelihood(model, x)
    assert a.logp.dtype == torch.float64 and torch.equal(a.logp, b.logp) and a.nfe == b.nfe
    assert (a.logp - mixture.log_prob(x.double())).abs().max() < 0.05


# --------------------------------------------------------------------------- Hutchinson


def test_hutchinson_agrees_with_exact_in_the_mean(mixture):
    """With probes fixed along a solve, the Hutchinson log p is unbiased per example: the mean
    difference to the exact divergence over N points is within a few standard errors, and
    averaging K probes shrinks the spread by ≈ √K."""
    process = PROCESSES["vp"]()
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    x, _ = mixture.sample(300, generator=gen(3))
    x = x.double()
    exact = ode_log_likelihood(model, x).logp
    spreads = {}
    for probe, k in (("rademacher", 1), ("gaussian", 1), ("rademacher", 8)):
        res = ode_log_likelihood(model, x, divergence="hutchinson", probe=probe, n_probes=k, generator=gen(4))
        d = res.logp - exact
        se = float(d.std()) / math.sqrt(len(d))
        assert abs(float(d.mean())) < 4 * se + 0.01, (probe, k, float(d.mean()), se)
        assert float(d.std()) > 0  # it is an estimate, not the exact value
        spreads[(probe, k)] = float(d.std())
    assert spreads[("rademacher", 8)] < 0.6 * spreads[("rademacher", 1)]
    # same generator seed, same probes, same answer
    r1 = ode_log_likelihood(model, x[:20], divergence="hutchinson", generator=gen(5))
    r2 = ode_log_likelihood(model, x[:20], divergence="hutchinson", generator=gen(5))
    assert torch.equal(r1.logp, r2.logp)


def test_bad_arguments_are_refused(mixture):
    process = PROCESSES["vp"]()
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="divergence"):
        ode_log_likelihood(model, x, divergence="trace")
    with pytest.raises(ValueError, match="probe"):
        ode_log_likelihood(model, x, divergence="hutchinson", probe="uniform")
    with pytest.raises(ValueError, match="n_probes"):
        ode_log_likelihood(model, x, divergence="hutchinson", n_probes=0)


# --------------------------------------------------------------------------- a single Gaussian in D = 4


def test_single_gaussian_closed_form():
    """p₀ = N(μ, s² I), D = 4: p_t = N(α μ, v_t I), v_t = α² s² + σ², and the flow is affine,
    x_t = α_t μ + √(v_t/v_{t_min}) (x − α_{t_min} μ), with ∫ div f̃ dt = (D/2) log(v_1/v_{t_min})."""
    mu = torch.tensor([0.5, -0.3, 0.2, 1.0], dtype=torch.float64)
    s = 0.7
    process = VPSDE(0.1, 20, t_min=1e-3)

    def score(x, t):
        a, sig = process.marginal(t)
        a, v = a[:, None], (a**2 * s**2 + sig**2)[:, None]
        return -(x - a * mu) / v

    model = AnalyticScoreModel(score, process)
    x = mu + s * torch.randn(100, 4, generator=gen(6), dtype=torch.float64)
    res = ode_log_likelihood(model, x, rtol=1e-7, atol=1e-7)
    (a0,), (s0,) = marginal(process, process.t_min)
    (a1,), (s1,) = marginal(process, 1.0)
    v0, v1 = a0**2 * s**2 + s0**2, a1**2 * s**2 + s1**2

    def log_normal(y, mean, var):
        return -0.5 * ((y - mean) ** 2).sum(1) / var - 2 * math.log(2 * math.pi * var)

    assert torch.allclose(res.x_T, a1 * mu + (v1 / v0).sqrt() * (x - a0 * mu), atol=1e-5)
    assert torch.allclose(res.delta_logp, torch.full((100,), 2 * math.log(v1 / v0), dtype=torch.float64), atol=1e-5)
    assert torch.allclose(res.delta_logp + log_normal(res.x_T, a1 * mu, v1), log_normal(x, a0 * mu, v0), atol=1e-5)
    # against N(μ, s² I) itself: the t_min and prior terms are ~1e-3 and ~1e-2 here
    assert (res.logp - log_normal(x, mu, s**2)).abs().max() < 0.02
    # Hutchinson in D = 4: for an isotropic Gaussian ∂f̃/∂x = c(t) I, so vᵀJv = c(t)‖v‖² —
    # exact with Rademacher probes (‖v‖² = D)
    hut = ode_log_likelihood(model, x, divergence="hutchinson", rtol=1e-7, atol=1e-7, generator=gen(7))
    assert torch.allclose(hut.logp, res.logp, atol=1e-5)


# --------------------------------------------------------------------------- dequantisation, bits/dim


def test_bin_width_and_dequantize():
    assert bin_width(17, (-1, 1)) == 0.125  # digits: 0..16 → k/8 − 1
    assert bin_width(256, (0, 255)) == 1.0
    k = torch.randint(0, 17, (4000, 3), generator=gen(8))
    x = k.float() / 8 - 1
    y = dequantize(x, 17, (-1, 1), gen(9))
    u = y.double() - x.double()
    assert y.dtype == x.dtype and u.min() >= 0 and u.max() < 0.125
    assert float(u.mean()) == pytest.approx(0.0625, abs=0.002)  # U[0, Δ): mean Δ/2, std of mean 6e-4
    assert torch.equal(y, dequantize(x, 17, (-1, 1), gen(9)))
    with pytest.raises(ValueError, match="not on the 17-level grid"):
        dequantize(x + 0.05, 17, (-1, 1), gen(0))
    with pytest.raises(ValueError, match="not on the 9-level grid"):
        dequantize(x, 9, (-1, 1), gen(0))  # wrong n_levels: the points fall between that grid's values


@pytest.mark.parametrize("n_levels,data_range", [(17, (-1.0, 1.0)), (256, (0.0, 255.0)), (5, (2.0, 10.0))])
def test_bits_per_dim_of_uniform_data_is_log2_levels(n_levels, data_range):
    """Data uniform on the n_levels grid per coordinate; the model density uniform on the
    dequantised cube [lo, hi + Δ)^D, (n Δ)^(−D): bpd = log₂ n exactly, for any data range."""
    d = 6
    lo, delta = data_range[0], bin_width(n_levels, data_range)
    x = lo + delta * torch.randint(0, n_levels, (500, d), generator=gen(10)).double()
    y = dequantize(x, n_levels, data_range, gen(11))
    assert y.min() >= lo and y.max() < data_range[1] + delta  # inside the cube
    nll = torch.full((500,), d * math.log(n_levels * delta), dtype=torch.float64)  # −log p(y), same for all y
    bpd = bits_per_dim(nll, d, n_levels, data_range)
    assert torch.allclose(bpd, torch.full_like(bpd, math.log2(n_levels)), rtol=0, atol=1e-12)


def test_bits_per_dim_is_exact_for_a_density_constant_on_cells():
    """Non-uniform pmf P(k) per coordinate and model density P(k)/Δ on cell k: Jensen's bound
    (eq. 4) is an equality, so bpd = −log₂ P(x)/D per example, here with Δ = 2 (range [2, 10])."""
    n_levels, data_range, d = 5, (2.0, 10.0), 3
    delta = bin_width(n_levels, data_range)
    pmf = torch.tensor([0.1, 0.4, 0.2, 0.25, 0.05], dtype=torch.float64)
    k = torch.multinomial(pmf, 300 * d, replacement=True, generator=gen(12)).reshape(300, d)
    x = data_range[0] + delta * k.double()
    y = dequantize(x, n_levels, data_range, gen(13))
    cell = torch.floor((y - data_range[0]) / delta).long()
    assert torch.equal(cell, k)  # each dequantised point stays in its own cell
    nll = -torch.log(pmf[cell] / delta).sum(1)
    expected = -torch.log2(pmf[k]).sum(1) / d
    assert torch.allclose(bits_per_dim(nll, d, n_levels, data_range), expected, atol=1e-12)
    # continuous data (n_levels None): plain nats → bits per dimension
    assert torch.allclose(bits_per_dim(nll, d), nll / (d * math.log(2)))


def test_dataset_nll_batches_and_dequantizes(mixture):
    process = PROCESSES["vp"]()
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    x, _ = mixture.sample(30, generator=gen(14))
    summary, logp = dataset_nll(model, x.double(), batch_size=12)
    assert summary["n"] == 30 and summary["nll_batches"] == 3 and "bpd" not in summary
    assert summary["nll"] == pytest.approx(float(-mixture.log_prob(x.double()).mean()), abs=0.02)
    whole = ode_log_likelihood(model, x.double()).logp
    assert (logp - whole).abs().max() < 0.02  # batches solve separately, same answer within tolerance
    # quantised: the points are dequantised by the generator first, then bits/dim
    q = torch.round(x.double().clamp(-8, 8) * 2) / 2  # 33 levels on [−8, 8], Δ = 0.5
    summary_q, logp_q = dataset_nll(model, q, batch_size=30, n_levels=33, data_range=(-8, 8), generator=gen(15))
    y = dequantize(q, 33, (-8, 8), gen(15))
    assert "nll" not in summary_q and (logp_q - mixture.log_prob(y)).abs().max() < 0.05
    assert summary_q["bpd"] == pytest.approx(float(bits_per_dim(-logp_q, 2, 33, (-8, 8)).mean()))
