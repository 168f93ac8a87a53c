"""Score-matching objectives as callables `loss(model, x0, cond) -> (N,)`, one value per example.

All objectives train one noise-conditional model s_θ(x, t) across the levels of its
process: t drawn by `sample_levels`, x̃ = α(t) x₀ + σ(t) ε, and each level is weighted by
λ(t) (`objective.weighting`). Formulas below are written for λ = σ²; with another λ each is
multiplied by λ(t)/σ(t)² (`relative_weight`), which is also the weight on the ε-MSE (2).
With σ̃ = σ/α and SNR = α²/σ² = 1/σ̃² (`sbm.core.processes` eq. 3), λ(t)/σ(t)² is::

    sigma2      1                     (NCSN: every level contributes on the same scale)
    likelihood  g(t)²/σ(t)²           (Song et al. 2021b: the weighted DSM bounds the NLL)
    edm         (σ̃² + σ_d²)/σ_d²      (Karras et al. 2022, Table 1)                            (6)
    min_snr     min(SNR, γ)/SNR       (Hang et al. 2023, ε-prediction form)                    (7)

(6): EDM's loss is λ_edm(σ̃) ‖D − x₀‖² with λ_edm = (σ̃² + σ_d²)/(σ̃ σ_d)² = 1/c_out² (D = x̂₀ of
`sbm.core.model` eq. 4, σ_d = the model's data_std). Since x̂₀ − x₀ = −σ̃ (ε_θ − ε), it is
λ_edm σ̃² ‖ε_θ − ε‖² = (6) × (2) exactly, and 2 × (6) × (1). (7): min-SNR-γ clips the weight
min(SNR, γ) that the ε-MSE puts on ‖x̂₀ − x₀‖² (SNR·‖x̂₀ − x₀‖² = ‖ε_θ − ε‖²) at γ.

Levels (`objective.t_sampling`): uniform — the process's own `sample_t` (t ~ U[t_min, 1]; ncsn and
ddpm: a uniform level); lognormal — EDM's ln σ̃ ~ N(P_mean, P_std²) mapped to t
(`sbm.core.processes.lognormal_t`); importance — t drawn with density q(t) ∝ g(t)²/σ(t)² and each
example reweighted by u/q (u = 1/(1 − t_min), the uniform density), so that the objective's
expectation is the uniform one's, eq. (8) (`importance_t`). With weighting likelihood the weight
λ/σ² × u/q is a constant: the importance-sampled likelihood-weighted DSM of Song et al. (2021b,
"Maximum likelihood training of score-based diffusion models"), whose variance is far lower than
uniform t's on VP/sub-VP, where g²/σ² ≈ 1/t spans four decades. Since g² = dσ²/dt − 2σ² d log α/dt
(the variance rate of the linear SDE), g²/σ² = d log σ̃²/dt for every process, so q is uniform in
log σ̃ (in log-SNR; Kingma et al. 2021)::

    log σ̃ ~ U[log σ̃(t_min), log σ̃(1)],  t = σ̃⁻¹(σ̃),  u/q = Z / ((1 − t_min) g²/σ²),  Z = log(σ̃(1)²/σ̃(t_min)²)   (8)

On VE g²/σ² = 2 log(σ_max/σ_min) is constant, so q is uniform and likelihood = 2 log(σ_max/σ_min) ×
sigma2. (8) is exact on the continuous processes (ve, vp, subvp); ncsn and ddpm map the draw to the
nearest level, as lognormal does, which only approximates their uniform level distribution.
The training loop reduces.

- dsm (Vincent 2011), per level::          ½ σ² ‖s_θ(x̃, t) + (x̃ − α x₀)/σ²‖² = ½ ‖σ s_θ + ε‖²     (1)
- eps (Ho et al. 2020)::                  ‖ε − ε_θ(x̃, t)‖²,  ε_θ = −σ s_θ   (= 2 × (1))         (2)
- esm (Hyvärinen 2005), on x̃ at level t:: σ² [½ ‖s_θ(x̃)‖² + tr ∇ₓ s_θ(x̃)]   (exact trace)       (3)
- ssm (Song et al. 2019)::                σ² [vᵀ ∇ₓ(vᵀ s_θ) + ½ (vᵀ s_θ)²],  v Rademacher/Gaussian   (4)
- ssm_vr::                                σ² [vᵀ ∇ₓ(vᵀ s_θ) + ½ ‖s_θ‖²]                             (5)

(3)–(5) on samples of p_t learn ∇ log p_t, as (1) does; E_v[(4)] = E_v[(5)] = (3) since
E[v vᵀ] = I. (3) costs one backward pass per dimension, so it is refused above
`objective.esm_max_dim`.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import Tensor

from sbm.config.params import LOSS_WEIGHTINGS, LOSSES, T_SAMPLINGS, ObjectiveParams
from sbm.core.processes import lognormal_t
from sbm.core.tensor import bcast
from sbm.errors import ConfigError

LossFn = Callable[..., Tensor]


# ---------------------------------------------------------------- objectives at a fixed level


def esm_objective(score_fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """½‖s(x)‖² + tr ∇ₓ s(x) per example, eq. (3) unweighted; x: (N, ...), -> (N,)."""
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    flat_s = s.flatten(1)
    trace = torch.zeros(x.shape[0], dtype=s.dtype, device=x.device)
    for d in range(flat_s.shape[1]):
        (g,) = torch.autograd.grad(flat_s[:, d].sum(), x, create_graph=True)
        trace = trace + g.flatten(1)[:, d]
    return 0.5 * flat_s.pow(2).sum(1) + trace


def projections(shape, kind: str, n: int, *, like: Tensor) -> Tensor:
    """n projection vectors per example, (n, N, ...), with E[v vᵀ] = I."""
    if kind == "rademacher":
        return torch.randint(0, 2, (n, *shape), device=like.device).to(like.dtype) * 2 - 1
    if kind == "gaussian":
        return torch.randn((n, *shape), device=like.device, dtype=like.dtype)
    raise ValueError(f"objective.projection = {kind!r}: allowed rademacher, gaussian")


def ssm_objective(
    score_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    n_projections: int = 1,
    projection: str = "rademacher",
    variance_reduced: bool = False,
) -> Tensor:
    """Sliced score matching, eq. (4) (or (5) with variance_reduced), unweighted, -> (N,).

    Averages over `n_projections` draws of v per example."""
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    vs = projections(x.shape, projection, n_projections, like=x)
    total = torch.zeros(x.shape[0], dtype=s.dtype, device=x.device)
    for v in vs:
        sv = (v * s).flatten(1).sum(1)  # vᵀ s, (N,)
        (g,) = torch.autograd.grad(sv.sum(), x, create_graph=True)  # ∇ₓ(vᵀ s)
        first = (v * g).flatten(1).sum(1)
        second = 0.5 * s.flatten(1).pow(2).sum(1) if variance_reduced else 0.5 * sv.pow(2)
        total = total + first + second
    return total / n_projections


def dsm_objective(score: Tensor, eps: Tensor, sigma: Tensor) -> Tensor:
    """½‖σ s + ε‖² per example, eq. (1); score, eps: (N, ...), sigma: (N,)."""
    return 0.5 * (bcast(sigma, score) * score + eps).flatten(1).pow(2).sum(1)


# ---------------------------------------------------------------- multi-level losses


#: the objective settings a loss uses when none are given (params.yaml's defaults)
DEFAULT_OBJECTIVE = ObjectiveParams()


def sample_levels(process, n: int, cfg: ObjectiveParams = DEFAULT_OBJECTIVE, *,
                  generator: torch.Generator | None = None, device=None) -> Tensor:
    """Training times (n,) drawn as `cfg.t_sampling` says: uniform = `process.sample_t`;
    lognormal = ln σ̃ ~ N(cfg.p_mean, cfg.p_std²) mapped to t (`sbm.core.processes.lognormal_t`);
    importance = q(t) ∝ g²/σ² of eq. (8) (`importance_t`; `level_weight` applies its weight u/q)."""
    if cfg.t_sampling == "uniform":
        return process.sample_t(n, generator=generator, device=device)
    if cfg.t_sampling == "lognormal":
        return lognormal_t(process, n, cfg.p_mean, cfg.p_std, generator=generator, device=device)
    if cfg.t_sampling == "importance":
        return importance_t(process, n, generator=generator, device=device)
    raise ConfigError(f"objective.t_sampling = {cfg.t_sampling!r}: allowed {', '.join(T_SAMPLINGS)}")


def _log_sigma_tilde_range(process) -> tuple[float, float]:
    """(log σ̃(t_min), log σ̃(1)) in float64: the support of eq. (8)'s log σ̃."""
    t = torch.tensor([process.t_min, 1.0], dtype=torch.float64)
    lo, hi = process.sigma_tilde(t).log().tolist()
    return lo, hi


