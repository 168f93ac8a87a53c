"""Score-matching objectives checked against the exact score of a Gaussian mixture."""

import pytest
import torch

from sbm.config.params import ObjectiveParams
from sbm.core.losses import build_loss, dsm_loss, dsm_objective, eps_loss, esm_objective, ssm_objective
from sbm.core.model import AnalyticScoreModel, ScoreModel
from sbm.core.processes import NCSNLadder
from sbm.errors import ConfigError
from sbm.nets.score import MLPNet

SIGMA = 0.7  # a noise level at which the perturbed mixture p_σ is multi-modal


def _noisy_batch(mixture, n, seed):
    g = torch.Generator().manual_seed(seed)
    x0, _ = mixture.sample(n, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    return x0.double(), eps.double(), (x0.double() + SIGMA * eps.double())


def _perturbations():
    A = torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=torch.float64)
    return {
        "constant": lambda x: torch.tensor([0.3, -0.5], dtype=torch.float64).expand_as(x),
        "linear": lambda x: x @ A.T,
        "nonlinear": lambda x: 0.5 * torch.sin(x).flip(1),
    }


@pytest.mark.parametrize("name", list(_perturbations()))
def test_dsm_is_minimised_by_the_exact_score(mixture, name):
    """DSM(s) = ½σ²E‖s − s*‖² + C (Vincent 2011): adding h raises it by ½σ²E‖h‖²."""
    h = _perturbations()[name]
    x0, eps, xt = _noisy_batch(mixture, 200_000, seed=1)
    exact = mixture.score(xt, 1.0, SIGMA)
    sig = torch.full((len(xt),), SIGMA, dtype=torch.float64)
    base = dsm_objective(exact, eps, sig)
    for scale in (0.1, 1.0):
        diff = dsm_objective(exact + scale * h(xt), eps, sig) - base  # paired, per example
        expect = 0.5 * SIGMA**2 * (scale * h(xt)).pow(2).sum(1).mean()
        se = diff.std() / len(diff) ** 0.5
        assert diff.mean() > 0
        assert abs(diff.mean() - expect) < 4 * se


@pytest.mark.parametrize("name", list(_perturbations()))
def test_esm_difference_is_minus_half_fisher_divergence(mixture, name):
    """J(s*) − J(s*+h) = −½ E‖h‖² (Hyvärinen 2005): integration by parts makes the cross term vanish."""
    h = _perturbations()[name]
    _, _, x = _noisy_batch(mixture, 100_000, seed=2)
    exact = lambda y: mixture.score(y, 1.0, SIGMA)  # noqa: E731
    j_exact = esm_objective(exact, x).detach()
    j_pert = esm_objective(lambda y: exact(y) + h(y), x).detach()
    diff = j_exact - j_pert
    fisher = h(x).pow(2).sum(1)
    # compare means with the Monte-Carlo standard error of the paired difference
    resid = diff + 0.5 * fisher
    se = resid.std() / len(x) ** 0.5
    assert abs(resid.mean().item()) < 4 * se.item() + 1e-9
    assert diff.mean() < 0


@pytest.mark.parametrize("projection", ["rademacher", "gaussian"])
@pytest.mark.parametrize("variance_reduced", [False, True])
def test_ssm_is_an_unbiased_estimate_of_esm(mixture, projection, variance_reduced):
    """E_v[vᵀ∇(vᵀs) + ½(vᵀs)²] = tr∇s + ½‖s‖² for E[vvᵀ] = I (Song et al. 2019)."""
    _, _, x = _noisy_batch(mixture, 64, seed=3)
    score = lambda y: mixture.score(y, 1.0, SIGMA) + 0.3 * torch.sin(y)  # noqa: E731 (not the true score)
    target = esm_objective(score, x).detach()
    k = 4000
    reps = ssm_objective(score, x.repeat(k, 1), n_projections=1, projection=projection,
                         variance_reduced=variance_reduced).detach().reshape(k, len(x))
    z = (reps.mean(0) - target) / (reps.std(0) / k**0.5 + 1e-12)
    # per-example z-scores of an unbiased estimator are ~N(0,1): none far out, mean near 0
    assert z.abs().max() < 5
    assert abs(z.mean().item()) < 4 / len(x) ** 0.5 * 1.5
    # and the estimator is not trivially exact (it is random)
    assert reps.std(0).max() > 0


def test_eps_loss_is_twice_dsm_under_the_same_noise(mixture):
    """‖ε − ε_θ‖² = 2 · ½‖σ s_θ + ε‖² with ε_θ = −σ s_θ: the same objective reparameterised."""
    process = NCSNLadder(0.05, 20.0, 10)
    model = ScoreModel(MLPNet(2, hidden=32, depth=1), process)
    x0, _ = mixture.sample(256)
    torch.manual_seed(5)
    a = eps_loss(model, x0)
    torch.manual_seed(5)
    b = dsm_loss(model, x0)
    assert a.shape == b.shape == (256,)
    assert torch.allclose(a, 2 * b, rtol=1e-5, atol=1e-6)


def test_exact_score_model_has_lower_dsm_than_a_wrong_one(mixture):
    process = NCSNLadder(0.05, 20.0, 10)
    exact = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    wrong = AnalyticScoreModel(lambda x, t: mixture.exact_score_fn(process)(x, t) * 0.8, process)
    x0, _ = mixture.sample(50_000)
    torch.manual_seed(7)
    l_exact = dsm_loss(exact, x0).mean()
    torch.manual_seed(7)
    l_wrong = dsm_loss(wrong, x0).mean()
    assert l_exact < l_wrong


@pytest.mark.parametrize("name", ["dsm", "eps", "esm", "ssm", "ssm_vr"])
def test_every_loss_returns_one_value_per_example_and_backpropagates(mixture, name):
    process = NCSNLadder(0.05, 20.0, 10)
    model = ScoreModel(MLPNet(2, hidden=16, depth=1), process)
    loss = build_loss(name, ObjectiveParams(n_projections=2), data_dim=2)
    x0, _ = mixture.sample(32)
    value = loss(model, x0, None)
    assert value.shape == (32,)
    value.mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_esm_is_refused_in_high_dimension():
    with pytest.raises(ConfigError, match="esm_max_dim"):
        build_loss("esm", ObjectiveParams(esm_max_dim=16), data_dim=64)
