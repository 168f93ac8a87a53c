"""Sampling time grids, as pure functions: the K decreasing times t_0 = 1 > … > t_{K−1} = t_min a sampler visits.

A grid is chosen in the noise scale a solver cares about and mapped back to t through the
process. With every process's marginals x_t = α(t) x₀ + σ(t) ε (`sbm.core.processes`) write::

    σ̃(t) = σ(t) / α(t),      λ(t) = log(α(t)² / σ(t)²) = −2 log σ̃(t)                   (1)

σ̃ is the σ of the variance-exploding form x_t / α = x₀ + σ̃ ε (Karras et al. 2022, §2: the σ of
their ODE), λ the log signal-to-noise ratio (Kingma et al. 2021). Both are monotone in t. The
grids (`SCHEDULES`, picked by `sampler.schedule`; K = `sampler.steps`, or for None the length of
the process's native grid):

- ``uniform``: ``process.grid(K)``, the process's own discretisation — uniform in t for the
  continuous SDEs, the L levels of the NCSN ladder, DDPM's evenly spaced step indices.
- ``karras`` (Karras et al. 2022, eq. 5, ρ = 7)::

      σ̃_i = (σ̃_max^{1/ρ} + i/(K−1) (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ,   i = 0 … K−1             (2)

  with σ̃_max = σ̃(1), σ̃_min = σ̃(t_min), and t_i = σ̃⁻¹(σ̃_i).
- ``logsnr``: equal steps in λ (Lu et al. 2022, DPM-Solver's "logSNR" spacing)::

      λ_i = λ(1) + i/(K−1) (λ(t_min) − λ(1)),   t_i = σ̃⁻¹(e^{−λ_i / 2})                       (3)

Each grid is float32 (as `process.grid`), starts at exactly t = 1 and ends at exactly t_min.

The inverse t = σ̃⁻¹(σ̃) (`time_of_sigma`), one closed form per process (dispatched on the
process's class, as the formula belongs to its marginal)::

    VE, NCSN ladder   σ̃ = σ_min (σ_max/σ_min)^t          t = log(σ̃/σ_min) / log(σ_max/σ_min)
    VP                σ̃² = e^{B(t)} − 1                  B = log(1 + σ̃²)
    sub-VP            σ̃ = e^{B/2} − e^{−B/2} = 2 sinh(B/2)  B = 2 asinh(σ̃/2)                 (4)
    (VP, sub-VP)      B(t) = β_min t + ½ (β_max − β_min) t²  t = 2B / (β_min + √(β_min² + 2 (β_max − β_min) B))
    DDPM              σ̃_k = √((1 − ᾱ_k)/ᾱ_k)              t = (k + 1)/N, k the index nearest in log σ̃

A DDPM grid of K ≤ N points has distinct indices: where two grid points round to the same
index, the lower ones are moved down one index at a time (`distinct_levels`), so that every
step of a sampler moves; K > N distinct levels do not exist (a ConfigError).
"""

from __future__ import annotations

import math
from functools import singledispatch
from typing import Callable

import torch
from torch import Tensor

from sbm.core.processes import VESDE, VPSDE, DDPMSchedule, NoiseProcess, SubVPSDE
from sbm.errors import ConfigError

#: Karras et al. (2022)'s ρ in eq. (2)
RHO = 7.0


def sigma_tilde(process: NoiseProcess, t: Tensor) -> Tensor:
    """σ̃(t) = σ(t)/α(t) of eq. (1) in float64; t (N,) -> (N,)."""
    a, s = process.marginal(torch.as_tensor(t).double().reshape(-1))
    return s / a


def log_snr(process: NoiseProcess, t: Tensor) -> Tensor:
    """λ(t) = log(α²/σ²) of eq. (1) in float64 (+inf where σ = 0); t (N,) -> (N,)."""
    return -2 * torch.log(sigma_tilde(process, t))


# ---------------------------------------------------------------- the inverse σ̃ -> t, eq. (4)


@singledispatch
def time_of_sigma(process: NoiseProcess, sigma: Tensor) -> Tensor:
    """t = σ̃⁻¹(σ̃) of eq. (4), float64; sigma (N,) -> (N,). Not clamped to [t_min, 1]: a σ̃ above
    σ̃(1) gives t > 1 (DDPM: the nearest of its N levels, so always within them)."""
    raise TypeError(f"time_of_sigma: no σ̃ -> t inverse for a {type(process).__name__} process")


@time_of_sigma.register
def _(process: VESDE, sigma: Tensor) -> Tensor:
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return torch.log(sigma / process.sigma_min) / math.log(process.sigma_max / process.sigma_min)


def _time_of_integral(process: VPSDE, b: Tensor) -> Tensor:
    """The root t ≥ 0 of B(t) = β_min t + ½ (β_max − β_min) t² = b, in the cancellation-free form of eq. (4)."""
    slope = process.beta_max - process.beta_min
    return 2 * b / (process.beta_min + torch.sqrt(process.beta_min**2 + 2 * slope * b))


