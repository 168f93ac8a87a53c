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

  with σ̃_max = σ̃(1), σ̃_min = σ̃(t_min), and t_i = σ̃⁻¹(σ̃_i) (the process's inverse, below).
- ``logsnr``: equal steps in λ (Lu et al. 2022, DPM-Solver's "logSNR" spacing)::

      λ_i = λ(1) + i/(K−1) (λ(t_min) − λ(1)),   t_i = σ̃⁻¹(e^{−λ_i / 2})                       (3)

Each grid is float32 (as `process.grid`), starts at exactly t = 1 and ends at exactly t_min.

The inverse t = σ̃⁻¹(σ̃) is the process's own closed form, ``process.t_from_sigma_tilde(σ̃,
clip=False)`` (`sbm.core.processes` eq. 4), unclipped: the end points are set to exactly 1 and
t_min afterwards. For the NCSN ladder that is the VE time, not its nearest level: the karras and
log-SNR grids of a ladder are continuous like VE's (as its ``uniform`` grid of K ≠ L points is),
so K may exceed L and every point stays distinct; a ladder network trained on its L levels is then
evaluated between them, at the t its conditioning interpolates (affine in log σ). DDPM's inverse
is its nearest level (its marginal exists nowhere else).

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

from sbm.core.processes import DDPMSchedule, NoiseProcess
from sbm.errors import ConfigError

#: Karras et al. (2022)'s ρ in eq. (2)
RHO = 7.0


def sigma_tilde(process: NoiseProcess, t: Tensor) -> Tensor:
    """σ̃(t) = σ(t)/α(t) of eq. (1) in float64; t (N,) -> (N,)."""
    return process.sigma_tilde(torch.as_tensor(t).double().reshape(-1))


def log_snr(process: NoiseProcess, t: Tensor) -> Tensor:
    """λ(t) = log(α²/σ²) of eq. (1) in float64 (+inf where σ = 0); t (N,) -> (N,)."""
    return -2 * torch.log(sigma_tilde(process, t))


# ---------------------------------------------------------------- distinct levels


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
    """The grid of times at the decreasing σ̃ values `sigmas` (K,) float64: the process's unclipped
    inverse (`sbm.core.processes` eq. 4), the end points set to exactly 1 and t_min, distinct levels; float32."""
    t = process.t_from_sigma_tilde(sigmas, clip=False)
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
