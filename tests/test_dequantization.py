"""Uniform and importance-weighted dequantisation (sbm.core.units eqs. 4–7) against exact answers.

The density: a product of 1-D Gaussians N(μ_d, s²), whose cell integrals are known in closed form,
P(x) = Π_d [Φ((x_d + Δ − μ_d)/s) − Φ((x_d − μ_d)/s)] (the cell [x, x + Δ)^D of grid point x), and
whose Jensen bound (eq. 4) is too: E_u[(x + u − μ)²] = a² + aΔ + Δ²/3 (a = x − μ, u ~ U[0, Δ)), so
E_u[log p(x + u)] = Σ_d −½ log(2πs²) − (a_d² + a_d Δ + Δ²/3)/(2s²). With Δ = s the gap
log P − Jensen is 0.02–0.12 nats at the points below (within 1.5 s of μ), well above the Monte
Carlo errors of the means (≤ 3e-3).

Then the metrics (sbm.eval.likelihood) with importance dequantisation on models whose score is
exact. The probability-flow ODE's log p is itself an estimate (sbm.core.likelihood eq. 3: t_min,
prior, solver; ≤ 0.02 nats here), so there the checks are: against the same formula applied to the
true log-density at the same dequantised points (within the ODE's error), and bpd_iw ≤ bpd, which
holds draw by draw (a log-mean-exp is never below the mean) — exactly, no Monte Carlo slack.
"""

import math

import pytest
import torch

from sbm.core.units import (
    bin_width,
    bits_per_dim,
    dequantize,
    dequantize_copies,
    iw_dequantized_nll,
)

MU = torch.tensor([0.1, -0.2], dtype=torch.float64)
S = 0.25
N_LEVELS, RANGE = 9, (-1.0, 1.0)  # Δ = 0.25 = S
DELTA = bin_width(N_LEVELS, RANGE)
NORMAL = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def log_p(y):
    """log N(y; μ, s² I) of points y (..., 2)."""
    return (-0.5 * ((y - MU) / S) ** 2 - math.log(S) - 0.5 * math.log(2 * math.pi)).sum(-1)


def log_cell_mass(x):
    """log P(x) = Σ_d log [Φ((x_d + Δ − μ_d)/s) − Φ((x_d − μ_d)/s)], exact, (N,)."""
    hi, lo = NORMAL.cdf((x + DELTA - MU) / S), NORMAL.cdf((x - MU) / S)
    return torch.log(hi - lo).sum(-1)


def jensen_exact(x):
    """E_u[log p(x + u)] + D log Δ (eq. 4, the uniform bound), exact, (N,)."""
    a = x - MU
    e_sq = a**2 + a * DELTA + DELTA**2 / 3
    return (-0.5 * e_sq / S**2 - math.log(S) - 0.5 * math.log(2 * math.pi) + math.log(DELTA)).sum(-1)


def grid_points():
    """Grid points whose cells lie within ≈ 1.5 s of μ (levels k/4 − 1), (6, 2). Further out p varies by
    orders of magnitude across a cell and a single K = 8 draw is far off (the IW bound's variance)."""
    k = torch.tensor([[4, 4], [5, 3], [3, 3], [4, 2], [5, 4], [3, 2]], dtype=torch.float64)
    return RANGE[0] + DELTA * k


def iw_log_bound(x, k, reps, seed):
    """reps independent draws of the K-sample bound (eq. 6) per point: (reps, N) nats."""
    y = dequantize_copies(x.repeat(reps, 1), k, N_LEVELS, RANGE, gen(seed))  # (K·reps·N, 2)
    logp = log_p(y).reshape(k, reps * len(x))
    return (-iw_dequantized_nll(logp) + 2 * math.log(DELTA)).reshape(reps, len(x))


def test_jensen_le_importance_weighted_le_log_cell_mass():
    """(a) E[Jensen] ≤ E[IW, K = 8] ≤ log P(x), per point, over 4000 independent draws of the bound
    (standard error of each mean ≤ 3e-3 nats; log P − Jensen ≥ 0.02, log P − E[IW] ≈ 0.003–0.015)."""
    x = grid_points()
    exact, jensen = log_cell_mass(x), jensen_exact(x)
    iw8 = iw_log_bound(x, 8, 4000, seed=0)
    mean, se = iw8.mean(0), iw8.std(0) / math.sqrt(len(iw8))
    assert (se < 3e-3).all()
    assert (jensen < exact - 0.02).all()  # the uniform bound is visibly loose here
    assert (mean > jensen + 0.01).all(), (mean - jensen)
    assert (mean < exact + 4 * se).all(), (mean - exact, se)
    assert (exact - mean < 0.5 * (exact - jensen)).all()  # K = 8 already closes most of the gap
    # the K = 1 bound from the same machinery is unbiased for the Jensen bound
    iw1 = iw_log_bound(x, 1, 4000, seed=1)
    assert ((iw1.mean(0) - jensen).abs() < 4 * iw1.std(0) / math.sqrt(len(iw1))).all()


