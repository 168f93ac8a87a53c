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


def test_perturbed_moments_match_samples(mixture):
    # p_t of α x₀ + σ ε: mean α Σ wₖ μₖ, checked against simulation
    x0, _ = mixture.sample(200_000, generator=torch.Generator().manual_seed(1))
    xt = 0.7 * x0.double() + 0.5 * torch.randn(x0.shape, dtype=torch.float64)
    expect = 0.7 * (mixture.weights[:, None] * mixture.means).sum(0)
    assert torch.allclose(xt.mean(0), expect, atol=0.03)


def test_per_example_levels(mixture):
    x = torch.randn(5, 2)
    sig = torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0])
    batched = mixture.score(x, 1.0, sig)
    for i in range(5):
        assert torch.allclose(batched[i], mixture.score(x[i : i + 1], 1.0, float(sig[i]))[0], atol=1e-6)


def test_rejects_bad_covariance():
    with pytest.raises(Exception):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