def importance_t(process, n: int, *, generator: torch.Generator | None = None, device=None) -> Tensor:
    """n training times (n,) with density q(t) ∝ g(t)²/σ(t)² on [t_min, 1], eq. (8): log σ̃ uniform
    between log σ̃(t_min) and log σ̃(1), mapped to t by `process.t_from_sigma_tilde` (clipped; ncsn and
    ddpm: the nearest level). In the default dtype."""
    lo, hi = _log_sigma_tilde_range(process)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    t = process.t_from_sigma_tilde(torch.exp(lo + (hi - lo) * u))
    return t.to(device=device, dtype=torch.get_default_dtype())


def importance_weight(process, t: Tensor) -> Tensor:
    """u(t)/q(t) = Z / ((1 − t_min) g²/σ²) of eq. (8) at t (N,) -> (N,): the factor that makes an
    average over `importance_t` draws estimate the average over t ~ U[t_min, 1]."""
    lo, hi = _log_sigma_tilde_range(process)
    return 2 * (hi - lo) / ((1 - process.t_min) * relative_weight(process, t, "likelihood"))


def _noised(model, x0: Tensor, cfg: ObjectiveParams):
    t = sample_levels(model.process, x0.shape[0], cfg, device=x0.device)
    eps = torch.randn_like(x0)
    return t, eps, model.process.perturb(x0, t, eps)


