"""Score-matching objectives as callables `loss(model, x0, cond) -> (N,)`, one value per example.

All objectives train one noise-conditional model s_θ(x, t) across the levels of its
process: t ~ process.sample_t, x̃ = α(t) x₀ + σ(t) ε, and each level is weighted by
λ(t) = σ(t)² (`sigma2`, NCSN: every level contributes on the same scale) or
λ(t) = g(t)² (`likelihood`, Song et al. 2021b: the weighted DSM then bounds the negative
log-likelihood). Formulas below are written for λ = σ²; with another λ each is multiplied
by λ(t)/σ(t)². The training loop reduces.

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

from sbm.config.params import LOSSES, ObjectiveParams
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


def _noised(model, x0: Tensor):
    t = model.process.sample_t(x0.shape[0], device=x0.device)
    eps = torch.randn_like(x0)
    return t, eps, model.process.perturb(x0, t, eps)


def relative_weight(process, t: Tensor, weighting: str) -> Tensor:
    """λ(t)/σ(t)², the factor that turns the σ²-weighted formulas into weighting λ, (N,)."""
    if weighting == "sigma2":
        return torch.ones_like(t)
    if weighting == "likelihood":
        g = process.sde(t[:, None], t)[1]
        return g**2 / process.sigma(t) ** 2
    raise ConfigError(f"objective.weighting = {weighting!r}: allowed sigma2, likelihood")


def dsm_loss(model, x0: Tensor, cond=None, *, weighting: str = "sigma2") -> Tensor:
    """Denoising score matching across levels, eq. (1), -> (N,)."""
    t, eps, xt = _noised(model, x0)
    value = dsm_objective(model.score(xt, t, cond), eps, model.process.sigma(t))
    return relative_weight(model.process, t, weighting) * value


def eps_loss(model, x0: Tensor, cond=None, *, weighting: str = "sigma2") -> Tensor:
    """ε-prediction across levels, eq. (2), -> (N,)."""
    t, eps, xt = _noised(model, x0)
    value = (eps - model.eps(xt, t, cond)).flatten(1).pow(2).sum(1)
    return relative_weight(model.process, t, weighting) * value


def make_level_loss(objective: Callable, *, weighting: str = "sigma2", **kwargs) -> LossFn:
    """Apply a fixed-level objective (esm/ssm) to x̃ ~ p_t at sampled levels, weighted λ(t)."""

    def loss(model, x0: Tensor, cond=None) -> Tensor:
        t, _, xt = _noised(model, x0)
        value = objective(lambda x: model.score(x, t, cond), xt, **kwargs)
        return model.process.sigma(t) ** 2 * relative_weight(model.process, t, weighting) * value

    return loss


def build_loss(name: str, cfg: ObjectiveParams, data_dim: int) -> LossFn:
    """The loss named by params `loss`, configured by `objective`; data_dim = numel per example."""
    if name == "dsm":
        return partial(dsm_loss, weighting=cfg.weighting)
    if name == "eps":
        return partial(eps_loss, weighting=cfg.weighting)
    if name == "esm":
        if data_dim > cfg.esm_max_dim:
            raise ConfigError(
                f"loss = 'esm' needs the exact Jacobian trace (one backward pass per dimension), but the "
                f"data has {data_dim} dimensions > objective.esm_max_dim = {cfg.esm_max_dim}; "
                "use ssm, ssm_vr, dsm or eps, or raise objective.esm_max_dim"
            )
        return make_level_loss(esm_objective, weighting=cfg.weighting)
    if name in ("ssm", "ssm_vr"):
        return make_level_loss(
            ssm_objective,
            weighting=cfg.weighting,
            n_projections=cfg.n_projections,
            projection=cfg.projection,
            variance_reduced=name == "ssm_vr",
        )
    raise ConfigError(f"loss = {name!r}: unknown; allowed: {', '.join(LOSSES)}")
