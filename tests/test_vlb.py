"""sbm.core.vlb against exact answers: the DDPM variational bound and the continuous-time bound of
the VP SDE with the exact ε of Gaussian data, of the Gaussian mixture and of quantised data.

Gaussian data x₀ ~ N(μ, s² I) stays Gaussian under every process, so with the exact ε (the
one-component `GaussianMixture`'s score) everything is a closed form computed here
independently of sbm.core.vlb:

- the DDPM model's posterior mean μ_θ(x_t) (Ho eq. 11 from the exact ε) is E[x_{t−1} | x_t] of
  the joint Gaussian of (x_{t−1}, x_t); the true posterior q(x_{t−1} | x_t, x₀) is the product of
  q(x_t | x_{t−1}) and q(x_{t−1} | x₀). Each KL term is then a Gaussian KL.
- the expected gap of the bound. E_{x₀}[bound] − H(data) = KL(q(x_{0:N}) ‖ p_θ(x_{0:N})), which by
  the reverse factorisation of q is KL(q(x_N) ‖ N(0, I)) + Σ_t E KL(q(x_{t−1} | x_t) ‖ p_θ(x_{t−1} | x_t))
  + E KL(q(x₀ | x_1) ‖ p_θ(x₀ | x_1)). With the exact ε the means agree, so each is a variance
  mismatch: q(x_{t−1} | x_t) has variance v_t = V_{t−1} β_t / V_t (V_t = ᾱ_t s² + 1 − ᾱ_t, V_0 = s²)
  against the model's σ_t². This route never forms the forward posterior the library uses.
  With σ_t² = β_t the mismatch is O(β_t) per step and the gap vanishes as N grows; with β̃_t it
  does not (β̃_t ≪ v_t at the first steps): that is what the bound must show.
- continuous VP bound: with the exact score the reverse SDE reproduces the forward path law
  (Song et al. 2021), so the expected gap is KL(p_1 ‖ π) plus the decoder's variance mismatch
  E KL(q(x₀ | y) ‖ N(x̂₀(y), σ²/α²)) at t_min (Var(x₀ | y) = s²σ²/(α²s² + σ²)): it vanishes as
  t_min → 0.

The exact NLL of Gaussian data and of the mixture is −log p(x₀) of the true density, so the mean
paired difference bound − NLL over the data estimates the expected gap, with standard error
sd/√n (Monte Carlo and data together). Every statistical assertion is at 4 standard errors.
"""

import math

import pytest
import torch

from sbm.core.gmm import GaussianMixture
from sbm.core.model import AnalyticScoreModel
from sbm.core.processes import VPSDE, DDPMSchedule, ddpm_betas
from sbm.core.vlb import (
    DDPMTables,
    bound_kind,
    continuous_vlb,
    ddpm_decoder_nll,
    ddpm_kl_term,
    ddpm_vlb,
    decoder_nll,
    diffusion_term,
    log_snr,
    log_snr_range,
    prior_kl,
    reconstruction_nll,
    time_of_log_snr,
    variational_bound,
)

MU, S, D = 0.3, 0.5, 2


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(mu: float = MU, s: float = S, d: int = D) -> GaussianMixture:
    return GaussianMixture([1.0], [[mu] * d], (s**2 * torch.eye(d, dtype=torch.float64))[None])


def ddpm(n: int) -> DDPMSchedule:
    return DDPMSchedule(ddpm_betas("linear", n, 0.1, 20.0), schedule="linear", beta_min=0.1, beta_max=20.0)


def exact(mixture: GaussianMixture, process) -> AnalyticScoreModel:
    return AnalyticScoreModel(mixture.exact_score_fn(process), process)


def gauss_kl(m1, v1, m2, v2):
    """KL(N(m1, v1) ‖ N(m2, v2)) per coordinate (elementwise)."""
    return 0.5 * (v1 / v2 - 1 + torch.log(torch.as_tensor(v2 / v1)) + (m1 - m2) ** 2 / v2)


def schedule(process: DDPMSchedule):
    """β_t, α_t, ᾱ_t for Ho's t = 0..N (entry 0: ᾱ_0 = 1), float64 (N + 1,), from the betas alone."""
    beta = torch.cat([torch.zeros(1, dtype=torch.float64), process.betas.double()])
    alpha = 1 - beta
    return beta, alpha, torch.cumprod(alpha, 0)