@time_of_sigma.register
def _(process: VPSDE, sigma: Tensor) -> Tensor:
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return _time_of_integral(process, torch.log1p(sigma**2))


@time_of_sigma.register
def _(process: SubVPSDE, sigma: Tensor) -> Tensor:
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return _time_of_integral(process, 2 * torch.asinh(sigma / 2))


def _ddpm_log_sigmas(process: DDPMSchedule) -> Tensor:
    """log σ̃_k of every DDPM level k = 0 … N−1, float64, increasing."""
    ab = process.alphas_cumprod
    return 0.5 * (torch.log1p(-ab) - torch.log(ab))


@time_of_sigma.register
def _(process: DDPMSchedule, sigma: Tensor) -> Tensor:
    log_sigma = torch.log(torch.as_tensor(sigma, dtype=torch.float64).reshape(-1))
    k = (_ddpm_log_sigmas(process)[None, :] - log_sigma[:, None]).abs().argmin(1)
    return process.time(k).double()


@singledispatch
def distinct_levels(process: NoiseProcess, t: Tensor) -> Tensor:
    """A decreasing grid t (K,) with no two equal times. The continuous processes' inverses are
    strictly monotone, so their grids already are: returned as is."""
    return t


@distinct_levels.register
def _(process: DDPMSchedule, t: Tensor) -> Tensor:
    """DDPM: indices k_0 ≥ … ≥ k_{K−1} made strictly decreasing within [0, N−1] — a pass from the
    bottom lifts each k_j to at least k_{j+1} + 1, a pass from the top caps it at k_{j−1} − 1."""
    if len(t) > process.n:
        raise ConfigError(f"sampler.steps = {len(t)}: a karras/logsnr grid of a DDPM process has at most its "
                          f"N = {process.n} distinct levels")
    k = process.index(t).tolist()
    for j in range(len(k) - 2, -1, -1):
        k[j] = max(k[j], k[j + 1] + 1)
    k[0] = min(k[0], process.n - 1)
    for j in range(1, len(k)):
        k[j] = min(k[j], k[j - 1] - 1)
    return process.time(torch.tensor(k)).double()


# ---------------------------------------------------------------- the grids


def _levels(process: NoiseProcess, n: int | None) -> int:
    """K: n, or the length of the process's native grid for None."""
    k = len(process.grid()) if n is None else int(n)
    if k < 1:
        raise ConfigError(f"sampler.steps = {n}: a grid needs at least one time")
    return k


def _from_sigmas(process: NoiseProcess, sigmas: Tensor) -> Tensor:
    """The grid of times at the decreasing σ̃ values `sigmas` (K,): eq. (4), the end points set to
    exactly 1 and t_min, distinct levels; float32."""
    t = time_of_sigma(process, sigmas)
    t[0], t[-1] = 1.0, process.t_min
    return distinct_levels(process, t).float()


def uniform(process: NoiseProcess, n: int | None = None) -> Tensor:
    """The process's own grid, `process.grid(n)`: K decreasing times 1 -> t_min, (K,)."""
    return process.grid(n)


def karras(process: NoiseProcess, n: int | None = None, rho: float = RHO) -> Tensor:
    """Eq. (2): K times whose σ̃ are spaced evenly in σ̃^{1/ρ} from σ̃(1) to σ̃(t_min), (K,)."""
    k = _levels(process, n)
    if k == 1:
        return torch.ones(1)
    top, bottom = sigma_tilde(process, torch.tensor([1.0, process.t_min])).tolist()
    ramp = torch.arange(k, dtype=torch.float64) / (k - 1)
    sigmas = (top ** (1 / rho) + ramp * (bottom ** (1 / rho) - top ** (1 / rho))) ** rho
    return _from_sigmas(process, sigmas)


def logsnr(process: NoiseProcess, n: int | None = None) -> Tensor:
    """Eq. (3): K times evenly spaced in λ = log(α²/σ²) from λ(1) to λ(t_min), (K,)."""
    k = _levels(process, n)
    if k == 1:
        return torch.ones(1)
    top, bottom = log_snr(process, torch.tensor([1.0, process.t_min])).tolist()
    if not math.isfinite(bottom):
        raise ConfigError(f"sampler.schedule = 'logsnr': σ(t_min) = 0 at process.t_min = {process.t_min}, so "
                          "λ(t_min) = +∞; use a process.t_min > 0 (or the karras / uniform grid)")
    lam = torch.linspace(top, bottom, k, dtype=torch.float64)
    return _from_sigmas(process, torch.exp(-lam / 2))


#: `sampler.schedule` -> ``grid(process, K or None) -> (K,)`` (the names of `sbm.config.params.SCHEDULES`)
SCHEDULES: dict[str, Callable[[NoiseProcess, int | None], Tensor]] = {
    "uniform": uniform,
    "karras": karras,
    "logsnr": logsnr,
}