def relative_weight(process, t: Tensor, weighting: str, *, snr_gamma: float = 5.0,
                    data_std: float | None = None) -> Tensor:
    """λ(t)/σ(t)² of the module docstring's table, the factor that turns the σ²-weighted formulas
    into weighting λ (and the weight on the ε-MSE), t (N,) -> (N,). snr_gamma: γ of min_snr;
    data_std: σ_d of edm (the model's `data_std`)."""
    if weighting == "sigma2":
        return torch.ones_like(t)
    if weighting == "likelihood":
        g = process.sde(t[:, None], t)[1]
        return g**2 / process.sigma(t) ** 2
    if weighting == "edm":
        if data_std is None or not data_std > 0:
            raise ConfigError(f"objective.weighting = 'edm' needs the model's data_std = σ_d > 0 (the data's "
                              f"standard deviation), got {data_std}")
        return (process.sigma_tilde(t) ** 2 + data_std**2) / data_std**2
    if weighting == "min_snr":
        if not snr_gamma > 0:
            raise ConfigError(f"objective.snr_gamma = {snr_gamma}: must be > 0 for weighting 'min_snr'")
        return (snr_gamma * process.sigma_tilde(t) ** 2).clamp(max=1.0)  # = min(SNR, γ)/SNR, SNR = 1/σ̃²
    raise ConfigError(f"objective.weighting = {weighting!r}: allowed {', '.join(LOSS_WEIGHTINGS)}")


def level_weight(model, t: Tensor, cfg: ObjectiveParams = DEFAULT_OBJECTIVE) -> Tensor:
    """`relative_weight` of `cfg.weighting` at t (N,) for `model` (its process; edm: its data_std),
    times `importance_weight` when the levels were drawn by t_sampling importance (eq. 8)."""
    w = relative_weight(model.process, t, cfg.weighting, snr_gamma=cfg.snr_gamma,
                        data_std=getattr(model, "data_std", None))
    return w * importance_weight(model.process, t) if cfg.t_sampling == "importance" else w


def dsm_loss(model, x0: Tensor, cond=None, *, cfg: ObjectiveParams = DEFAULT_OBJECTIVE) -> Tensor:
    """Denoising score matching across levels, eq. (1) weighted and drawn as `cfg` says, -> (N,)."""
    t, eps, xt = _noised(model, x0, cfg)
    value = dsm_objective(model.score(xt, t, cond), eps, model.process.sigma(t))
    return level_weight(model, t, cfg) * value


def eps_loss(model, x0: Tensor, cond=None, *, cfg: ObjectiveParams = DEFAULT_OBJECTIVE) -> Tensor:
    """ε-prediction across levels, eq. (2) weighted and drawn as `cfg` says, -> (N,)."""
    t, eps, xt = _noised(model, x0, cfg)
    value = (eps - model.eps(xt, t, cond)).flatten(1).pow(2).sum(1)
    return level_weight(model, t, cfg) * value


def make_level_loss(objective: Callable, *, cfg: ObjectiveParams = DEFAULT_OBJECTIVE, **kwargs) -> LossFn:
    """Apply a fixed-level objective (esm/ssm) to x̃ ~ p_t at levels drawn and weighted as `cfg` says."""

    def loss(model, x0: Tensor, cond=None) -> Tensor:
        t, _, xt = _noised(model, x0, cfg)
        value = objective(lambda x: model.score(x, t, cond), xt, **kwargs)
        return model.process.sigma(t) ** 2 * level_weight(model, t, cfg) * value

    return loss


def build_loss(name: str, cfg: ObjectiveParams, data_dim: int) -> LossFn:
    """The loss named by params `loss`, configured by `objective`; data_dim = numel per example."""
    if name == "dsm":
        return partial(dsm_loss, cfg=cfg)
    if name == "eps":
        return partial(eps_loss, cfg=cfg)
    if name == "esm":
        if data_dim > cfg.esm_max_dim:
            raise ConfigError(
                f"loss = 'esm' needs the exact Jacobian trace (one backward pass per dimension), but the "
                f"data has {data_dim} dimensions > objective.esm_max_dim = {cfg.esm_max_dim}; "
                "use ssm, ssm_vr, dsm or eps, or raise objective.esm_max_dim"
            )
        return make_level_loss(esm_objective, cfg=cfg)
    if name in ("ssm", "ssm_vr"):
        return make_level_loss(
            ssm_objective,
            cfg=cfg,
            n_projections=cfg.n_projections,
            projection=cfg.projection,
            variance_reduced=name == "ssm_vr",
        )
    raise ConfigError(f"loss = {name!r}: unknown; allowed: {', '.join(LOSSES)}")