def test_importance_weighted_bound_converges_to_log_cell_mass():
    """(b) K = 1000: every one of 50 draws of the bound within 0.06 nats of log P(x) (measured sd
    0.007–0.015 per point: the relative variance of p(x + u) over the cells is 0.04–0.23, so the bias
    is ≤ 1.2e-4 and the sd ≈ √(0.23/1000)), their mean within 0.01 (its standard error ≤ 2.1e-3), and
    much closer than K = 8 draws."""
    x = grid_points()
    exact = log_cell_mass(x)
    iw1000 = iw_log_bound(x, 1000, 50, seed=2)
    assert (iw1000 - exact).abs().max() < 0.06, float((iw1000 - exact).abs().max())
    assert (iw1000.mean(0) - exact).abs().max() < 0.01, iw1000.mean(0) - exact
    iw8 = iw_log_bound(x, 8, 50, seed=3)
    assert (iw1000 - exact).abs().mean() < 0.3 * (iw8 - exact).abs().mean()


def test_k_equal_one_is_the_jensen_bound_and_iw_is_never_below_it_per_draw():
    """(c) K = 1: the bracket of eq. (7) is −log p(x + u) itself, bits/dim those of eq. (5); for any K the
    log-mean-exp of the same K draws is ≥ their mean (Jensen), draw by draw, so bpd_iw ≤ the averaged bpd."""
    x = grid_points()
    y = dequantize(x, N_LEVELS, RANGE, gen(4))
    logp = log_p(y)
    assert torch.equal(iw_dequantized_nll(logp[None]), -logp)
    assert torch.equal(bits_per_dim(iw_dequantized_nll(logp[None]), 2, N_LEVELS, RANGE),
                       bits_per_dim(-logp, 2, N_LEVELS, RANGE))
    logp8 = log_p(dequantize_copies(x, 8, N_LEVELS, RANGE, gen(5))).reshape(8, len(x))
    assert (iw_dequantized_nll(logp8) <= -logp8.mean(0) + 1e-12).all()
    # stable for log-densities far outside exp's range
    big = torch.tensor([[-2000.0, 1000.0], [-2000.0 + math.log(3), 1000.0]], dtype=torch.float64)
    assert torch.allclose(iw_dequantized_nll(big), torch.tensor([2000.0 - math.log(2), -1000.0],
                                                                 dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(K, N\)"):
        iw_dequantized_nll(logp)


@pytest.mark.parametrize("k", [1, 8])
def test_uniform_density_on_the_cube_gives_log2_levels_for_both(k):
    """(d) Density (n Δ)^(−D) on the dequantised cube [lo, hi + Δ)^D: every draw has the same log p,
    so the Jensen and the importance-weighted bits/dim are both exactly log₂ n_levels."""
    n_levels, data_range, d = 5, (2.0, 10.0), 3
    delta = bin_width(n_levels, data_range)
    x = data_range[0] + delta * torch.randint(0, n_levels, (50, d), generator=gen(6)).double()
    y = dequantize_copies(x, k, n_levels, data_range, gen(7))
    assert y.min() >= data_range[0] and y.max() < data_range[1] + delta
    logp = torch.full((k, 50), -d * math.log(n_levels * delta), dtype=torch.float64)
    want = torch.full((50,), math.log2(n_levels), dtype=torch.float64)
    assert torch.allclose(bits_per_dim(-logp, d, n_levels, data_range).mean(0), want, rtol=0, atol=1e-12)
    assert torch.allclose(bits_per_dim(iw_dequantized_nll(logp), d, n_levels, data_range), want, rtol=0, atol=1e-12)


def test_dequantize_copies_stacks_k_copies_each_in_its_own_cell():
    x = grid_points()
    y = dequantize_copies(x, 3, N_LEVELS, RANGE, gen(8))
    assert y.shape == (18, 2)
    for j in range(3):  # copy j of point n at row j·N + n, inside the cell [x, x + Δ)
        u = y[j * 6:(j + 1) * 6] - x
        assert (u >= 0).all() and (u < DELTA).all()
    assert not torch.equal(y[:6], y[6:12])  # independent draws
    assert torch.equal(dequantize_copies(x, 1, N_LEVELS, RANGE, gen(9)), dequantize(x, N_LEVELS, RANGE, gen(9)))
    with pytest.raises(ValueError, match="k = 0"):
        dequantize_copies(x, 0, N_LEVELS, RANGE, gen(0))


# --------------------------------------------------------------------------- params


def test_dequantization_params_resolve_k_and_refuse_k_for_uniform():
    from sbm.config.params import LikelihoodParams, parse_params
    from sbm.errors import ConfigError

    assert LikelihoodParams().dequant_k == 1 and LikelihoodParams().dequantization == "uniform"
    assert LikelihoodParams(dequantization="importance").dequant_k == 4  # null: the default K
    assert LikelihoodParams(dequantization="importance", dequant_samples=16).dequant_k == 16
    assert LikelihoodParams(dequant_samples=1).dequant_k == 1  # uniform: one draw may be spelled out
    with pytest.raises(ConfigError, match=r"likelihood\.dequant_samples = 8 with likelihood\.dequantization = "
                                          r"'uniform'.*dequantization = importance"):
        LikelihoodParams(dequant_samples=8)
    with pytest.raises(ConfigError, match=r"^params\.yaml: likelihood\.dequant_samples = 0: must be >= 1"):
        parse_params({"likelihood": {"dequantization": "importance", "dequant_samples": 0}})


# --------------------------------------------------------------------------- the metrics


def _gaussian_model():
    """The exact score of N(μ, s² I) under VP: p_t = N(α μ, (α² s² + σ²) I)."""
    from sbm.core.model import AnalyticScoreModel
    from sbm.core.processes import VPSDE

    process = VPSDE(0.1, 20, t_min=1e-5)

    def score(x, t):
        a, sig = process.marginal(t)
        a, v = a[:, None], (a**2 * S**2 + sig**2)[:, None]
        return -(x - a * MU) / v

    return AnalyticScoreModel(score, process)


def _quantised_test(n: int):
    x = MU + S * torch.randn(n, 2, generator=gen(10), dtype=torch.float64)
    k = torch.round((x.clamp(*RANGE) - RANGE[0]) / DELTA)
    return RANGE[0] + DELTA * k


def test_nll_metrics_with_importance_dequantisation():
    """K = 4 copies of 16 points in one ODE pass (exact divergence): bpd is the Jensen bound averaged over
    the draws and bpd_iw the importance-weighted one, each within the ODE's error (≤ 0.02 nats, i.e.
    0.0145 bits/dim in D = 2) of the same formula on the true log-density at the same dequantised
    points; bpd_iw ≤ bpd exactly; uniform reproduces dataset_nll's bits/dim (continuity), and importance
    with K = 1 the uniform figure. The typed records read the new keys."""
    from sbm.config.params import LikelihoodParams
    from sbm.core.likelihood import dataset_nll
    from sbm.eval.likelihood import nll_metrics
    from sbm.pipeline.outputs.evaluation import OdeLikelihood, likelihood_part

    model, test = _gaussian_model(), _quantised_test(20)
    meta = {"n_levels": N_LEVELS, "data_range": list(RANGE)}
    cfg = LikelihoodParams(n_points=16, batch_size=32, rtol=1e-6, atol=1e-6, dequantization="importance",
                           dequant_samples=4)
    flat, detail = nll_metrics(model, test, meta, cfg, seed=3, progress=False)
    assert set(flat) == {"bpd", "bpd_iw", "nll_nfe"}
    assert flat["bpd_iw"] <= flat["bpd"]
    y = dequantize_copies(test[:16], 4, N_LEVELS, RANGE, gen(3))  # the draws of seed 3
    logp = log_p(y).reshape(4, 16)
    want_bpd = float(bits_per_dim(-logp, 2, N_LEVELS, RANGE).mean())
    want_iw = float(bits_per_dim(iw_dequantized_nll(logp), 2, N_LEVELS, RANGE).mean())
    assert flat["bpd"] == pytest.approx(want_bpd, abs=0.0145)
    assert flat["bpd_iw"] == pytest.approx(want_iw, abs=0.0145)
    # −log₂ P(x)/D in closed form: above bpd_iw here (2.390 vs 2.360): eq. (7) bounds it only in
    # expectation over the draws, and one realisation of K = 4 draws on 16 points may dip below it
    truth = float(-log_cell_mass(test[:16]).mean() / (2 * math.log(2)))
    assert want_iw < want_bpd and truth < want_bpd
    lik = detail["likelihood"]
    assert lik["dequantization"] == "importance (K = 4)" and lik["dequant_samples"] == 4 and lik["n"] == 16
    assert lik["batches"] == 2 and lik["bpd_iw"] == flat["bpd_iw"]
    typed, typed_detail = likelihood_part(flat, detail)
    assert isinstance(typed, OdeLikelihood) and typed.bpd_iw == flat["bpd_iw"]
    assert typed_detail.dequant_samples == 4 and typed_detail.to_json() == lik

    uniform = LikelihoodParams(n_points=16, batch_size=32, rtol=1e-6, atol=1e-6)
    flat_u, detail_u = nll_metrics(model, test, meta, uniform, seed=3, progress=False)
    summary, _ = dataset_nll(model, test[:16], batch_size=32, rtol=1e-6, atol=1e-6, n_levels=N_LEVELS,
                             data_range=RANGE, generator=gen(3))
    assert flat_u == {"bpd": summary["bpd"], "nll_nfe": summary["nll_nfe"]}
    assert detail_u["likelihood"]["dequantization"] == "uniform" and "dequant_samples" not in detail_u["likelihood"]
    one = LikelihoodParams(n_points=16, batch_size=32, rtol=1e-6, atol=1e-6, dequantization="importance",
                           dequant_samples=1)
    flat_1, _ = nll_metrics(model, test, meta, one, seed=3, progress=False)
    assert flat_1["bpd"] == flat_1["bpd_iw"] == flat_u["bpd"]


class _DiagonalLatentModel:
    """x = a ⊙ z + b + σ ε, z ~ N(0, I) in D = 2, with the exact (diagonal) posterior: every importance
    weight p(x|z)p(z)/q(z|x) equals p(x) = N(b, diag(a² + σ²)), so the latent bound of each dequantised
    copy is −log p(x + u) itself, and the bound weighted over z and u that of eq. (6) on p."""

    scale = 1.0

    def __init__(self, a=(0.2, 0.15), sigma=0.1):
        self.a = torch.tensor(a, dtype=torch.float64)
        self.b, self.sigma = MU, sigma
        self.var = self.a**2 + sigma**2

    def log_px(self, x):
        return (-0.5 * (x - self.b) ** 2 / self.var - 0.5 * torch.log(2 * math.pi * self.var)).sum(-1)

    def posterior(self, x):
        v = self.a**2 + self.sigma**2
        return self.a * (x - self.b) / v, torch.log(self.sigma**2 / v).expand(len(x), 2)

    def decoder_log_prob(self, x, z):
        r = x - (self.a * z + self.b)
        return (-0.5 * r.pow(2) / self.sigma**2 - math.log(self.sigma) - 0.5 * math.log(2 * math.pi)).sum(1)


def test_latent_nll_metrics_weights_dequantisation_and_latents_together():
    """Exact posterior, exact score of the N(0, I) prior (VE): bpd_bound_iw is eq. (7) on the true p at
    the same dequantised points (within the ODE's error) and never above bpd_bound_iwae."""
    from sbm.config.params import LikelihoodParams
    from sbm.core.model import AnalyticScoreModel
    from sbm.core.processes import VESDE
    from sbm.eval.likelihood import latent_nll_metrics
    from sbm.pipeline.outputs.evaluation import LatentBound, likelihood_part

    vae, test = _DiagonalLatentModel(), _quantised_test(12)
    process = VESDE(0.01, 20.0, t_min=0.0)

    def score(z, t):  # p_t = N(0, (1 + σ(t)²) I)
        _, sig = process.marginal(t)
        return -z / (1 + sig.reshape(-1, 1) ** 2)

    cfg = LikelihoodParams(n_points=12, batch_size=48, rtol=1e-6, atol=1e-6, dequantization="importance",
                           dequant_samples=4)
    meta = {"n_levels": N_LEVELS, "data_range": list(RANGE)}
    flat, detail = latent_nll_metrics(AnalyticScoreModel(score, process), vae, test, meta, cfg, seed=1,
                                      bound_samples=2, progress=False)
    assert flat["bpd_bound_iw"] <= flat["bpd_bound_iwae"] + 1e-12
    logp = vae.log_px(dequantize_copies(test[:12], 4, N_LEVELS, RANGE, gen(1))).reshape(4, 12)
    iw = iw_dequantized_nll(logp)
    assert flat["nll_bound_iw"] == pytest.approx(float(iw.mean()), abs=0.02)
    assert flat["bpd_bound_iw"] == pytest.approx(float(bits_per_dim(iw, 2, N_LEVELS, RANGE).mean()), abs=0.0145)
    assert flat["bpd_bound"] == pytest.approx(float(bits_per_dim(-logp, 2, N_LEVELS, RANGE).mean()), abs=0.0145)
    lik = detail["likelihood"]
    assert lik["dequantization"] == "importance (K = 4)" and lik["dequant_samples"] == 4 and lik["n"] == 12
    typed, typed_detail = likelihood_part(flat, detail)
    assert isinstance(typed, LatentBound) and typed.bpd_bound_iw == flat["bpd_bound_iw"]
    assert typed_detail.to_json() == lik
