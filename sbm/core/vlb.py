"""Variational bounds on −log p(x₀): the DDPM bound (discrete β) and the continuous-time bound of
the VP SDE, in nats per example, each with its Monte Carlo standard error.

Shapes: x₀ (N, ...) with D = x₀[0].numel() coordinates; every per-example result is (N,) float64.
Both bounds are prior + reconstruction + diffusion terms, and both bound the likelihood of the
*stochastic* model (ancestral sampling / the reverse SDE, then a decoder), not of the
probability-flow ODE of `sbm.core.likelihood`.

DDPM (Ho et al. 2020, eq. 5). With β_1..β_N, α_t = 1 − β_t, ᾱ_t = Π_{s≤t} α_s (ᾱ_0 = 1),
q(x_t | x₀) = N(√ᾱ_t x₀, (1 − ᾱ_t) I), p(x_N) = N(0, I) and the reverse model
p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), σ_t² I), a hierarchical VAE whose ELBO is::

    −log p_θ(x₀) ≤ L_T + Σ_{t=2}^{N} L_{t−1} + L_0                                               (1)

    L_T     = KL(q(x_N | x₀) ‖ N(0, I)) = ½ Σ_d [ᾱ_N x₀_d² + (1 − ᾱ_N) − 1 − log(1 − ᾱ_N)]         (2)
    L_{t−1} = E_{q(x_t | x₀)} KL(q(x_{t−1} | x_t, x₀) ‖ p_θ(x_{t−1} | x_t))
            = E ½ [D (β̃_t/σ_t² − 1 + log(σ_t²/β̃_t)) + ‖μ̃_t − μ_θ‖²/σ_t²]                        (3)
    L_0     = E_{q(x_1 | x₀)} [−log p_θ(x₀ | x_1)]                                                (4)

with the true posterior (Ho eq. 6–7) and the model's mean from ε_θ (Ho eq. 11)::

    μ̃_t = √ᾱ_{t−1} β_t/(1 − ᾱ_t) x₀ + √α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t) x_t,   β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) β_t
    μ_θ(x_t, t) = (x_t − β_t/√(1 − ᾱ_t) ε_θ(x_t, t)) / √α_t                                       (5)

Ho's t = 1..N is the process's index i = t − 1 (`DDPMSchedule.time(i)` is the model's time).
The model variance σ_t² (`variance`):

- ``posterior`` (default): β̃_t. It is the variance of this package's `ddpm` sampler
  (`sbm.core.samplers`, Ho eq. 6), so (1) bounds the likelihood of the model that sampler draws
  from; and it is the true reverse variance when x₀ is determined by x_t (Ho §3.2), which
  quantised data approaches at the first steps, where the terms of (1) are largest (Nichol &
  Dhariwal 2021, Fig. 2).
- ``beta``: β_t, the true reverse variance for x₀ ~ N(0, I) (Ho §3.2). On continuous data it
  is the tighter: there, with the exact ε, the gap of (1) vanishes as N grows (≈ 2.2/N nats for
  the linear schedule on N(0.3, 0.25 I) in 2-D), while with β̃_t it does not (1.1 nats at N = 1000,
  1.0 at N = 4000: β̃_t ≪ Var(x_{t−1} | x_t) at the first steps). On quantised data it is the other
  way round (tests/test_vlb.py measures both).

The decoder of (4) has mean μ_θ(x_1, 1) (= x̂₀(x_1), since ᾱ_1 = α_1) and variance σ_1² = β_1
(``beta``) or β̃_2 (``posterior``: β̃_1 = 0 is degenerate; Ho's and Nichol & Dhariwal's code take
β̃_2 too). For quantised data it is the discretised Gaussian of Ho §3.3 over the data's levels
(`decoder_nll`): (1) then bounds −log P(x₀) of the *discrete* data, with no dequantisation, and
bits/dim = bound / (D ln 2). For continuous data it is the density N(x₀; μ_θ, σ_1² I).

Writing x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε gives μ̃_t − μ_θ = β_t/√(α_t(1 − ᾱ_t)) (ε_θ − ε) (Ho
eq. 10–12), so (3) is a constant plus a weighted ε error::

    L_{t−1} = D c_t + w_t E‖ε − ε_θ(x_t, t)‖²,   c_t = ½(β̃_t/σ_t² − 1 + log(σ_t²/β̃_t)),
    w_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t))                                                         (6)

Estimators of (1) (`ddpm_vlb`, `t_samples`):

- every t (None): each of the N − 1 terms (3) at one draw of x_t, and (4) at one draw of x_1;
  twice, independently: the estimate is the mean of the two passes a, b and its standard error
  |a − b|/2 (the sample sd of two draws over √2).
- importance-sampled (K ≥ 2): K independent draws of t ~ p(t) = w_t/W (W = Σ_{t≥2} w_t), x_t
  and x_1 per example, each giving L_T + D Σ_t c_t + (L_{t−1}(x_t) − D c_t)/p(t) + L_0(x_1),
  unbiased for (1) because E_p[(L_{t−1} − D c_t)/p(t)] = Σ_t (L_{t−1} − D c_t); the estimate is
  their mean, its standard error their sd/√K. By (6) the sampled part is W‖ε − ε_θ‖²: its spread
  is that of the ε error alone (uniform t would put the first steps, which dominate (1), at 1/N).

Continuous time (Song et al. 2021, "Maximum likelihood training of score-based diffusion
models", Thm 1 and eq. 9). For dx = f(t) x dt + g(t) dw with marginals x_t = α x₀ + σ ε and
prior π = N(0, p² I), the model is y = x_{t_min} drawn by the reverse SDE with score s_θ from π
at t = 1, then x₀ ~ p(x₀ | y). The theorem bounds the density of y; with the ELBO over
q(y | x₀) and Stein's identity (the integrand depends on y only through E_{x_t | y}, so the
conditioning moves from y to x₀)::

    −log p_θ(x₀) ≤ E_q[−log p(x₀ | y)] − H[q(y | x₀)] − E_q[log π(x_1)]
                   + ½ ∫_{t_min}^{1} E_{q(x_t | x₀)} [g² ‖s_θ − ∇log q(x_t | x₀)‖²
                                                     − g² ‖∇log q(x_t | x₀)‖² − 2 ∇·f] dt          (7)

∇log q(x_t | x₀) = −ε/σ, E‖ε/σ‖² = D/σ², ∇·f = D f and g²/σ² + 2f = d log σ²/dt, so the last two
terms integrate to −(D/2) log(σ(1)²/σ(t_min)²), and with the entropy and the prior term they
make KL(q(x_1 | x₀) ‖ π). With λ = log(α²/σ²), dλ/dt = −g²/σ² and s_θ = −ε_θ/σ (7) is::

    −log p_θ(x₀) ≤ KL(q(x_1 | x₀) ‖ π) + E_q[−log p(x₀ | y)] + ½ ∫_{λ(1)}^{λ(t_min)} E‖ε − ε_θ(x_t, t)‖² dλ   (8)

— the continuous VDM loss of Kingma et al. 2021 (prior + reconstruction + diffusion). The
integral is estimated with λ ~ U[λ(1), λ(t_min)] (t(λ) in closed form, the process's inverse of
σ̃ = e^{−λ/2}, `sbm.core.processes` eq. 4): ½(λ(t_min) − λ(1))
‖ε − ε_θ‖² per draw, bounded where ε_θ is (uniform t has a 1/t integrand near t_min). The decoder
p(x₀ | y) has mean x̂₀(y) = model.x0(y, t_min) and standard deviation σ(t_min)/α(t_min) (that of
y/α − x₀), discretised for quantised data as above. `continuous_vlb` takes K ≥ 2 draws of
(λ, x_t, y) per example: the estimate is their mean, its standard error their sd/√K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from sbm.core.model import model_dtype_device
from sbm.core.schedules import log_snr  # λ(t) = log(α²/σ²) = −2 log σ̃(t), float64 (N,), decreasing in t
from sbm.core.tensor import bcast
from sbm.core.units import bin_width

VARIANCES = ("posterior", "beta")


@dataclass
class BoundResult:
    """A variational bound per example (nats, float64 (N,)): nll = prior + recon + diffusion
    (the three averaged over the draws), se its Monte Carlo standard error; nfe: model
    evaluations on the batch."""

    nll: Tensor
    se: Tensor
    prior: Tensor
    recon: Tensor
    diffusion: Tensor
    nfe: int


# --------------------------------------------------------------------------- shared terms


def _flat_sum(v: Tensor) -> Tensor:
    return v.reshape(len(v), -1).sum(1)


def prior_kl(process, x0: Tensor) -> Tensor:
    """KL(q(x_1 | x₀) ‖ π) = KL(N(α(1) x₀, σ(1)² I) ‖ N(0, p² I)) per example, (N,): L_T of eq. (2)
    for DDPM (α(1)² = ᾱ_N, p = 1), the prior term of eq. (8)."""
    x = x0.double()
    a, s = process.marginal(torch.ones(1, dtype=torch.float64))
    a, s, p = float(a), float(s), float(process.prior_std())
    d = x[0].numel()
    return 0.5 * ((a**2 * _flat_sum(x**2) + d * s**2) / p**2 - d + 2 * d * math.log(p / s))


def _log_bin_prob(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Φ(hi) − Φ(lo)) elementwise for lo < hi (±inf allowed), accurate in both tails."""
    flip = lo > 0  # Φ(hi) − Φ(lo) = Φ(−lo) − Φ(−hi): keep both arguments on the accurate side
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    lb, la = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    out = lb + torch.log1p(-torch.exp(la - lb).clamp(max=1.0))
    # a bin much narrower than the decoder's std: mid-point density × width
    mid = (a + b) / 2
    narrow = (b - a) < 1e-6
    dens = -0.5 * mid**2 - 0.5 * math.log(2 * math.pi) + torch.log((b - a).clamp(min=1e-300))
    return torch.where(narrow & torch.isfinite(mid), dens, out)


