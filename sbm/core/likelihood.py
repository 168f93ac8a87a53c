"""Log-likelihood along the probability-flow ODE, and bits/dim of quantised data.

Probability-flow ODE (Song et al. 2021, eq. 13 and Appendix D.2). Every process of
`sbm.core.processes` has an SDE dx = f(x, t) dt + g(t) dw whose marginals p_t are also the
marginals of the deterministic flow dx/dt = f̃(x, t), with f̃ the drift v of
`sbm.core.model` eq. (3) (`pf_drift`) and s_θ ≈ ∇ₓ log p_t                        (1)

By the instantaneous change of variables (Chen et al. 2018, FFJORD), along a solution
x_t of (1), d log p_t(x_t)/dt = −div f̃(x_t, t), so integrating from t_min to 1::

    log p_{t_min}(x) = log π(x_1) + ∫_{t_min}^{1} div f̃(x_t, t) dt,   x_{t_min} = x   (2)

with π = N(0, prior_std² I) (`process.prior_logp`) standing in for p_1. x and the
integral Δ = ∫ div f̃ dt are integrated together, forward in t, as one state
[x (N·D), Δ (N)] by scipy's adaptive RK45 (`solve_ivp`, float64, rtol/atol on every
component of the flattened batch). The model is evaluated in its own dtype.

Divergence of f̃ at each evaluation:

- ``exact``: tr ∂f̃/∂x by autograd, one backward pass per dimension (D passes per
  evaluation: for low dimension).
- ``hutchinson``: vᵀ (∂f̃/∂x) v averaged over `n_probes` probes v (Rademacher ±1 or
  standard Gaussian, E[v vᵀ] = I), one backward pass per probe. As in FFJORD the probes
  are drawn once per solve and kept fixed along it: the x trajectory does not depend on
  v, so E_v[∫ vᵀ J v dt] = ∫ tr J dt — the estimate of log p is unbiased per example.

NFE counts evaluations of f̃ on the whole batch (one model forward each).

What the result is, exactly. (2) is the density of the *model's* marginal at t_min
(not at 0) and it uses π in place of p_1. With the exact score the error of `logp` as an
estimate of log p₀(x) is therefore::

    [log p_{t_min}(x) − log p₀(x)] + [log π(x_1) − log p_1(x_1)] + solver error        (3)

The first term is O(σ(t_min)²) (e.g. ½σ²(Δ log p + ‖∇ log p‖²) for α ≈ 1); the second
averages to −KL(p_1 ‖ π) over the data (x_1 ~ p_1), and per example it is, to first order,
−α(1) m·x_1/σ(1)² (m = the data mean): its spread is ≈ α(1)‖m‖/σ(1) nats (VE: ‖m‖/σ_max;
VP: e^{−B(1)/2}‖m‖ ≈ 0.0066 ‖m‖ for β_max = 20) and vanishes for centred data, leaving the
second-order covariance term ≈ α(1)² ‖C‖/(2σ(1)²). `LikelihoodResult.x_T` holds x_1 so
that these terms can be computed when p_1 is known.

Bits/dim of quantised data (the dequantisation and its bound) is `sbm.core.units`'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from sbm.core.model import model_dtype_device, pf_drift
from sbm.core.units import bits_per_dim, dequantize

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


@dataclass
class LikelihoodResult:
    """Per-example log-likelihoods (nats, float64 (N,)) of `ode_log_likelihood`.

    logp = prior_logp + delta_logp (eq. 2); nfe: evaluations of f̃ on the batch;
    x_T: the end point x_1 of the flow (N, ...), the argument of prior_logp."""

    logp: Tensor
    nfe: int
    prior_logp: Tensor
    delta_logp: Tensor
    x_T: Tensor


def draw_probes(shape, n_probes: int, kind: str, generator: torch.Generator | None = None) -> Tensor:
    """n_probes probe vectors per example, (n_probes, N, ...) float64 with E[v vᵀ] = I."""
    if kind == "rademacher":
        return torch.randint(0, 2, (n_probes, *shape), generator=generator).double() * 2 - 1
    if kind == "gaussian":
        return torch.randn((n_probes, *shape), generator=generator, dtype=torch.float64)
    raise ValueError(f"probe = {kind!r}: allowed {', '.join(PROBES)}")


def ode_drift_and_divergence(model, x: Tensor, t: Tensor, *, probes: Tensor | None = None,
                             cond=None) -> tuple[Tensor, Tensor]:
    """f̃(x, t) of eq. (1), shaped like x, and its divergence per example, (N,).

    probes None: exact divergence (one backward pass per dimension); else the Hutchinson
    estimate mean_k v_kᵀ (∂f̃/∂x) v_k over probes (K, N, ...) (one backward pass each)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        drift = pf_drift(model, x, t, cond)
        n = x.shape[0]
        if probes is None:
            flat = drift.reshape(n, -1)
            d = flat.shape[1]
            div = torch.zeros(n, dtype=drift.dtype, device=drift.device)
            for i in range(d):
                (gi,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i < d - 1)
                div = div + gi.reshape(n, -1)[:, i]
        else:
            div = torch.zeros(n, dtype=drift.dtype, device=drift.device)
            k = probes.shape[0]
            for j in range(k):
                v = probes[j].to(drift)
                (gv,) = torch.autograd.grad((drift * v).sum(), x, retain_graph=j < k - 1)
                div = div + (gv * v).reshape(n, -1).sum(1)
            div = div / k
    return drift.detach(), div.detach()