def model_var(process: DDPMSchedule, variance: str) -> torch.Tensor:
    """σ_t² for Ho's t = 1..N (index t − 1): β_t, or β̃_t with β̃_2 in place of β̃_1 = 0."""
    beta, _, ab = schedule(process)
    if variance == "beta":
        return beta[1:].clone()
    post = (1 - ab[:-1]) / (1 - ab[1:]) * beta[1:]
    post[0] = post[1]
    return post


def paired(bound: torch.Tensor, nll: torch.Tensor) -> tuple[float, float]:
    """Mean of bound − NLL over the examples and its standard error."""
    d = bound - nll
    return float(d.mean()), float(d.std() / math.sqrt(len(d)))


# --------------------------------------------------------------------------- DDPM: each term exactly


@pytest.mark.parametrize("variance", ["posterior", "beta"])
@pytest.mark.parametrize("n_steps", [25, 1000])
def test_each_ddpm_kl_term_is_the_gaussian_kl_to_the_bayes_posterior(variance, n_steps):
    """L_{t−1} at one draw of x_t = the KL between q(x_{t−1} | x_t, x₀) (from q(x_t | x_{t−1}) q(x_{t−1} | x₀))
    and N(E[x_{t−1} | x_t], σ_t²) (the joint Gaussian of Gaussian data), to float64 round-off."""
    g, process = gaussian(), ddpm(n_steps)
    model = exact(g, process)
    x0, _ = g.sample(64, generator=gen(0))
    x0 = x0.double()
    beta, alpha, ab = schedule(process)
    var = model_var(process, variance)
    for t in sorted({2, 3, n_steps // 2, n_steps}):
        eps = torch.randn(x0.shape, generator=gen(t), dtype=torch.float64)
        xt = ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * eps
        prec = alpha[t] / beta[t] + 1 / (1 - ab[t - 1])
        mean_q = (alpha[t].sqrt() * xt / beta[t] + ab[t - 1].sqrt() * x0 / (1 - ab[t - 1])) / prec
        v_prev, v_t = ab[t - 1] * S**2 + 1 - ab[t - 1], ab[t] * S**2 + 1 - ab[t]
        mean_p = ab[t - 1].sqrt() * MU + alpha[t].sqrt() * v_prev / v_t * (xt - ab[t].sqrt() * MU)
        want = gauss_kl(mean_q, 1 / prec, mean_p, var[t - 1]).sum(1)
        got = ddpm_kl_term(model, x0, torch.full((64,), t - 1), eps, variance=variance)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="index must lie in"):
        ddpm_kl_term(model, x0, torch.zeros(64, dtype=torch.long), eps)  # t = 1 is L_0's


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_decoder_is_the_gaussian_at_the_bayes_mean_of_x0(variance):
    """L_0 at one draw of x_1 (continuous data) = −log N(x₀; E[x₀ | x_1], σ_1²), σ_1² = β_1 or β̃_2."""
    g, process = gaussian(), ddpm(1000)
    x0 = g.sample(64, generator=gen(1))[0].double()
    eps = torch.randn(x0.shape, generator=gen(2), dtype=torch.float64)
    beta, _, ab = schedule(process)
    x1 = ab[1].sqrt() * x0 + (1 - ab[1]).sqrt() * eps
    post_mean = MU + ab[1].sqrt() * S**2 / (ab[1] * S**2 + 1 - ab[1]) * (x1 - ab[1].sqrt() * MU)
    var = beta[1] if variance == "beta" else beta[1] * beta[2] / (1 - ab[2])  # β̃_2 = (1 − ᾱ_1) β_2 / (1 − ᾱ_2)
    want = -torch.distributions.Normal(post_mean, var.sqrt()).log_prob(x0).sum(1)
    got = ddpm_decoder_nll(exact(g, process), x0, eps, variance=variance)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_prior_term_is_the_kl_of_the_last_marginal_to_the_prior():
    x0 = gaussian().sample(32, generator=gen(3))[0].double()
    for process in (ddpm(1000), VPSDE(0.1, 20.0, 1e-3)):
        a, s = process.marginal(torch.ones(1, dtype=torch.float64))
        want = torch.distributions.kl_divergence(torch.distributions.Normal(a * x0, s.expand_as(x0)),
                                                 torch.distributions.Normal(0.0, 1.0)).sum(1)
        torch.testing.assert_close(prior_kl(process, x0), want, rtol=1e-12, atol=1e-15)


def test_discretised_decoder_is_a_distribution_over_the_levels():
    """Ho §3.3 generalised to n_levels on [lo, hi]: the bin masses of the n_levels values sum to one
    (edge bins open), interior bins are Φ differences, and an off-grid value is refused."""
    from scipy.stats import norm

    n_levels, rng = 17, (-1.0, 1.0)
    levels = torch.linspace(-1, 1, n_levels, dtype=torch.float64)[:, None]  # (17, 1): one value per "example"
    for mean, std in ((0.1, 0.3), (-0.97, 0.01), (5.0, 0.05), (0.03, 1e-4), (0.0, 40.0)):
        nll = decoder_nll(levels, torch.full_like(levels, mean), std, n_levels, rng)
        assert float(torch.exp(-nll).sum()) == pytest.approx(1.0, abs=1e-12), (mean, std)
        assert torch.isfinite(nll).all()
    k = 5  # an interior level: Φ((x + Δ/2 − m)/s) − Φ((x − Δ/2 − m)/s)
    x, half = float(levels[k]), 1 / 16
    want = -math.log(norm.cdf((x + half - 0.1) / 0.3) - norm.cdf((x - half - 0.1) / 0.3))
    assert float(decoder_nll(levels[k:k + 1], torch.tensor([[0.1]], dtype=torch.float64), 0.3, n_levels, rng)) == pytest.approx(want, rel=1e-12)
    far = decoder_nll(levels[k:k + 1], torch.tensor([[0.9]], dtype=torch.float64), 0.01, n_levels, rng)  # 30 std away: no underflow
    assert math.isfinite(float(far)) and float(far) > 400
    with pytest.raises(ValueError, match="17-level grid"):
        decoder_nll(levels[:2] + 0.03, levels[:2], 0.1, n_levels, rng)
    # continuous data: the Gaussian density
    z = torch.randn(4, 3, generator=gen(4), dtype=torch.float64)
    want = -torch.distributions.Normal(torch.tensor(0.2, dtype=torch.float64), 0.7).log_prob(z).sum(1)
    torch.testing.assert_close(decoder_nll(z, torch.full_like(z, 0.2), 0.7), want, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- DDPM: the whole bound


def ddpm_expected_gap(process: DDPMSchedule, variance: str, mu: float = MU, s: float = S, d: int = D) -> float:
    """E_{x₀}[bound] − H(data) for Gaussian data with the exact ε, by the reverse factorisation of q
    (module docstring): prior KL + Σ_t variance mismatch of the reverse kernels + decoder mismatch."""
    beta, _, ab = schedule(process)
    v = ab * s**2 + 1 - ab  # V_t, t = 0..N (V_0 = s²)
    true_var = v[:-1] * beta[1:] / v[1:]  # Var(x_{t−1} | x_t), t = 1..N (t = 1: the decoder's)
    r = true_var / model_var(process, variance)
    mismatch = 0.5 * (r - 1 - torch.log(r)).sum()
    prior = 0.5 * (ab[-1] * mu**2 + v[-1] - 1 - torch.log(v[-1]))
    return d * float(prior + mismatch)


def test_the_expected_gap_vanishes_with_n_for_beta_and_not_for_the_posterior_variance():
    """What the bound must show (module docstring), from the closed form alone."""
    beta_gaps = [ddpm_expected_gap(ddpm(n), "beta") for n in (25, 100, 1000)]
    post_gaps = [ddpm_expected_gap(ddpm(n), "posterior") for n in (25, 100, 1000)]
    assert beta_gaps[0] > beta_gaps[1] > beta_gaps[2] and beta_gaps[2] < 3e-3
    assert beta_gaps[1] / beta_gaps[2] > 5  # O(1/N): ≈ 2.2/N nats here
    assert all(p > 0.4 * D for p in post_gaps)  # β̃_t ≪ Var(x_{t−1} | x_t) at the first steps, for any N


@pytest.mark.parametrize("variance", ["posterior", "beta"])
@pytest.mark.parametrize("n_steps,t_samples", [(25, None), (25, 64), (1000, 64)])
def test_ddpm_bound_with_the_exact_eps_is_the_exact_nll_plus_the_closed_form_gap(variance, n_steps, t_samples):
    """Gaussian data: mean(bound − NLL) over the data = the closed-form expected gap ≥ 0, within 4 se,
    for every t (two passes) and for the importance-sampled estimator."""
    g, process = gaussian(), ddpm(n_steps)
    x0 = g.sample(3000, generator=gen(5))[0].double()
    res = ddpm_vlb(exact(g, process), x0, variance=variance, t_samples=t_samples, generator=gen(6))
    gap, se = paired(res.nll, -g.log_prob(x0))
    want = ddpm_expected_gap(process, variance)
    assert want >= 0 and abs(gap - want) < 4 * se, (gap, se, want)
    assert gap > -4 * se  # the bound is above the exact NLL
    torch.testing.assert_close(res.nll.double(), (res.prior + res.recon + res.diffusion).double())
    assert res.nfe == (2 * n_steps if t_samples is None else 2 * t_samples)


@pytest.mark.parametrize("t_samples", [None, 16])
def test_ddpm_estimators_are_unbiased_and_their_standard_errors_match_the_spread(t_samples):
    """On fixed data, repeated runs: the importance-sampled estimate's mean is the every-t sum's (within
    their standard errors), and the reported standard error of the batch mean, sqrt(Σ se_i²)/n, is the
    empirical sd of the batch mean over 300 runs (±12 %: the sd of 300 draws is known to ~4 %; measured
    1.045 every t, 0.972 sampled; an se off by K^0.1, as /K^0.4 for /√K, would read 1.32 at K = 16)."""
    g, process = gaussian(), ddpm(25)
    model = exact(g, process)
    x0 = g.sample(100, generator=gen(7))[0].double()
    means, ses = [], []
    for r in range(300):
        res = ddpm_vlb(model, x0, variance="posterior", t_samples=t_samples, generator=gen(100 + r))
        means.append(float(res.nll.mean()))
        ses.append(float(res.se.pow(2).sum().sqrt() / len(x0)))
    means, ses = torch.tensor(means), torch.tensor(ses)
    assert 0.88 < float(means.std()) / float(ses.mean()) < 1.12
    full = ddpm_vlb(model, x0, variance="posterior", t_samples=None, generator=gen(99))
    full_mean, full_se = float(full.nll.mean()), float(full.se.pow(2).sum().sqrt() / len(x0))
    grand_se = float(means.std()) / math.sqrt(len(means))
    assert abs(float(means.mean()) - full_mean) < 4 * math.hypot(grand_se, full_se)


def test_ddpm_bound_with_the_exact_eps_of_the_mixture_is_close_to_its_exact_nll(mixture):
    """The 2-D mixture, N = 1000, σ_t² = β_t: mean(bound − NLL) ≥ −4 se and below 0.1 nats (the
    reverse kernels are not Gaussian here, so no closed form; measured ≈ −0.05 ± 0.05)."""
    process = ddpm(1000)
    x0 = mixture.sample(3000, generator=gen(8))[0].double()
    res = ddpm_vlb(exact(mixture, process), x0, variance="beta", t_samples=64, generator=gen(9))
    gap, se = paired(res.nll, -mixture.log_prob(x0))
    assert -4 * se < gap < 0.1 + 4 * se and se < 0.05, (gap, se)


def quantised_deltas() -> tuple[GaussianMixture, torch.Tensor, torch.Tensor]:
    """Quantised 2-D data: four values of the 17-level grid of [−1, 1] (the digits' grid) with weights
    (0.4, 0.3, 0.2, 0.1); its exact ε is that of a mixture of point masses (covariance 1e-12 I)."""
    pts = torch.tensor([[-1.0, -1.0], [0.0, 0.5], [0.5, 0.5], [1.0, -0.25]])
    w = torch.tensor([0.4, 0.3, 0.2, 0.1])
    return GaussianMixture(w, pts, 1e-12 * torch.eye(2).expand(4, 2, 2)), pts, w


def test_ddpm_bound_on_quantised_data_bounds_the_exact_discrete_nll():
    """Discrete data, discretised decoder (no dequantisation): the bound ≥ −log P(x₀) = −log w_k; with
    σ_t² = β̃_t (the default) it is within 0.1 nats at N = 1000, with β_t it is ≥ 0.4 nats looser —
    why the default is the posterior variance (sbm.core.vlb). The decoder's term is then ≈ 0."""
    dm, pts, w = quantised_deltas()
    idx = torch.multinomial(w, 3000, replacement=True, generator=gen(10))
    x0, nll = pts[idx].double(), -torch.log(w[idx]).double()
    process = ddpm(1000)
    post = ddpm_vlb(exact(dm, process), x0, variance="posterior", t_samples=64, n_levels=17, generator=gen(11))
    beta = ddpm_vlb(exact(dm, process), x0, variance="beta", t_samples=64, n_levels=17, generator=gen(11))
    gap, se = paired(post.nll, nll)
    assert -4 * se < gap < 0.1 and se < 0.05, (gap, se)
    assert paired(beta.nll, nll)[0] > gap + 0.4
    assert float(post.recon.max()) < 1e-6  # σ_1 = 0.007 ≪ Δ/2 = 1/16 and x̂₀ = x₀: P(x₀ | x_1) ≈ 1


# --------------------------------------------------------------------------- continuous VP bound


def test_log_snr_is_inverted_and_its_rate_is_minus_g2_over_sigma2():
    """time_of_log_snr inverts λ(t); dλ/dt = −g(t)²/σ(t)² (the identity that turns Song et al.'s
    g²-weighted integral into ½∫ dλ, sbm.core.vlb eq. 8), by central differences."""
    process = VPSDE(0.1, 20.0, 1e-3)
    t = torch.tensor([1e-3, 0.01, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    torch.testing.assert_close(time_of_log_snr(process, log_snr(process, t)), t, rtol=1e-12, atol=1e-14)
    tt, h = t[1:-1], 1e-6
    rate = (log_snr(process, tt + h) - log_snr(process, tt - h)) / (2 * h)
    g = process.sde(torch.zeros(len(tt), 1, dtype=torch.float64), tt)[1]
    torch.testing.assert_close(rate, -(g**2) / process.sigma(tt) ** 2, rtol=1e-7, atol=0)


def test_continuous_terms_at_fixed_draws_are_song_et_al_s_integrand_and_the_bayes_decoder():
    """At a fixed (t, ε): the diffusion draw = ½ g² ‖s(x_t) − ∇log q(x_t | x₀)‖² / p(t) with p(t) the density
    of t under λ ~ U[λ(1), λ(t_min)] (|dλ/dt| by differences); the reconstruction = −log N(x₀; E[x₀ | y],
    σ²/α²) with the Gaussian's posterior mean."""
    g, process = gaussian(), VPSDE(0.1, 20.0, 1e-3)
    model = exact(g, process)
    x0 = g.sample(50, generator=gen(12))[0].double()
    eps = torch.randn(x0.shape, generator=gen(13), dtype=torch.float64)
    t = torch.rand(50, generator=gen(14), dtype=torch.float64) * (1 - 1e-3) + 1e-3
    lam_min, lam_max = log_snr_range(process)
    a, s = process.marginal(t)
    xt = a[:, None] * x0 + s[:, None] * eps
    gt = process.sde(xt, t)[1]
    h = 1e-7
    rate = ((log_snr(process, t + h) - log_snr(process, t - h)) / (2 * h)).abs()
    density = rate / (lam_max - lam_min)
    integrand = 0.5 * gt**2 * (g.score(xt, a, s) + eps / s[:, None]).pow(2).sum(1)
    torch.testing.assert_close(diffusion_term(model, x0, t, eps), integrand / density, rtol=1e-6, atol=0)
    t0 = torch.full((1,), 1e-3, dtype=torch.float64)
    a0, s0 = (float(v) for v in process.marginal(t0))
    y = a0 * x0 + s0 * eps
    post_mean = MU + a0 * S**2 / (a0**2 * S**2 + s0**2) * (y - a0 * MU)
    want = -torch.distributions.Normal(post_mean, s0 / a0).log_prob(x0).sum(1)
    torch.testing.assert_close(reconstruction_nll(model, x0, eps), want, rtol=1e-9, atol=0)


def vp_expected_gap(process: VPSDE, mu: float, s: float, d: int) -> float:
    """E_{x₀}[bound] − H for Gaussian data with the exact score: KL(p_1 ‖ π) + decoder mismatch at t_min."""
    a1, s1 = (float(v) for v in process.marginal(torch.ones(1, dtype=torch.float64)))
    a0, s0 = (float(v) for v in process.marginal(torch.full((1,), process.t_min, dtype=torch.float64)))
    v1 = a1**2 * s**2 + s1**2
    prior = 0.5 * (a1**2 * mu**2 + v1 - 1 - math.log(v1))
    r = a0**2 * s**2 / (a0**2 * s**2 + s0**2)  # Var(x₀ | y) / (σ/α)²
    return d * (prior + 0.5 * (r - 1 - math.log(r)))


def test_continuous_bound_with_the_exact_score_closes_on_the_exact_nll_as_t_min_shrinks():
    """Narrow Gaussian data (s = 0.05, where the decoder's mismatch is visible): mean(bound − NLL) = the
    closed-form gap within 4 se at every t_min, and that gap falls from 0.15 nats at t_min = 1e-2 to
    < 2e-3 at 1e-3 and < 1e-5 at 1e-5."""
    mu, s = 0.2, 0.05
    g = gaussian(mu, s)
    x0 = g.sample(4000, generator=gen(15))[0].double()
    nll = -g.log_prob(x0)
    gaps = []
    for t_min in (1e-2, 1e-3, 1e-5):
        process = VPSDE(0.1, 20.0, t_min)
        res = continuous_vlb(exact(g, process), x0, t_samples=100, generator=gen(16))
        gap, se = paired(res.nll, nll)
        want = vp_expected_gap(process, mu, s, D)
        assert abs(gap - want) < 4 * se and gap > -4 * se and se < 0.03, (t_min, gap, se, want)
        torch.testing.assert_close(res.nll, res.prior + res.recon + res.diffusion)
        gaps.append(want)
    assert gaps[0] > 0.1 and gaps[1] < 2e-3 and gaps[2] < 1e-5


def test_continuous_estimator_standard_error_matches_the_spread():
    """As for ddpm: the reported se of the batch mean is the sd over 300 runs (measured ratio 1.023)."""
    g, process = gaussian(), VPSDE(0.1, 20.0, 1e-3)
    model = exact(g, process)
    x0 = g.sample(100, generator=gen(17))[0].double()
    means, ses = [], []
    for r in range(300):
        res = continuous_vlb(model, x0, t_samples=16, generator=gen(300 + r))
        means.append(float(res.nll.mean()))
        ses.append(float(res.se.pow(2).sum().sqrt() / len(x0)))
    assert 0.88 < float(torch.tensor(means).std()) / float(torch.tensor(ses).mean()) < 1.12


def test_continuous_bound_of_the_mixture_and_of_quantised_data(mixture):
    """With the exact score: the 2-D mixture's bound is within 0.1 nats above its exact NLL, and on the
    quantised data the discretised decoder gives a bound within 0.1 nats above −log P(x₀)."""
    process = VPSDE(0.1, 20.0, 1e-3)
    x0 = mixture.sample(3000, generator=gen(18))[0].double()
    res = continuous_vlb(exact(mixture, process), x0, t_samples=64, generator=gen(19))
    gap, se = paired(res.nll, -mixture.log_prob(x0))
    assert -4 * se < gap < 0.1 + 4 * se and se < 0.05, (gap, se)
    dm, pts, w = quantised_deltas()
    idx = torch.multinomial(w, 3000, replacement=True, generator=gen(20))
    res = continuous_vlb(exact(dm, process), pts[idx].double(), t_samples=64, n_levels=17, generator=gen(21))
    gap, se = paired(res.nll, -torch.log(w[idx]).double())
    assert -4 * se < gap < 0.1 and se < 0.05, (gap, se)


# --------------------------------------------------------------------------- dispatch and bad input


def test_which_process_has_which_bound_and_bad_input():
    g = gaussian()
    x0 = g.sample(8, generator=gen(22))[0].double()
    assert bound_kind(ddpm(25)) == "ddpm" and bound_kind(VPSDE(0.1, 20.0, 1e-3)) == "continuous"
    from sbm.core.processes import VESDE

    ve = VESDE(0.01, 10.0, 1e-3)
    assert bound_kind(ve) is None
    with pytest.raises(ValueError, match="has no variational bound"):
        variational_bound(exact(g, ve), x0, t_samples=4)
    res = variational_bound(exact(g, ddpm(25)), x0, t_samples=None, variance="beta", generator=gen(0))
    ref = ddpm_vlb(exact(g, ddpm(25)), x0, t_samples=None, variance="beta", generator=gen(0))
    torch.testing.assert_close(res.nll, ref.nll, rtol=0, atol=0)
    with pytest.raises(ValueError, match="t_samples = 1"):
        ddpm_vlb(exact(g, ddpm(25)), x0, t_samples=1)
    with pytest.raises(ValueError, match="needs >= 2 draws"):
        continuous_vlb(exact(g, VPSDE(0.1, 20.0, 1e-3)), x0, t_samples=None)
    with pytest.raises(ValueError, match="σ\\(t_min\\) > 0"):
        continuous_vlb(exact(g, VPSDE(0.1, 20.0, 0.0)), x0, t_samples=4)
    with pytest.raises(ValueError, match="variance = 'large'"):
        DDPMTables.of(ddpm(25), "large")


# --------------------------------------------------------------------------- the evaluate stage


def _stage_files(tmp_path, x_train, x_test, meta_extra, process, t_samples: int = 4):
    """evaluate's inputs (tests/test_metrics.py's layout: an untrained MLP on `process`) with
    likelihood.vlb_t_samples = t_samples."""
    from test_metrics import _eval_pipeline

    files = _eval_pipeline(tmp_path, x_train, x_test, meta_extra, process)
    text = files["params"].read_text()
    files["params"].write_text(text.replace("  batch_size: 25\n", f"  batch_size: 25\n  vlb_t_samples: {t_samples}\n"))
    return files


def test_evaluate_stage_writes_the_ddpm_bound_in_bits_per_dim_next_to_the_ode(tmp_path):
    """Quantised data on a ddpm model: metrics.json holds the ODE's bpd and the bound's vlb_bpd ± vlb_bpd_se,
    which are sbm.core.vlb's on the first 40 test points in batches of 25 (seeded by `seed`), in bits of the
    discrete data (nats / (D ln 2), no log Δ); the details state each bits/dim's dequantisation; the
    report's likelihood section shows the bound."""
    import json

    from test_metrics import _evaluate

    from sbm.models.score import load_model
    from sbm.pipeline.outputs.evaluation import EvalDetail, EvalMetrics
    from sbm.pipeline.report import headline_section, likelihood_section

    x = torch.randint(0, 17, (200, 4), generator=gen(23)).float() / 8 - 1
    files = _stage_files(tmp_path, x[:150], x[150:], {"name": "digits", "n_levels": 17, "data_range": [-1.0, 1.0]},
                         ddpm(100))
    flat = _evaluate(files)
    assert {"bpd", "nll_nfe", "vlb_nll", "vlb_nll_se", "vlb_bpd", "vlb_bpd_se", "vlb_prior", "vlb_recon",
            "vlb_diffusion", "vlb_nfe"} <= set(flat)
    model = load_model(files["model"])[0]
    g = gen(3)
    parts = [variational_bound(model, x[150 + s:150 + min(s + 25, 40)], t_samples=4, n_levels=17, generator=g)
             for s in (0, 25)]
    nll = torch.cat([p.nll for p in parts])
    se = float(torch.cat([p.se for p in parts]).pow(2).sum().sqrt() / 40)
    assert flat["vlb_nll"] == pytest.approx(float(nll.mean()), rel=1e-9)
    assert flat["vlb_nll_se"] == pytest.approx(se, rel=1e-9) and se > 0
    assert flat["vlb_bpd"] == pytest.approx(flat["vlb_nll"] / (4 * math.log(2)), rel=1e-12)
    assert flat["vlb_bpd_se"] == pytest.approx(se / (4 * math.log(2)), rel=1e-9)
    assert flat["vlb_nll"] == pytest.approx(flat["vlb_prior"] + flat["vlb_recon"] + flat["vlb_diffusion"], rel=1e-9)
    assert flat["vlb_nfe"] == 8
    detail = json.loads(files["detail"].read_text())["likelihood"]
    assert detail["dequantization"] == "uniform" and detail["dequantized"] is True  # the ODE's bits/dim
    assert detail["vlb"] == {"bound": "ddpm", "variance": "posterior", "t_samples": 4,
                             "decoder": "discretised_gaussian", "dequantization": "none", "n": 40, "batches": 2,
                             **{k: flat[k] for k in flat if k.startswith("vlb_")}}
    assert _evaluate(files) == flat  # same params and seed: the same figures
    m, d = EvalMetrics.read(files["metrics"]), EvalDetail.read(files["detail"])
    text = "\n".join(likelihood_section(m, d))
    assert f"≤ {flat['vlb_bpd']:.4g}" in text and "reverse variance β̃_t" in text and "no dequantisation" in text
    assert "4 importance-sampled t per example; 40 test points" in text
    assert "dequantised by uniform noise" in text
    assert "variational bound" in "\n".join(headline_section(m, None, d, None))


def test_evaluate_stage_writes_the_continuous_bound_of_a_vp_model_and_none_for_ve(mixture, tmp_path):
    """Continuous data on a vp model: the bound in nats ± its standard error, no bits/dim and no
    dequantisation; a ve model (no bound here) writes no vlb key, as before."""
    import json

    from test_metrics import _evaluate

    from sbm.core.processes import VESDE

    x_train, _ = mixture.sample(300, generator=gen(24))
    x_test, _ = mixture.sample(60, generator=gen(25))
    meta = {"name": "gmm", "gmm": mixture.to_dict(), "n_classes": 3}
    flat = _evaluate(_stage_files(tmp_path / "vp", x_train, x_test, meta, VPSDE(0.1, 20, t_min=1e-3)))
    assert {"nll", "nll_exact", "vlb_nll", "vlb_nll_se"} <= set(flat) and flat["vlb_nll_se"] > 0
    assert "vlb_bpd" not in flat and "bpd" not in flat
    detail = json.loads((tmp_path / "vp" / "reports" / "eval_detail.json").read_text())["likelihood"]
    assert detail["vlb"]["bound"] == "continuous" and detail["vlb"]["decoder"] == "gaussian"
    assert not {"variance", "dequantization"} & set(detail["vlb"]) and "dequantization" not in detail
    flat = _evaluate(_stage_files(tmp_path / "ve", x_train, x_test, meta, VESDE(0.01, 12.0, t_min=1e-3)))
    assert not any(k.startswith("vlb") for k in flat) and "nll" in flat


@pytest.mark.parametrize("bad,message", [
    ({"likelihood": {"vlb_t_samples": 1}}, r"likelihood\.vlb_t_samples = 1: need 0 \(every t\) or >= 2"),
    ({"likelihood": {"vlb_t_samples": -1}}, r"likelihood\.vlb_t_samples = -1: must be >= 0"),
    ({"likelihood": {"vlb_variance": "large"}}, r"likelihood\.vlb_variance = 'large': unknown value; allowed: "
                                                r"posterior, beta"),
    ({"process": {"name": "vp"}, "likelihood": {"vlb_t_samples": 0}}, r"vlb_t_samples = 0 \(every t\) is for the "
                                                                      r"discrete process ddpm"),
])
def test_bad_vlb_params_fail_before_any_work(bad, message):
    from sbm.config.params import parse_params
    from sbm.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_params({"score": {"space": "pixel"}, **bad})
    assert parse_params({"likelihood": {"vlb_t_samples": 0}}).likelihood.vlb_t_samples == 0  # ddpm: every t
