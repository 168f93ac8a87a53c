"""The analytic mixture is the ground truth of every other test: check it against autograd."""

import pytest
import torch

from sbm.core.gmm import GaussianMixture


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (1.0, 0.1), (1.0, 1.0), (1.0, 10.0), (0.6, 0.8), (0.1, 0.99)])
def test_score_matches_autograd_of_log_density(mixture, alpha, sigma):
    x = torch.randn(200, 2, dtype=torch.float64) * 5
    x.requires_grad_(True)
    logp = mixture.log_prob(x, alpha, sigma)
    (auto,) = torch.autograd.grad(logp.sum(), x)
    assert torch.allclose(mixture.score(x.detach(), alpha, sigma), auto, rtol=1e-9, atol=1e-10)


def test_log_density_normalises(mixture):
    # Riemann sum over a grid covering the mass: ∫ p = 1
    g = torch.linspace(-12, 12, 481, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    cell = (g[1] - g[0]) ** 2
    assert mixture.log_prob(pts, 1.0, 0.5).exp().sum() * cell == pytest.approx(1.0, abs=1e-6)


def _mixture_moments(mixture):
    """Closed-form mean Σ wₖμₖ and covariance Σ wₖ(Σₖ + μₖμₖᵀ) − m mᵀ of the mixture, float64."""
    w, mu, cov = mixture.weights, mixture.means, mixture.covs
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    return mean, second - torch.outer(mean, mean)


def _assert_moments_within(x, mean, cov, n_se=5.0, what=""):
    """Sample mean and covariance of x (N, D) within n_se standard errors of (mean, cov).

    The covariance entries are estimated about the *true* mean, so each is the mean of the
    i.i.d. products yᵢⱼ = (xᵢ − mᵢ)(xⱼ − mⱼ) and its standard error is std(yᵢⱼ)/√N."""
    x = x.double()
    n = len(x)
    se_mean = x.std(0) / n**0.5
    assert ((x.mean(0) - mean).abs() < n_se * se_mean).all(), (what, x.mean(0), mean, se_mean)
    c = x - mean
    prods = c[:, :, None] * c[:, None, :]  # (N, D, D)
    se_cov = prods.std(0) / n**0.5
    assert ((prods.mean(0) - cov).abs() < n_se * se_cov).all(), (what, prods.mean(0), cov, se_cov)


def test_sampler_matches_the_mixture_moments_and_weights(mixture):
    """`sample` against the closed form: label frequencies vs weights, each component's draws vs
    (μₖ, Σₖ) — the off-diagonal 0.6 of component 1 fails a sampler that uses Lᵀ or Σ for the
    Cholesky factor —, and the pooled draws vs the mixture's mean and covariance; every check
    within 5 standard errors of n = 200 000 draws."""
    n = 200_000
    x, labels = mixture.sample(n, generator=torch.Generator().manual_seed(1))
    assert x.shape == (n, 2) and x.dtype == torch.float32 and labels.shape == (n,) and labels.dtype == torch.long
    freq = torch.bincount(labels, minlength=3).double() / n
    se = (mixture.weights * (1 - mixture.weights) / n).sqrt()
    assert ((freq - mixture.weights).abs() < 5 * se).all(), (freq, mixture.weights)
    for k in range(3):
        _assert_moments_within(x[labels == k], mixture.means[k], mixture.covs[k], what=f"component {k}")
    mean, cov = _mixture_moments(mixture)
    _assert_moments_within(x, mean, cov, what="mixture")


def _grid_moments(mixture, alpha, sigma, lim=12.0, n=481):
    """Mass, mean and covariance of exp(log_prob(·, α, σ)) by a Riemann sum on [−lim, lim]²."""
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    p = mixture.log_prob(pts, alpha, sigma).exp() * (g[1] - g[0]) ** 2
    mass = p.sum()
    mean = (p[:, None] * pts).sum(0)
    c = pts - mean
    return mass, mean, (p[:, None, None] * c[:, :, None] * c[:, None, :]).sum(0)


@pytest.mark.parametrize("alpha,sigma", [(0.7, 0.5), (0.3, 0.95)])
def test_perturbed_moments_match_samples(mixture, alpha, sigma):
    """p_t of x_t = α x₀ + σ ε has mean α m and covariance α² Cov[x₀] + σ² I: the moments of
    `log_prob(·, α, σ)` integrated on a grid match them to 1e-6 (a density with α in place
    of α², or σ in place of σ², is off by O(0.1)), and so do simulated draws of x_t, within
    5 standard errors."""
    mean0, cov0 = _mixture_moments(mixture)
    mean_t, cov_t = alpha * mean0, alpha**2 * cov0 + sigma**2 * torch.eye(2, dtype=torch.float64)
    mass, mean, cov = _grid_moments(mixture, alpha, sigma)
    assert float(mass) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(mean, mean_t, rtol=0, atol=1e-6)
    torch.testing.assert_close(cov, cov_t, rtol=0, atol=1e-6)
    x0, _ = mixture.sample(200_000, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _assert_moments_within(alpha * x0.double() + sigma * eps, mean_t, cov_t, what="x_t")


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (0.7, 0.5), (0.3, 0.95)])
def test_log_prob_is_the_closed_form_convolution(mixture, alpha, sigma):
    """log p_t(x) = log Σₖ wₖ N(x; αμₖ, α²Σₖ + σ²I), eq. (1), against torch.distributions,
    for scalar and per-example (α, σ)."""
    from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

    x = torch.randn(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 4
    comp = MultivariateNormal(alpha * mixture.means,
                              alpha**2 * mixture.covs + sigma**2 * torch.eye(2, dtype=torch.float64))
    ref = MixtureSameFamily(Categorical(probs=mixture.weights), comp).log_prob(x)
    torch.testing.assert_close(mixture.log_prob(x, alpha, sigma), ref, rtol=1e-10, atol=1e-10)
    a, s = torch.full((300,), alpha, dtype=torch.float64), torch.full((300,), sigma, dtype=torch.float64)
    torch.testing.assert_close(mixture.log_prob(x, a, s), ref, rtol=1e-10, atol=1e-10)


def test_per_example_levels(mixture):
    x = torch.randn(5, 2)
    sig = torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0])
    batched = mixture.score(x, 1.0, sig)
    for i in range(5):
        assert torch.allclose(batched[i], mixture.score(x[i : i + 1], 1.0, float(sig[i]))[0], atol=1e-6)


def test_rejects_bad_covariance_and_mismatched_shapes():
    # [[1, 2], [2, 1]] has eigenvalues 3 and −1: the Cholesky check in the constructor refuses it
    with pytest.raises(torch.linalg.LinAlgError, match="not positive-definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match=r"mixture shapes disagree: weights \(2,\), means \(1, 2\)"):
        GaussianMixture([0.5, 0.5], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]])
    with pytest.raises(ValueError, match=r"covs \(1, 3, 3\)"):
        GaussianMixture([1.0], [[0.0, 0.0]], [torch.eye(3).tolist()])