def decoder_nll(x0: Tensor, mean: Tensor, std: Tensor, n_levels: int | None = None,
                data_range: Sequence[float] = (-1.0, 1.0)) -> Tensor:
    """−log p(x₀ | ·) per example, (N,), of the decoder N(mean, std²) per coordinate: x0, mean (N, ...),
    std (N,) or a float.

    n_levels None: continuous data, the Gaussian density. Otherwise the discretised Gaussian of Ho
    et al. 2020 §3.3 on the grid lo, lo + Δ, …, hi (Δ = `bin_width`): the mass of
    [x − Δ/2, x + Δ/2] per coordinate, with the edge bins open to −∞ at lo and +∞ at hi, so the
    probabilities of the n_levels values sum to one; raises ValueError if x0 is not on the grid."""
    x, m = x0.double(), mean.double()
    sd = bcast(torch.as_tensor(std, dtype=torch.float64).expand(len(x)), x)
    if n_levels is None:
        z = (x - m) / sd
        return _flat_sum(0.5 * z**2 + torch.log(sd) + 0.5 * math.log(2 * math.pi))
    delta = bin_width(n_levels, data_range)
    lo_v = float(data_range[0])
    k = (x - lo_v) / delta
    if x.numel() and (float((k - k.round()).abs().max()) > 1e-3 or float(k.min()) < -1e-3
                      or float(k.max()) > n_levels - 1 + 1e-3):
        raise ValueError(f"decoder_nll: values are not on the {n_levels}-level grid of {list(data_range)} "
                         f"(spacing {delta:.6g}); check n_levels / data_range")
    k = k.round()
    inf = torch.full_like(x, math.inf)
    lo = torch.where(k <= 0, -inf, (x - delta / 2 - m) / sd)
    hi = torch.where(k >= n_levels - 1, inf, (x + delta / 2 - m) / sd)
    return -_flat_sum(_log_bin_prob(lo, hi))