def ode_log_likelihood(model, x: Tensor, *, divergence: str = "exact", probe: str = "rademacher",
                       n_probes: int = 1, rtol: float = 1e-5, atol: float = 1e-5, cond=None,
                       generator: torch.Generator | None = None,
                       callback: Callable[[float, int], None] | None = None) -> LikelihoodResult:
    """log p_{t_min}(x) of eq. (2) per example of x (N, ...), in nats.

    model: anything with `.score(x, t, cond)` and `.process` (ScoreModel, AnalyticScoreModel,
    guidance wrappers). divergence: exact | hutchinson (probes from `generator`, fixed along
    the solve). rtol/atol: of RK45 on the float64 state. callback(t, nfe) after every
    evaluation (progress). Raises RuntimeError if the solver fails."""
    from scipy.integrate import solve_ivp

    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence = {divergence!r}: allowed {', '.join(DIVERGENCES)}")
    if n_probes < 1:
        raise ValueError(f"n_probes = {n_probes}: must be >= 1")
    if x.shape[0] == 0:
        raise ValueError("ode_log_likelihood: empty batch")
    process = model.process
    dtype, device = model_dtype_device(model)
    shape, n = tuple(x.shape), x.shape[0]
    size = x[0].numel()
    probes = draw_probes(shape, n_probes, probe, generator) if divergence == "hutchinson" else None
    if probes is not None:
        probes = probes.to(device=device, dtype=dtype)
    t0, t1 = float(process.t_min), 1.0
    nfe = 0

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal nfe
        xt = torch.from_numpy(y[: n * size]).reshape(shape).to(device=device, dtype=dtype)
        tt = torch.full((n,), t, dtype=dtype, device=device)
        drift, div = ode_drift_and_divergence(model, xt, tt, probes=probes, cond=cond)
        nfe += 1
        if callback is not None:
            callback(t, nfe)
        out = np.empty_like(y)
        out[: n * size] = drift.reshape(-1).double().cpu().numpy()
        out[n * size:] = div.double().cpu().numpy()
        return out

    y0 = np.concatenate([x.detach().reshape(-1).double().cpu().numpy(), np.zeros(n)])
    sol = solve_ivp(fun, (t0, t1), y0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"ode_log_likelihood: the ODE solver failed at t = {sol.t[-1]:.4g}: {sol.message}")
    y1 = torch.from_numpy(sol.y[:, -1].copy())
    x_T = y1[: n * size].reshape(shape)
    delta = y1[n * size:]
    prior = process.prior_logp(x_T).double()
    return LikelihoodResult(logp=prior + delta, nfe=nfe, prior_logp=prior, delta_logp=delta, x_T=x_T)


# --------------------------------------------------------------------------- quantised data


# --------------------------------------------------------------------------- a data set


def dataset_nll(model, x: Tensor, *, batch_size: int, divergence: str = "exact", probe: str = "rademacher",
                n_probes: int = 1, rtol: float = 1e-5, atol: float = 1e-5, n_levels: int | None = None,
                data_range: Sequence[float] | None = None, generator: torch.Generator | None = None,
                progress: bool = False) -> tuple[dict, Tensor]:
    """NLL of every point of x (N, ...) in batches of `batch_size` -> (summary, logp (N,) nats).

    n_levels set: x is quantised; it is dequantised first (`dequantize`, draws from
    `generator` before any probe) and the summary holds `bpd` (eq. 5); otherwise `nll`
    (mean nats per example). Both: `nll_nfe` (mean NFE per batch), `nll_batches`, `n`.
    Batches are drawn from one `generator`, so the result is deterministic given it."""
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: must be >= 1")
    quantised = n_levels is not None
    rng = tuple(data_range) if data_range is not None else (-1.0, 1.0)
    points = dequantize(x, n_levels, rng, generator) if quantised else x
    dim = x[0].numel()
    logps, nfes = [], []
    batches = list(range(0, len(points), batch_size))
    t_min = float(model.process.t_min)
    with tqdm(total=len(batches) * 1000, desc="evaluate: ODE likelihood", disable=not progress,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}") as bar:
        for b, start in enumerate(batches):
            base = b * 1000

            def cb(t, nfe, base=base):
                done = base + int(1000 * (t - t_min) / (1 - t_min))
                if done > bar.n:
                    bar.update(done - bar.n)
                bar.set_postfix_str(f"batch {b + 1}/{len(batches)}, t {t:.3f}, nfe {nfe}", refresh=False)

            res = ode_log_likelihood(model, points[start:start + batch_size], divergence=divergence, probe=probe,
                                     n_probes=n_probes, rtol=rtol, atol=atol, generator=generator,
                                     callback=cb if progress else None)
            logps.append(res.logp)
            nfes.append(res.nfe)
    logp = torch.cat(logps)
    summary: dict = {"n": len(logp), "nll_nfe": sum(nfes) / len(nfes), "nll_batches": len(nfes)}
    if quantised:
        summary["bpd"] = float(bits_per_dim(-logp, dim, n_levels, rng).mean())
    else:
        summary["nll"] = float(-logp.mean())
    return summary, logp