def _eps(model, x: Tensor, t: Tensor) -> Tensor:
    """ε_θ(x, t) in float64; x (N, ...) float64, t (N,) float64, evaluated in the model's dtype."""
    dtype, device = model_dtype_device(model)
    with torch.no_grad():
        out = model.eps(x.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype))
    return out.double().cpu()


def _x0(model, x: Tensor, t: Tensor) -> Tensor:
    dtype, device = model_dtype_device(model)
    with torch.no_grad():
        out = model.x0(x.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype))
    return out.double().cpu()


def _mean_se(draws: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard error over the first axis of (K, N) draws (K ≥ 2)."""
    return draws.mean(0), draws.std(0, unbiased=True) / math.sqrt(draws.shape[0])


# --------------------------------------------------------------------------- DDPM


@dataclass(frozen=True)
class DDPMTables:
    """The schedule's per-step constants, float64 (N,), index i = t − 1 (Ho's t = 1..N):
    beta β_t, abar ᾱ_t, abar_prev ᾱ_{t−1}, post β̃_t (post[0] = 0), var σ_t² of the model (eq. 3 and
    the decoder's at i = 0), c and w of eq. (6) (0 at i = 0)."""

    beta: Tensor
    abar: Tensor
    abar_prev: Tensor
    post: Tensor
    var: Tensor
    c: Tensor
    w: Tensor

    @classmethod
    def of(cls, process, variance: str = "posterior") -> DDPMTables:
        if variance not in VARIANCES:
            raise ValueError(f"variance = {variance!r}: allowed {', '.join(VARIANCES)}")
        beta = process.betas.double().cpu()
        if len(beta) < 2:
            raise ValueError(f"the DDPM bound needs N >= 2 steps; the process has {len(beta)}")
        abar = torch.cumprod(1 - beta, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        post = (1 - abar_prev) / (1 - abar) * beta
        var = post.clone() if variance == "posterior" else beta.clone()
        if variance == "posterior":
            var[0] = post[1]
        c, w = torch.zeros_like(beta), torch.zeros_like(beta)
        c[1:] = 0.5 * (post[1:] / var[1:] - 1 + torch.log(var[1:] / post[1:]))
        w[1:] = beta[1:] ** 2 / (2 * var[1:] * (1 - beta[1:]) * (1 - abar[1:]))
        return cls(beta, abar, abar_prev, post, var, c, w)


def ddpm_kl_term(model, x0: Tensor, index: Tensor, eps: Tensor, *, variance: str = "posterior",
                 tables: DDPMTables | None = None) -> Tensor:
    """L_{t−1} of eq. (3) at one draw, per example (N,) nats: KL(q(x_{t−1} | x_t, x₀) ‖ p_θ(x_{t−1} | x_t))
    at x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) eps. x0, eps (N, ...); index (N,) long, i = t − 1 ∈ [1, N − 1]."""
    tb = tables or DDPMTables.of(model.process, variance)
    i = index.long().cpu()
    if len(i) and (int(i.min()) < 1 or int(i.max()) > len(tb.beta) - 1):
        raise ValueError(f"ddpm_kl_term: index must lie in [1, {len(tb.beta) - 1}] (t = 2..N)")
    x, e = x0.double().cpu(), eps.double().cpu()
    d = x[0].numel()
    b, ab, abp, post, var = (bcast(v[i], x) for v in (tb.beta, tb.abar, tb.abar_prev, tb.post, tb.var))
    xt = ab.sqrt() * x + (1 - ab).sqrt() * e
    mu_q = abp.sqrt() * b / (1 - ab) * x + (1 - b).sqrt() * (1 - abp) / (1 - ab) * xt
    eps_t = _eps(model, xt, model.process.time(i).double())
    mu_p = (xt - b / (1 - ab).sqrt() * eps_t) / (1 - b).sqrt()
    return 0.5 * (d * (tb.post[i] / tb.var[i] - 1 + torch.log(tb.var[i] / tb.post[i]))
                  + _flat_sum((mu_q - mu_p) ** 2) / tb.var[i])


def ddpm_decoder_nll(model, x0: Tensor, eps: Tensor, *, variance: str = "posterior", n_levels: int | None = None,
                     data_range: Sequence[float] = (-1.0, 1.0), tables: DDPMTables | None = None) -> Tensor:
    """L_0 of eq. (4) at one draw x_1 = √ᾱ_1 x₀ + √(1 − ᾱ_1) eps, per example (N,): −log p_θ(x₀ | x_1),
    the decoder N(μ_θ(x_1, 1), σ_1²) (discretised when n_levels is set, `decoder_nll`)."""
    tb = tables or DDPMTables.of(model.process, variance)
    x, e = x0.double().cpu(), eps.double().cpu()
    b, ab = float(tb.beta[0]), float(tb.abar[0])
    x1 = math.sqrt(ab) * x + math.sqrt(1 - ab) * e
    i = torch.zeros(len(x), dtype=torch.long)
    mean = (x1 - b / math.sqrt(1 - ab) * _eps(model, x1, model.process.time(i).double())) / math.sqrt(1 - b)
    return decoder_nll(x, mean, float(tb.var[0].sqrt()), n_levels, data_range)


def ddpm_vlb(model, x0: Tensor, *, variance: str = "posterior", t_samples: int | None = None,
             n_levels: int | None = None, data_range: Sequence[float] = (-1.0, 1.0),
             generator: torch.Generator | None = None,
             callback: Callable[[int], None] | None = None) -> BoundResult:
    """The bound (1) on −log p_θ(x₀) per example of x0 (N, ...), for a model on a `DDPMSchedule`.

    t_samples None: every t, two passes; K ≥ 2: K importance-sampled draws per example (module
    docstring). n_levels: quantised data (discretised decoder). Noise from `generator`;
    callback(nfe) after every model evaluation on the batch."""
    if t_samples is not None and t_samples < 2:
        raise ValueError(f"t_samples = {t_samples}: need None (every t) or >= 2 (a standard error needs two draws)")
    tb = DDPMTables.of(model.process, variance)
    x = x0.double().cpu()
    n, n_steps, d = len(x), len(tb.beta), x[0].numel()
    if n == 0:
        raise ValueError("ddpm_vlb: empty batch")
    nfe = 0

    def counted(v: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        if callback is not None:
            callback(nfe)
        return v

    def noise() -> Tensor:
        return torch.randn(x.shape, generator=generator, dtype=torch.float64)

    prior = prior_kl(model.process, x)
    recs, diffs = [], []
    if t_samples is None:
        for _ in range(2):
            diff = torch.zeros(n, dtype=torch.float64)
            for i in range(1, n_steps):
                idx = torch.full((n,), i, dtype=torch.long)
                diff = diff + counted(ddpm_kl_term(model, x, idx, noise(), tables=tb))
            diffs.append(diff)
            recs.append(counted(ddpm_decoder_nll(model, x, noise(), n_levels=n_levels, data_range=data_range,
                                                 tables=tb)))
    else:
        p = tb.w / tb.w.sum()
        const = d * float(tb.c.sum())
        for _ in range(t_samples):
            idx = torch.multinomial(p, n, replacement=True, generator=generator)
            kl = counted(ddpm_kl_term(model, x, idx, noise(), tables=tb))
            diffs.append(const + (kl - d * tb.c[idx]) / p[idx])
            recs.append(counted(ddpm_decoder_nll(model, x, noise(), n_levels=n_levels, data_range=data_range,
                                                 tables=tb)))
    rec, diff = torch.stack(recs), torch.stack(diffs)
    nll, se = _mean_se(prior + rec + diff)
    return BoundResult(nll=nll, se=se, prior=prior, recon=rec.mean(0), diffusion=diff.mean(0), nfe=nfe)


# --------------------------------------------------------------------------- continuous time


def time_of_log_snr(process, lam: Tensor) -> Tensor:
    """t ∈ [t_min, 1] with λ(t) = lam, (N,) float64: λ = −2 log σ̃, so t is the process's closed-form
    inverse `t_from_sigma_tilde` at σ̃ = e^{−λ/2} (`sbm.core.processes` eq. 4), clipped to [t_min, 1]."""
    return process.t_from_sigma_tilde(torch.exp(-0.5 * lam.double()))


def log_snr_range(process) -> tuple[float, float]:
    """(λ(1), λ(t_min)): the range of eq. (8)'s integral; ValueError if σ(t_min) = 0 (no decoder)."""
    t = torch.tensor([1.0, float(process.t_min)], dtype=torch.float64)
    if not float(process.sigma(t)[1]) > 0:
        raise ValueError(f"the continuous bound needs σ(t_min) > 0; process.t_min = {process.t_min} gives σ = 0")
    lam = log_snr(process, t)
    return float(lam[0]), float(lam[1])


def diffusion_term(model, x0: Tensor, t: Tensor, eps: Tensor, lam_range: tuple[float, float] | None = None) -> Tensor:
    """The integral of eq. (8) at one draw, per example (N,): ½(λ(t_min) − λ(1)) ‖ε − ε_θ(x_t, t)‖² at
    x_t = α(t) x₀ + σ(t) eps; t (N,) drawn with λ(t) ~ U[λ(1), λ(t_min)]. x0, eps (N, ...)."""
    lam_min, lam_max = lam_range or log_snr_range(model.process)
    x, e, tt = x0.double().cpu(), eps.double().cpu(), t.double().cpu()
    a, s = model.process.marginal(tt)
    xt = bcast(a.double(), x) * x + bcast(s.double(), x) * e
    return 0.5 * (lam_max - lam_min) * _flat_sum((e - _eps(model, xt, tt)) ** 2)


def reconstruction_nll(model, x0: Tensor, eps: Tensor, n_levels: int | None = None,
                       data_range: Sequence[float] = (-1.0, 1.0)) -> Tensor:
    """E_q[−log p(x₀ | y)] of eq. (8) at one draw y = α(t_min) x₀ + σ(t_min) eps, per example (N,): the
    decoder N(x̂₀(y), (σ/α)²) at t_min (discretised when n_levels is set, `decoder_nll`)."""
    x, e = x0.double().cpu(), eps.double().cpu()
    t = torch.full((len(x),), float(model.process.t_min), dtype=torch.float64)
    a, s = model.process.marginal(t)
    y = bcast(a.double(), x) * x + bcast(s.double(), x) * e
    return decoder_nll(x, _x0(model, y, t), (s / a).double(), n_levels, data_range)


def continuous_vlb(model, x0: Tensor, *, t_samples: int = 100, n_levels: int | None = None,
                   data_range: Sequence[float] = (-1.0, 1.0), generator: torch.Generator | None = None,
                   callback: Callable[[int], None] | None = None) -> BoundResult:
    """The bound (8) on −log p_θ(x₀) per example of x0 (N, ...), for a model on a continuous process,
    from t_samples = K ≥ 2 draws of (λ, x_t, y) per example (module docstring). n_levels: quantised
    data (discretised decoder). Noise from `generator`; callback(nfe) after every model evaluation."""
    if t_samples is None or t_samples < 2:
        raise ValueError(f"t_samples = {t_samples}: the continuous bound needs >= 2 draws of t per example")
    x = x0.double().cpu()
    if len(x) == 0:
        raise ValueError("continuous_vlb: empty batch")
    process = model.process
    lam_min, lam_max = log_snr_range(process)
    prior = prior_kl(process, x)
    recs, diffs = [], []
    nfe = 0
    for _ in range(t_samples):
        u = torch.rand(len(x), generator=generator, dtype=torch.float64)
        t = time_of_log_snr(process, lam_min + u * (lam_max - lam_min))
        eps = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        diffs.append(diffusion_term(model, x, t, eps, (lam_min, lam_max)))
        eps0 = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        recs.append(reconstruction_nll(model, x, eps0, n_levels, data_range))
        nfe += 2
        if callback is not None:
            callback(nfe)
    rec, diff = torch.stack(recs), torch.stack(diffs)
    nll, se = _mean_se(prior + rec + diff)
    return BoundResult(nll=nll, se=se, prior=prior, recon=rec.mean(0), diffusion=diff.mean(0), nfe=nfe)


# --------------------------------------------------------------------------- which bound


def _ddpm(model, x0, *, t_samples, variance, **kw) -> BoundResult:
    return ddpm_vlb(model, x0, t_samples=t_samples, variance=variance, **kw)


def _continuous(model, x0, *, t_samples, variance, **kw) -> BoundResult:  # no model variance: the reverse SDE's
    return continuous_vlb(model, x0, t_samples=t_samples, **kw)


#: the bound of each process that has one, by `process.to_config()["name"]`: (kind, estimator)
BOUNDS = {"ddpm": ("ddpm", _ddpm), "vp": ("continuous", _continuous)}


def bound_kind(process) -> str | None:
    """"ddpm" (eq. 1), "continuous" (eq. 8) or None: the variational bound a process has here."""
    entry = BOUNDS.get(process.to_config()["name"])
    return entry[0] if entry else None


def variational_bound(model, x0: Tensor, *, t_samples: int | None, variance: str = "posterior",
                      n_levels: int | None = None, data_range: Sequence[float] = (-1.0, 1.0),
                      generator: torch.Generator | None = None,
                      callback: Callable[[int], None] | None = None) -> BoundResult:
    """The bound of `bound_kind(model.process)` per example of x0 (N, ...): `ddpm_vlb` (t_samples None:
    every t; `variance`) or `continuous_vlb` (t_samples >= 2). ValueError for a process without one."""
    name = model.process.to_config()["name"]
    if name not in BOUNDS:
        raise ValueError(f"process {name!r} has no variational bound here; those that have one: {', '.join(BOUNDS)}")
    return BOUNDS[name][1](model, x0, t_samples=t_samples, variance=variance, n_levels=n_levels,
                           data_range=data_range, generator=generator, callback=callback)
