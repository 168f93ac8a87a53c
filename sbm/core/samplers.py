"""Samplers: one update rule each, one shared loop.

Every sampler is a function ``sample(model, x_T, schedule, *, cond, callback, generator,
progress)`` returning a `SampleOutput`. `model` is anything with ``score/eps/x0(x, t, cond)``
and ``.process`` (a `ScoreModel`, an analytic score, or a guidance wrapper): samplers know
nothing of guidance or latents, and nothing of the kind of process either — every rule is
written with the process's ``marginal(t) -> (α_t, σ_t)`` and ``sde(x, t) -> (f, g)`` only.
`schedule` is a decreasing tensor of K times t_0 = 1 > … > t_{K−1} = t_min (`schedule_for`: the grid
`sampler.schedule` of `sbm.core.schedules` — uniform, Karras ρ = 7 or log-SNR — picked in that one place).

**The loop** (`run_loop`) visits the K levels in order; after level i the state is a sample
at time t_i and ``callback(i, t_i, x)`` is called. A *step rule* maps x at t to x at s < t;
as a level update it moves t_{i−1} → t_i, so level 0 leaves x_T alone and a K-point
schedule takes K − 1 steps. Nothing steps beyond t_{K−1} = t_min: the optional final
denoise (Tweedie's formula, eq. 2) takes x from t_min to x̂₀ — for DDPM it is exactly Ho
et al.'s last step x_1 → x_0, which is noise-free.

With x_t = α_t x₀ + σ_t ε, write for s < t (the transition kernel of the process)::

    α_{t|s} = α_t / α_s,  σ²_{t|s} = σ_t² − α²_{t|s} σ_s²,  x_t | x_s ~ N(α_{t|s} x_s, σ²_{t|s} I)   (0)

Langevin dynamics (Welling & Teh 2011; Song & Ermon 2019, Alg. 1), at level t_i::

    x ← x + (αᵢ / 2) s_θ(x, tᵢ) + √αᵢ z,   z ~ N(0, I),   αᵢ = ε · σᵢ² / σ_L²        (1)

run for T steps per level over a decreasing ladder σ₁ > … > σ_L (annealed) or over the
single smallest level σ_L (plain Langevin MCMC, αᵢ = ε). The optional final denoise is
Tweedie's formula x̂₀ = (x + σ² s_θ(x, t)) / α = model.x0(x, t) at the last level   (2)
(Efron 2011; Jolicoeur-Martineau et al. 2020).

Step rules from t to s (Δt = t − s > 0, z ~ N(0, I), s_θ = model.score(x, t)):

- Euler–Maruyama on the reverse SDE dx = [f − g² ∇log p_t] dt + g dw̄ (Song et al. 2021, eq. 6)::

      x_s = x − [f(x, t) − g(t)² s_θ] Δt + g(t) √Δt z                               (3)

- reverse diffusion (Song et al. 2021, App. E), the forward step discretised by eq. (0):
  f_Δ = (α_{t|s} − 1) x and g_Δ² = σ²_{t|s} (VE: σ_t² − σ_s²; DDPM steps: β_i, as in
  score_sde's `discretize`; sub-VP: the exact kernel variance ≈ g(t)² Δt)::

      x_s = x − f_Δ + g_Δ² s_θ + g_Δ z                                              (4)

- Langevin corrector with signal-to-noise ratio r (Song et al. 2021, Alg. 4–5), at level t_i::

      δ = 2 a_i (r ‖z‖ / ‖s_θ‖)²,   x ← x + δ s_θ + √(2δ) z                            (5)

  with ‖·‖ the batch mean of the per-example norms (as score_sde) and a_i the one-step
  signal retention α²_{t_i|t_{i+1}} (the last level: α²_{t_{i−1}|t_i}): 1 for VE, 1 − β_i for
  DDPM/VP — score_sde's `alphas[i]`, here from the marginals.
- DDPM ancestral (Ho et al. 2020, eq. 6–7), the posterior q(x_s | x_t, x̂₀) with
  x̂₀ = (x − σ_t ε̂)/α_t, ε̂ = model.eps(x, t), and variance β̃ (σ² = β̃ of Ho's §3.2)::

      x_s = (α_{t|s} σ_s² / σ_t²) x + (α_s σ²_{t|s} / σ_t²) x̂₀ + √(σ²_{t|s} σ_s² / σ_t²) z     (6)

- DDIM (Song, Meng & Ermon 2021, eq. 12 and 16)::

      c² = η² σ²_{t|s} σ_s² / σ_t²,    x_s = α_s x̂₀ + √(σ_s² − c²) ε̂ + c z                 (7)

  η = 0 is deterministic; η = 1 is eq. (6) (the same posterior, rewritten).
- probability-flow ODE dx/dt = v(x, t), the drift of `sbm.core.model` eq. (3) (`pf_drift`),
  integrated from t to s by Euler (x_s = x − v(x, t) Δt), Heun (Karras et al. 2022, Alg. 1:
  x̃ = x − v(x, t) Δt, x_s = x − ½[v(x, t) + v(x̃, s)] Δt), or adaptively by scipy's RK45.   (8)
- consistency (Song, Dhariwal, Chen & Sutskever 2023, Alg. 1), reading model.x0 as a
  consistency function f (the PF-ODE solution at t_min = model.process.t_min, e.g. a
  `sbm.distill.students.ConsistencyModel`), then re-noising that sample at t_min to s by eq. (0)::

      x̂ = f(x, t),   x_s = α_{s|t_min} x̂ + σ_{s|t_min} z                                   (9)

  For VE (α = 1) this is the paper's x̂ + √(s² − ε²) z; at s = t_min it is x̂ exactly, so a
  K-point schedule evaluates f at t_0 = T, t_1, …, t_{K−2} and returns the last x̂.

Multistep solvers of the probability-flow ODE in the half log-SNR λ = log(α/σ), written with the data
prediction x̂₀ = model.x0 (the ODE is exactly linear in x there: x_s = (σ_s/σ_t) x + σ_s ∫ e^λ x̂₀ dλ).
Each step t -> s evaluates x̂₀ once, at t; the points t_{−1}, t_{−2} before t reuse their evaluations.
With h = λ_s − λ_t > 0 and φ = e^{−h} − 1:

- DPM-Solver++ (Lu et al. 2022, "DPM-Solver++", Alg. 2 (2M); 3M as diffusers'
  `DPMSolverMultistepScheduler`), with D₀ = x̂₀(t), r₀ = (λ_t − λ_{t₋₁})/h, r₁ = (λ_{t₋₁} − λ_{t₋₂})/h::

      order 1:  x_s = (σ_s/σ_t) x − α_s φ D₀                                   (= DDIM, eq. 7 with η = 0)
      order 2:  x_s = (σ_s/σ_t) x − α_s φ (D₀ + ½ D₁),   D₁ = (D₀ − x̂₀(t₋₁)) / r₀
      order 3:  x_s = (σ_s/σ_t) x − α_s φ D₀ + α_s (φ/h + 1) D₁ − α_s ((φ + h)/h² − ½) D₂,            (10)
                D₁′ = (D₀ − x̂₀(t₋₁))/r₀,  D₁″ = (x̂₀(t₋₁) − x̂₀(t₋₂))/r₁,
                D₁ = D₁′ + r₀/(r₀ + r₁) (D₁′ − D₁″),  D₂ = (D₁′ − D₁″)/(r₀ + r₁)

  Order 3 is the published multistep rule (Lu et al.'s code, diffusers, k-diffusion), kept so that
  it equals diffusers step for step. By Taylor D₁ ≈ h x̂₀′ and D₂ ≈ ½ h² x̂₀″ (in λ), whose exact
  weight is −2 α_s ((φ + h)/h² − ½); the rule's −α_s (…) halves that term, leaving an O(h³) local
  error: it converges at order 2, with errors 3–4× below 2M's at 20–160 steps (tests/test_solvers.py).

- UniPC (Zhao et al. 2023, B(h) = e^{−h} − 1, "bh2"; as diffusers' `UniPCMultistepScheduler`): the
  predictor UniP-p from the corrected x at t, with m_k = x̂₀(t_{−k}), r_k = (λ_{t_{−k}} − λ_t)/h and
  D_k = (m_k − m_0)/r_k, k = 1 … p − 1::

      x̃_s = (σ_s/σ_t) x − α_s φ m_0 − α_s B(h) Σ_{k<p} ρ^P_k D_k                                  (11)

  then at the next step, with m_s = x̂₀(x̃_s, s) (the evaluation that step makes anyway), the
  corrector UniC-p replaces x̃_s by the same sum with Σ_{k<p} ρ^C_k D_k + ρ^C_p (m_s − m_0): order p + 1
  at no extra evaluation. ρ solves R ρ = b, R_{ik} = r_k^{i−1} (r_p = 1), b_i = i! ĥ φ_{i+1}(ĥ) / B(h),
  ĥ = −h, φ_1(ĥ) = (e^ĥ − 1)/ĥ, φ_{i+1} = (φ_i − 1/i!)/ĥ: ρ^P over the first p − 1 rows and
  columns (p = 2: ρ^P = ½), ρ^C over all p (p = 1: ρ^C = ½). The last x̃ (at t_{K−1}) is not
  corrected: that would cost one more evaluation (the final denoise evaluates there, at x̃).

  Order schedule (both): step j of S = (K − 1) + d (the final denoise is the last, order-1 step to
  σ = 0, eq. 2) has order min(p, j + 1) (warm-up) and, near the end, min(p, S − j) — UniPC always,
  DPM-Solver++ when S < 15 (diffusers' `lower_order_final`). A step to σ_s = 0 is x_s = α_s D₀.

- EDM's stochastic sampler (Karras et al. 2022, Alg. 2) in x̃ = x/α and σ̃ = σ/α (the VE form of any
  process, `sbm.core.schedules`), from x at t to s, with D(x̃; σ̃) = model.x0(α x̃, t(σ̃))::

      γ = min(S_churn/K, √2 − 1) if S_tmin ≤ σ̃_t ≤ S_tmax else 0,   σ̂ = σ̃(t̂), t̂ = t(σ̃_t (1 + γ)) ∧ 1
      x̂ = x̃ + √(σ̂² − σ̃_t²) S_noise z,   d = (x̂ − D(x̂; σ̂))/σ̂,   x̃_s = x̂ + (σ̃_s − σ̂) d       (12)
      d′ = (x̃_s − D(x̃_s; σ̃_s))/σ̃_s,   x_s = α_s (x̂ + (σ̃_s − σ̂)(d + d′)/2)

  t(σ̃) is the process's unclipped inverse `t_from_sigma_tilde(σ̃, clip=False)` (`sbm.core.processes`
  eq. 4; DDPM: the nearest level, Karras's round_sigma; the NCSN ladder: the VE time between levels);
  t̂ is capped at t = 1, so the top level does not churn. S_churn = 0 is the deterministic Heun
  method in σ̃ (their Alg. 1); a step to σ̃_s = 0 stays Euler (one evaluation). Karras's final
  Euler step to σ = 0 is the final denoise.

**From params**: `SAMPLERS` is the one registry, a `SamplerSpec` per `sampler.name` (the names
of `sbm.config.params.SAMPLERS`): how to build the sampler from `SamplerParams`, its NFE
(network evaluations of whole batches: each score/eps/x0 call is one) and the settings that
spend a given NFE budget. The NFE table is there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from sbm.config.params import SamplerParams
from sbm.core.model import pf_drift
from sbm.core.schedules import SCHEDULES
from sbm.core.tensor import bcast, per_example
from sbm.errors import ConfigError


@dataclass
class SampleOutput:
    x: Tensor  # (N, ...) the samples
    nfe: int  # network evaluations (each over the whole batch)
    wall_time_s: float


class CountingModel:
    """Wraps a model and counts its score/x0/eps calls (the NFE)."""

    def __init__(self, model):
        self.model = model
        self.process = model.process
        self.nfe = 0

    def _call(self, name, x, t, cond=None):
        self.nfe += 1
        return getattr(self.model, name)(x, t, cond)

    def score(self, x, t, cond=None):
        return self._call("score", x, t, cond)

    def x0(self, x, t, cond=None):
        return self._call("x0", x, t, cond)

    def eps(self, x, t, cond=None):
        return self._call("eps", x, t, cond)


#: a level update: ``update(model, x, i, schedule, *, cond, generator) -> x`` at level i
UpdateFn = Callable[..., Tensor]
#: a step rule: ``step(model, x, t, s, *, cond, generator) -> x`` from time t to s < t (0-d tensors)
StepFn = Callable[..., Tensor]


def run_loop(
    update: UpdateFn,
    model,
    x: Tensor,
    schedule: Tensor,
    *,
    steps_per_level: int = 1,
    denoise: bool = False,
    cond=None,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SampleOutput:
    """The one sampling loop: for each level i of `schedule` (K,), `steps_per_level` calls of
    ``update(model, x, i, schedule, cond=, generator=) -> x``; then optionally eq. (2).

    x: (N, ...) the initial state; callback(i, t_i, x) is called after each level."""
    start = time.perf_counter()
    counted = CountingModel(model)
    bar = tqdm(total=len(schedule) * steps_per_level, desc="sampling", disable=not progress, leave=False)
    with torch.no_grad():
        for i in range(len(schedule)):
            for _ in range(steps_per_level):
                x = update(counted, x, i, schedule, cond=cond, generator=generator)
                bar.update(1)
            if callback is not None:
                callback(i, schedule[i], x)
        if denoise:
            x = counted.x0(x, per_example(schedule[-1], x.shape[0], x.device), cond)
    bar.close()
    return SampleOutput(x=x, nfe=counted.nfe, wall_time_s=time.perf_counter() - start)


# ---------------------------------------------------------------- helpers


def _noise(x: Tensor, generator) -> Tensor:
    """z ~ N(0, I) shaped like x, drawn on the CPU from `generator` (device-independent)."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def _marginals(process, *times: Tensor) -> list[tuple[float, float]]:
    """[(α, σ)] at each scalar time, computed in float64."""
    a, s = process.marginal(torch.stack([t.reshape(()) for t in times]).double())
    return list(zip(a.tolist(), s.tolist()))


def _transition(process, t: Tensor, s: Tensor):
    """α_t, σ_t, α_s, σ_s and the kernel's α_{t|s}, σ²_{t|s} of eq. (0), as floats."""
    (a_t, s_t), (a_s, s_s) = _marginals(process, t, s)
    a_ts = a_t / a_s
    return a_t, s_t, a_s, s_s, a_ts, max(s_t**2 - a_ts**2 * s_s**2, 0.0)


def ddim_update(x: Tensor, eps: Tensor, mt, ms) -> Tensor:
    """The deterministic (η = 0) DDIM update of eq. (7) with a given ε̂: from x at a time of
    marginals mt = (α_t, σ_t) to the time of marginals ms = (α_s, σ_s)::

        x_s = α_s x̂₀ + σ_s ε̂,   x̂₀ = (x − σ_t ε̂) / α_t

    x, eps (N, ...); each of α_t, σ_t, α_s, σ_s a float or a per-example (N,) tensor (cast to
    x's dtype and device). (α_s, σ_s) = (1, 0) gives x̂₀."""
    (a_t, s_t), (a_s, s_s) = ((_coef(a, x), _coef(s, x)) for a, s in (mt, ms))
    return a_s * _x0(x, eps, a_t, s_t) + s_s * eps


def _x0(x: Tensor, eps: Tensor, a_t, s_t) -> Tensor:
    """x̂₀ = (x − σ_t ε̂) / α_t (`sbm.core.model` eq. 1) with coefficients as `_coef` leaves them."""
    return (x - s_t * eps) / a_t


def _coef(c, x: Tensor):
    """A coefficient against x (N, ...): a float as it is, an (N,) tensor as (N, 1, …, 1) in x's dtype/device."""
    return bcast(c.to(device=x.device, dtype=x.dtype), x) if isinstance(c, Tensor) else c


# ---------------------------------------------------------------- step rules: x at t -> x at s < t


def euler_maruyama_step(model, x, t, s, *, cond=None, generator=None) -> Tensor:
    """Eq. (3): one Euler–Maruyama step of the reverse SDE. x (N, ...) at t -> (N, ...) at s."""
    dt = float(t - s)
    tv = per_example(t, x.shape[0], x.device)
    f, g = model.process.sde(x, tv)
    g = bcast(g, x)
    drift = f - g**2 * model.score(x, tv, cond)
    return x - drift * dt + g * math.sqrt(dt) * _noise(x, generator)


def reverse_diffusion_step(model, x, t, s, *, cond=None, generator=None) -> Tensor:
    """Eq. (4): the reverse-diffusion predictor with the forward step discretised by eq. (0)."""
    *_, a_ts, var_ts = _transition(model.process, t, s)
    score = model.score(x, per_example(t, x.shape[0], x.device), cond)
    return (2 - a_ts) * x + var_ts * score + math.sqrt(var_ts) * _noise(x, generator)


def ddpm_step(model, x, t, s, *, cond=None, generator=None) -> Tensor:
    """Eq. (6): ancestral sampling from the DDPM posterior q(x_s | x_t, x̂₀), variance β̃."""
    a_t, s_t, a_s, s_s, a_ts, var_ts = _transition(model.process, t, s)
    x0 = _x0(x, model.eps(x, per_example(t, x.shape[0], x.device), cond), a_t, s_t)
    mean = (a_ts * s_s**2 / s_t**2) * x + (a_s * var_ts / s_t**2) * x0
    return mean + math.sqrt(var_ts * s_s**2 / s_t**2) * _noise(x, generator)


def ddim_step(model, x, t, s, *, eta: float = 0.0, cond=None, generator=None) -> Tensor:
    """Eq. (7): the DDIM step with stochasticity η; noise is drawn only when η > 0."""
    a_t, s_t, a_s, s_s, _, var_ts = _transition(model.process, t, s)
    c = eta * math.sqrt(var_ts * s_s**2 / s_t**2)
    # the deterministic part is the η = 0 update with σ_s in front of ε̂ replaced by √(σ_s² − c²)
    eps = model.eps(x, per_example(t, x.shape[0], x.device), cond)
    out = ddim_update(x, eps, (a_t, s_t), (a_s, math.sqrt(max(s_s**2 - c**2, 0.0))))
    return out + c * _noise(x, generator) if eta > 0 else out


def ode_euler_step(model, x, t, s, *, cond=None, generator=None) -> Tensor:
    """Eq. (8), Euler: x_s = x − v(x, t) Δt."""
    return x - pf_drift(model, x, per_example(t, x.shape[0], x.device), cond) * float(t - s)


def ode_heun_step(model, x, t, s, *, cond=None, generator=None) -> Tensor:
    """Eq. (8), Heun (2nd order, two evaluations): the trapezoid of v at t and at the Euler guess."""
    dt = float(t - s)
    d_t = pf_drift(model, x, per_example(t, x.shape[0], x.device), cond)
    d_s = pf_drift(model, x - d_t * dt, per_example(s, x.shape[0], x.device), cond)
    return x - 0.5 * (d_t + d_s) * dt


def ode_adaptive_step(model, x, t, s, *, rtol: float, atol: float, cond=None, generator=None) -> Tensor:
    """Eq. (8) by `scipy.integrate.solve_ivp` (RK45, Dormand–Prince) from t to s.

    The batch is flattened into one float64 vector (N·D,) for the solver (the error
    control is over the whole batch); the model sees x's dtype and device. Each solver
    function evaluation is one model evaluation."""
    from scipy.integrate import solve_ivp

    shape, dtype, device = x.shape, x.dtype, x.device

    def fun(tau: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y).reshape(shape).to(dtype=dtype, device=device)
        tv = torch.full((shape[0],), tau, dtype=t.dtype, device=device)
        return pf_drift(model, xt, tv, cond).detach().double().cpu().numpy().ravel()

    y0 = x.detach().double().cpu().numpy().ravel()
    sol = solve_ivp(fun, (float(t), float(s)), y0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"ode_adaptive: solve_ivp failed from t = {float(t)} to {float(s)}: {sol.message}")
    return torch.from_numpy(sol.y[:, -1]).reshape(shape).to(dtype=dtype, device=device)


def consistency_step(model, x, t, s, *, cond=None, generator=None) -> Tensor:
    """Eq. (9): x̂ = model.x0(x, t) read as the sample at t_min, re-noised to s by eq. (0);
    noise is drawn only when s > t_min."""
    x_hat = model.x0(x, per_example(t, x.shape[0], x.device), cond)
    *_, a_st, var_st = _transition(model.process, s, torch.tensor(model.process.t_min, dtype=s.dtype))
    out = a_st * x_hat
    return out + math.sqrt(var_st) * _noise(x, generator) if var_st > 0 else out


# ---------------------------------------------------------------- level updates


def stepwise(step: StepFn) -> UpdateFn:
    """A step rule as a level update: level i > 0 steps t_{i−1} -> t_i; level 0 keeps x_T."""

    def update(model, x, i, schedule, *, cond=None, generator=None):
        if i == 0:
            return x
        return step(model, x, schedule[i - 1], schedule[i], cond=cond, generator=generator)

    return update


def langevin_update(model, x, i, schedule, *, step_size: float, cond=None, generator=None) -> Tensor:
    """One step of eq. (1) at level i, with αᵢ = ε σᵢ²/σ_L² (σ_L: the schedule's last level)."""
    sigma_i = model.process.sigma(schedule[i : i + 1])[0]
    sigma_last = model.process.sigma(schedule[-1:])[0]
    alpha = step_size * float(sigma_i / sigma_last) ** 2
    t, z = per_example(schedule[i], x.shape[0], x.device), _noise(x, generator)
    return x + 0.5 * alpha * model.score(x, t, cond) + math.sqrt(alpha) * z


def snr_langevin_update(model, x, i, schedule, *, snr: float, cond=None, generator=None) -> Tensor:
    """One step of eq. (5), the Langevin corrector whose step is set by the ratio `snr`."""
    if len(schedule) == 1:
        retention = 1.0
    else:
        hi, lo = (i, i + 1) if i + 1 < len(schedule) else (i - 1, i)
        (a_hi, _), (a_lo, _) = _marginals(model.process, schedule[hi], schedule[lo])
        retention = (a_hi / a_lo) ** 2
    score = model.score(x, per_example(schedule[i], x.shape[0], x.device), cond)
    z = _noise(x, generator)
    ratio = z.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean()
    step = 2 * retention * (snr * ratio) ** 2
    return x + step * score + (2 * step).sqrt() * z


def pc_update(model, x, i, schedule, *, predictor: StepFn | None, corrector: UpdateFn | None,
              corrector_steps: int = 1, cond=None, generator=None) -> Tensor:
    """Predictor–corrector (Song et al. 2021, Alg. 1–3) at level i: the predictor steps
    t_{i−1} -> t_i (none at level 0), then `corrector_steps` corrector steps at t_i."""
    if predictor is not None and i > 0:
        x = predictor(model, x, schedule[i - 1], schedule[i], cond=cond, generator=generator)
    if corrector is not None:
        for _ in range(corrector_steps):
            x = corrector(model, x, i, schedule, cond=cond, generator=generator)
    return x


# ---------------------------------------------------------------- samplers


def annealed_langevin(
    model, x_T, schedule, *, step_size: float, steps_per_level: int, denoise: bool = True,
    cond=None, callback=None, generator=None, progress=False,
) -> SampleOutput:
    """Annealed Langevin dynamics (eq. 1 over every level of `schedule`, then eq. 2)."""
    update = partial(langevin_update, step_size=step_size)
    return run_loop(update, model, x_T, schedule, steps_per_level=steps_per_level, denoise=denoise,
                    cond=cond, callback=callback, generator=generator, progress=progress)


def langevin(
    model, x_init, schedule, *, step_size: float, n_steps: int, denoise: bool = False,
    cond=None, callback=None, generator=None, progress=False,
) -> SampleOutput:
    """Plain Langevin MCMC at the single cleanest level of `schedule` (eq. 1, αᵢ = ε)."""
    return annealed_langevin(model, x_init, schedule[-1:], step_size=step_size, steps_per_level=n_steps,
                             denoise=denoise, cond=cond, callback=callback, generator=generator,
                             progress=progress)


def integrate(
    step: StepFn, model, x_T, schedule, *, denoise: bool = True,
    cond=None, callback=None, generator=None, progress=False,
) -> SampleOutput:
    """Any step rule (eq. 3, 4, 6, 7, 8) over the schedule t_0 -> t_{K−1}, then optionally eq. (2)."""
    return run_loop(stepwise(step), model, x_T, schedule, denoise=denoise, cond=cond, callback=callback,
                    generator=generator, progress=progress)


def predictor_corrector(
    model, x_T, schedule, *, predictor: StepFn | None, corrector: UpdateFn | None, corrector_steps: int = 1,
    denoise: bool = True, cond=None, callback=None, generator=None, progress=False,
) -> SampleOutput:
    """The PC sampler: `pc_update` at every level, then optionally eq. (2)."""
    if predictor is None and corrector is None:
        raise ConfigError("pc sampler: predictor and corrector are both 'none'; it needs at least one")
    update = partial(pc_update, predictor=predictor, corrector=corrector, corrector_steps=corrector_steps)
    return run_loop(update, model, x_T, schedule, denoise=denoise, cond=cond, callback=callback,
                    generator=generator, progress=progress)


def ode_adaptive(
    model, x_T, schedule, *, rtol: float, atol: float, denoise: bool = True,
    cond=None, callback=None, generator=None, progress=False,
) -> SampleOutput:
    """The probability-flow ODE by RK45 from t_0 to t_{K−1} in one adaptive solve: the solver
    picks its own steps, so of `schedule` only the end points are used (callback sees both)."""
    step = partial(ode_adaptive_step, rtol=rtol, atol=atol)
    return integrate(step, model, x_T, schedule[[0, -1]] if len(schedule) > 1 else schedule, denoise=denoise,
                     cond=cond, callback=callback, generator=generator, progress=progress)


def consistency_sample(
    model, x_T, schedule, *, denoise: bool = False, cond=None, callback=None, generator=None, progress=False,
) -> SampleOutput:
    """The multistep consistency sampler (eq. 9 over the schedule; Song et al. 2023, Alg. 1):
    K − 1 evaluations for a K-point schedule. The final denoise is off by default: with a
    consistency function it returns f(x, t_min) = x, one evaluation for nothing."""
    return integrate(consistency_step, model, x_T, schedule, denoise=denoise, cond=cond, callback=callback,
                     generator=generator, progress=progress)


# ---------------------------------------------------------------- multistep solvers in λ (eq. 10, 11) and EDM (eq. 12)

#: DPM-Solver++ lowers its order at the final steps of a run of fewer steps than this (diffusers'
#: `lower_order_final`); UniPC always does
DPMPP_LOWER_ORDER_BELOW = 15


@dataclass(frozen=True)
class _Point:
    """One evaluation of a multistep solver: λ = log(α/σ) at its time and x̂₀ there, (N, ...)."""

    lam: float
    x0: Tensor


def _half_log_snr(alpha: float, sigma: float) -> float:
    """λ = log(α/σ); +∞ at σ = 0."""
    return math.log(alpha / sigma) if sigma > 0 else math.inf


def _step_order(order: int, j: int, n_steps: int, lower_below: float) -> int:
    """The order of step j (0-based) of n_steps: at most j + 1 (only j + 1 evaluations are known)
    and, in a run of fewer than `lower_below` steps, at most n_steps − j (the final steps)."""
    p = min(order, j + 1)
    return min(p, n_steps - j) if n_steps < lower_below else p


def _lambda_step(points: list[_Point], lam_s: float, t, s) -> float:
    """h = λ_s − λ_t > 0 of the step t -> s, or a ValueError naming the two times."""
    h = lam_s - points[-1].lam
    if not h > 0:
        raise ValueError(f"multistep solver: the step t = {float(t):.6g} -> s = {float(s):.6g} does not lower the "
                         "noise (λ_s ≤ λ_t); the schedule must be strictly decreasing in σ/α (a DDPM grid of more "
                         "points than its N steps repeats levels)")
    return h


def dpmpp_update(x: Tensor, points: list[_Point], h: float, a_s: float, s_s: float, s_t: float) -> Tensor:
    """Eq. (10): one DPM-Solver++ step of order len(points) ∈ {1, 2, 3} from x at t (σ_t = s_t) to s
    (α_s, σ_s), h = λ_s − λ_t; points: the last evaluations, oldest first, points[-1] at t. x (N, ...)."""
    d0 = points[-1].x0
    if s_s == 0:
        return a_s * d0
    phi = math.expm1(-h)
    out = (s_s / s_t) * x - (a_s * phi) * d0
    if len(points) == 1:
        return out
    r0 = (points[-1].lam - points[-2].lam) / h
    d1_0 = (d0 - points[-2].x0) / r0
    if len(points) == 2:
        return out - (0.5 * a_s * phi) * d1_0
    r1 = (points[-2].lam - points[-3].lam) / h
    d1_1 = (points[-2].x0 - points[-3].x0) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    return out + (a_s * (phi / h + 1)) * d1 - (a_s * ((phi + h) / h**2 - 0.5)) * d2


def _unipc_rhos(h: float, rks: list[float], corrector: bool) -> np.ndarray:
    """ρ^P (corrector False) or ρ^C of eq. (11) for the ratios r_1 … r_{p−1} = rks (p = len(rks) + 1)."""
    p = len(rks) + 1
    hh = -h
    h_phi = math.expm1(hh) / hh - 1  # ĥ φ_2(ĥ)
    b_h = math.expm1(hh)
    r = np.array(rks + [1.0])
    rows, b, factorial = [], [], 1
    for i in range(1, p + 1):
        rows.append(r ** (i - 1))
        b.append(h_phi * factorial / b_h)
        factorial *= i + 1
        h_phi = h_phi / hh - 1 / factorial
    big_r, b = np.stack(rows), np.array(b)
    if corrector:
        return np.array([0.5]) if p == 1 else np.linalg.solve(big_r, b)
    if p == 1:
        return np.zeros(0)
    return np.array([0.5]) if p == 2 else np.linalg.solve(big_r[:-1, :-1], b[:-1])


def unipc_update(x: Tensor, points: list[_Point], h: float, a_s: float, s_s: float, s_t: float,
                 x0_s: Tensor | None = None) -> Tensor:
    """Eq. (11): the UniP-p predictor from x at t (σ_t = s_t) to s (α_s, σ_s), p = len(points),
    points[-1] at t, oldest first; with x0_s = x̂₀ at the predicted point (s), the UniC-p corrector
    instead. h = λ_s − λ_t. x (N, ...)."""
    m0 = points[-1].x0
    if s_s == 0:
        return a_s * m0
    rks = [(q.lam - points[-1].lam) / h for q in reversed(points[:-1])]
    diffs = [(q.x0 - m0) / r for q, r in zip(reversed(points[:-1]), rks)]
    if x0_s is not None:
        diffs.append(x0_s - m0)
    phi = math.expm1(-h)
    out = (s_s / s_t) * x - (a_s * phi) * m0
    for rho, d in zip(_unipc_rhos(h, rks, x0_s is not None).tolist(), diffs):
        out = out - (a_s * phi * rho) * d  # B(h) = φ (bh2)
    return out


@dataclass(frozen=True)
class _Step:
    """What both multistep solvers know at the start of step j (0-based) t = t_j -> s = t_{j+1} of a
    K-point schedule: the marginals (α, σ) and λ = log(α/σ) at t and s, x̂₀ = model.x0(x, t) (N, ...)
    — the step's one evaluation — and n_steps = (K − 1) + d, the run's steps with the final denoise."""

    j: int
    t: Tensor
    s: Tensor
    a_t: float
    s_t: float
    a_s: float
    s_s: float
    lam_t: float
    lam_s: float
    x0: Tensor
    n_steps: int


def run_multistep(rule: Callable[[Tensor, _Step], Tensor], model, x_T, schedule, *, denoise: bool, cond=None,
                  callback=None, generator=None, progress=False) -> SampleOutput:
    """The loop of the multistep solvers of eq. (10) and (11): at level i > 0 (level 0 keeps x_T),
    ``rule(x, step) -> x`` with the `_Step` t_{i−1} -> t_i; then optionally eq. (2)."""
    n_steps = len(schedule) - 1 + int(denoise)

    def update(model, x, i, schedule, *, cond=None, generator=None):
        if i == 0:
            return x
        t, s = schedule[i - 1], schedule[i]
        (a_t, s_t), (a_s, s_s) = _marginals(model.process, t, s)
        x0 = model.x0(x, per_example(t, x.shape[0], x.device), cond)
        return rule(x, _Step(i - 1, t, s, a_t, s_t, a_s, s_s, _half_log_snr(a_t, s_t), _half_log_snr(a_s, s_s),
                             x0, n_steps))

    return run_loop(update, model, x_T, schedule, denoise=denoise, cond=cond, callback=callback,
                    generator=generator, progress=progress)


def _remember(points: list[_Point], point: _Point, order: int) -> None:
    """Append `point` to the evaluations, keeping the last `order` (oldest first)."""
    points.append(point)
    del points[:-order]


def dpm_solver_pp(
    model, x_T, schedule, *, order: int, denoise: bool = True, cond=None, callback=None, generator=None,
    progress=False,
) -> SampleOutput:
    """DPM-Solver++(2M) / (3M) (eq. 10, `order` 2 / 3; 1 is DDIM) over the schedule, then optionally
    eq. (2): K − 1 + d evaluations for a K-point schedule. Deterministic."""
    points: list[_Point] = []

    def rule(x, st: _Step):
        _remember(points, _Point(st.lam_t, st.x0), order)
        h = _lambda_step(points, st.lam_s, st.t, st.s)
        p = _step_order(order, st.j, st.n_steps, DPMPP_LOWER_ORDER_BELOW)
        return dpmpp_update(x, points[-p:], h, st.a_s, st.s_s, st.s_t)

    return run_multistep(rule, model, x_T, schedule, denoise=denoise, cond=cond, callback=callback,
                         generator=generator, progress=progress)


def unipc(
    model, x_T, schedule, *, order: int = 2, denoise: bool = True, cond=None, callback=None, generator=None,
    progress=False,
) -> SampleOutput:
    """UniPC (eq. 11, bh2) with the predictor of order `order` over the schedule, then optionally
    eq. (2): K − 1 + d evaluations for a K-point schedule. Deterministic."""
    points: list[_Point] = []
    state: dict = {}  # the previous step's corrected start x, its σ, and its order

    def rule(x, st: _Step):
        if points:  # UniC: correct the predicted x at t with its own evaluation
            h = _lambda_step(points, st.lam_t, schedule[st.j - 1], st.t)
            x = unipc_update(state["x"], points[-state["p"]:], h, st.a_t, st.s_t, state["sigma"], x0_s=st.x0)
        _remember(points, _Point(st.lam_t, st.x0), order)
        p = _step_order(order, st.j, st.n_steps, math.inf)
        state.update(x=x, sigma=st.s_t, p=p)
        return unipc_update(x, points[-p:], _lambda_step(points, st.lam_s, st.t, st.s), st.a_s, st.s_s, st.s_t)

    return run_multistep(rule, model, x_T, schedule, denoise=denoise, cond=cond, callback=callback,
                         generator=generator, progress=progress)


def edm_update(model, x, i, schedule, *, churn: float, s_noise: float, s_tmin: float, s_tmax: float | None,
               cond=None, generator=None) -> Tensor:
    """Eq. (12) at level i > 0: the EDM step t_{i−1} -> t_i (level 0 keeps x_T); two evaluations
    (one where σ̃(t_i) = 0). Noise is drawn only when the step churns (γ > 0)."""
    if i == 0:
        return x
    process, n = model.process, x.shape[0]
    t, s = schedule[i - 1], schedule[i]
    (a_t, s_t), (a_s, s_s) = _marginals(process, t, s)
    sig_t, sig_s = s_t / a_t, s_s / a_s
    x_hat, t_hat, sig_hat, a_hat = x / a_t, t, sig_t, a_t
    in_window = s_tmin <= sig_t and (s_tmax is None or sig_t <= s_tmax)
    gamma = min(churn / len(schedule), math.sqrt(2) - 1) if in_window else 0.0
    if gamma > 0:
        sig_up = torch.tensor([sig_t * (1 + gamma)], dtype=torch.float64)
        t_up = process.t_from_sigma_tilde(sig_up, clip=False).clamp(max=1.0).to(t.dtype)[0]
        ((a_up, s_up),) = _marginals(process, t_up)
        if s_up / a_up > sig_t:
            t_hat, sig_hat, a_hat = t_up, s_up / a_up, a_up
            x_hat = x_hat + (math.sqrt(sig_hat**2 - sig_t**2) * s_noise) * _noise(x, generator)

    def denoised(x_tilde, time, alpha):
        return model.x0(alpha * x_tilde, per_example(time, n, x.device), cond)

    d = (x_hat - denoised(x_hat, t_hat, a_hat)) / sig_hat
    x_next = x_hat + (sig_s - sig_hat) * d
    if sig_s > 0:
        d_next = (x_next - denoised(x_next, s, a_s)) / sig_s
        x_next = x_hat + (sig_s - sig_hat) * 0.5 * (d + d_next)
    return a_s * x_next


def edm(
    model, x_T, schedule, *, churn: float = 0.0, s_noise: float = 1.0, s_tmin: float = 0.0,
    s_tmax: float | None = None, denoise: bool = True, cond=None, callback=None, generator=None, progress=False,
) -> SampleOutput:
    """EDM's stochastic sampler (eq. 12; Karras et al. 2022, Alg. 2) over the schedule, then
    optionally eq. (2): 2 (K − 1) + d evaluations for a K-point schedule."""
    update = partial(edm_update, churn=churn, s_noise=s_noise, s_tmin=s_tmin, s_tmax=s_tmax)
    return run_loop(update, model, x_T, schedule, denoise=denoise, cond=cond, callback=callback,
                    generator=generator, progress=progress)


# ---------------------------------------------------------------- from params: the registry

#: pc predictors by `sampler.predictor`
PREDICTORS: dict[str, StepFn | None] = {
    "euler_maruyama": euler_maruyama_step,
    "reverse_diffusion": reverse_diffusion_step,
    "none": None,
}

#: a built sampler: ``sample(model, x_T, schedule, *, cond, callback, generator, progress) -> SampleOutput``
SampleFn = Callable[..., SampleOutput]


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler's rules (`SAMPLERS[sampler.name]`), all from `SamplerParams` cfg:

    - ``build(cfg)``: the sample fn with cfg's settings bound;
    - ``nfe(cfg, native_levels)``: the NFE of one run under cfg, for the schedule of
      `schedule_for` (K = cfg.steps, or native_levels = len(process.grid()) when it is null);
      None where the solver picks it (ode_adaptive);
    - ``for_budget(cfg, nfe, native_levels)``: cfg with the settings that spend at most (about)
      `nfe` evaluations; cfg unchanged where the NFE is not set by steps."""

    build: Callable[[SamplerParams], SampleFn]
    nfe: Callable[[SamplerParams, int], int | None]
    for_budget: Callable[[SamplerParams, int, int], SamplerParams]


def _levels(cfg: SamplerParams, native_levels: int) -> int:
    """K, the length of `schedule_for`'s schedule."""
    return cfg.steps if cfg.steps is not None else native_levels


def _budget(cfg: SamplerParams, nfe: int) -> int:
    """The evaluations left for the loop once the final denoise (if any) is paid, at least 1."""
    return max(nfe - int(cfg.denoise), 1)


def _per_step(build: Callable[[SamplerParams], SampleFn], per_step: int = 1) -> SamplerSpec:
    """A sampler that makes K − 1 steps over the schedule, `per_step` evaluations each (+ the denoise)."""
    return SamplerSpec(
        build=build,
        nfe=lambda c, native: per_step * (_levels(c, native) - 1) + int(c.denoise),
        for_budget=lambda c, nfe, native: replace(c, steps=max(_budget(c, nfe) // per_step, 1) + 1),
    )


def _stepping(step_of: Callable[[SamplerParams], StepFn], per_step: int = 1) -> SamplerSpec:
    """A step rule over the schedule (`integrate`), `per_step` evaluations a step: K − 1 steps."""
    return _per_step(lambda c: partial(integrate, step_of(c), denoise=c.denoise), per_step)


def _corrector(cfg: SamplerParams) -> UpdateFn | None:
    """The pc corrector named by `sampler.corrector`, its step from `snr` or `step_size`."""
    return {
        "langevin": partial(snr_langevin_update, snr=cfg.snr),
        "annealed_langevin": partial(langevin_update, step_size=cfg.step_size),
        "none": None,
    }[cfg.corrector]


def _pc_costs(cfg: SamplerParams) -> tuple[int, int]:
    """(evaluations of the predictor per step, of the corrector per level)."""
    return int(cfg.predictor != "none"), cfg.corrector_steps if cfg.corrector != "none" else 0


def _build_pc(cfg: SamplerParams) -> SampleFn:
    if cfg.predictor == "none" and cfg.corrector == "none":
        raise ConfigError("sampler.predictor = sampler.corrector = 'none': the pc sampler needs at least one")
    return partial(predictor_corrector, predictor=PREDICTORS[cfg.predictor], corrector=_corrector(cfg),
                   corrector_steps=cfg.corrector_steps, denoise=cfg.denoise)


def _pc_nfe(cfg: SamplerParams, native_levels: int) -> int:
    (pred, corr), k = _pc_costs(cfg), _levels(cfg, native_levels)
    return pred * (k - 1) + corr * k + int(cfg.denoise)


def _pc_for_budget(cfg: SamplerParams, nfe: int, native_levels: int) -> SamplerParams:
    pred, corr = _pc_costs(cfg)
    return replace(cfg, steps=max((_budget(cfg, nfe) + pred) // (pred + corr), 2))


def _annealed_for_budget(cfg: SamplerParams, nfe: int, native_levels: int) -> SamplerParams:
    """The process's native levels where the budget allows (fewer otherwise), the rest in steps per level."""
    budget = _budget(cfg, nfe)
    levels = min(native_levels, budget)
    return replace(cfg, steps=levels, steps_per_level=max(budget // levels, 1))


#: sampler name -> its rules. NFE for a K-point schedule, d = 1 with the final denoise (else 0),
#: and the settings `for_budget` picks for a budget B (b = max(B − d, 1)):
#:
#:   euler_maruyama, ddpm, ddim, ode_euler, consistency,
#:   dpmpp_2m, dpmpp_3m, unipc                            (K − 1) + d          steps = b + 1
#:   ode_heun, edm                                        2 (K − 1) + d        steps = max(⌊b/2⌋, 1) + 1
#:                                      (edm: a step to σ = 0, at a process.t_min with σ(t_min) = 0, is one)
#:   pc   (K − 1)·p + K·c + d, p = [predictor], c = corrector_steps·[corrector]
#:                                                                             steps = max(⌊(b + p)/(p + c)⌋, 2)
#:   annealed_langevin                                    K · steps_per_level + d
#:                               steps = L = min(native levels, b), steps_per_level = max(⌊b/L⌋, 1)
#:   langevin                                             langevin_steps + d   langevin_steps = b
#:   ode_adaptive   the solver's function evaluations + d (only t_0 and t_{K−1} are used): None;
#:                  rtol/atol set it, so for_budget keeps cfg
#:
#: The keys are `sbm.config.params.SAMPLERS` (checked by tests/test_samplers.py).
SAMPLERS: dict[str, SamplerSpec] = {
    "langevin": SamplerSpec(
        build=lambda c: partial(langevin, step_size=c.step_size, n_steps=c.langevin_steps, denoise=c.denoise),
        nfe=lambda c, native: c.langevin_steps + int(c.denoise),
        for_budget=lambda c, nfe, native: replace(c, langevin_steps=_budget(c, nfe)),
    ),
    "annealed_langevin": SamplerSpec(
        build=lambda c: partial(annealed_langevin, step_size=c.step_size, steps_per_level=c.steps_per_level,
                                denoise=c.denoise),
        nfe=lambda c, native: _levels(c, native) * c.steps_per_level + int(c.denoise),
        for_budget=_annealed_for_budget,
    ),
    "euler_maruyama": _stepping(lambda c: euler_maruyama_step),
    "pc": SamplerSpec(build=_build_pc, nfe=_pc_nfe, for_budget=_pc_for_budget),
    "ddpm": _stepping(lambda c: ddpm_step),
    "ddim": _stepping(lambda c: partial(ddim_step, eta=c.eta)),
    "ode_euler": _stepping(lambda c: ode_euler_step),
    "ode_heun": _stepping(lambda c: ode_heun_step, per_step=2),
    "ode_adaptive": SamplerSpec(
        build=lambda c: partial(ode_adaptive, rtol=c.rtol, atol=c.atol, denoise=c.denoise),
        nfe=lambda c, native: None,
        for_budget=lambda c, nfe, native: c,
    ),
    "consistency": _stepping(lambda c: consistency_step),
    "dpmpp_2m": _per_step(lambda c: partial(dpm_solver_pp, order=2, denoise=c.denoise)),
    "dpmpp_3m": _per_step(lambda c: partial(dpm_solver_pp, order=3, denoise=c.denoise)),
    "unipc": _per_step(lambda c: partial(unipc, order=c.order, denoise=c.denoise)),
    "edm": _per_step(lambda c: partial(edm, churn=c.churn, s_noise=c.s_noise, s_tmin=c.s_tmin, s_tmax=c.s_tmax,
                                       denoise=c.denoise), per_step=2),
}


def schedule_for(cfg: SamplerParams, process) -> Tensor:
    """The decreasing times 1 -> t_min the sampler visits, (K,): the grid `sampler.schedule` of
    `sbm.core.schedules` (uniform: the process's own) with K = `sampler.steps`, or when that is null
    the length of the process's native grid (ncsn: its L levels, ddpm: its N steps, SDEs: 1000)."""
    return SCHEDULES[cfg.schedule](process, cfg.steps)


def sampler_spec(name: str) -> SamplerSpec:
    """`SAMPLERS[name]`; a ConfigError naming the allowed names for an unknown one."""
    if name not in SAMPLERS:
        raise ConfigError(f"sampler.name = {name!r}: unknown; allowed: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def build_sampler(cfg: SamplerParams) -> SampleFn:
    """The sampler named by `sampler.name`, its settings bound from `cfg` (`SamplerSpec.build`)."""
    return sampler_spec(cfg.name).build(cfg)


def initial_state(cfg: SamplerParams, process, shape, *, data_range=None, generator=None) -> Tensor:
    """x_T for `shape` = (N, ...): `prior` draws N(0, prior_std² I) (eq. 1's x_T);
    `uniform` draws uniformly over data_range = (low, high) in every coordinate."""
    if cfg.init == "prior":
        return process.prior_sample(shape, generator=generator)
    if data_range is None:
        raise ConfigError("sampler.init = 'uniform' needs the data's value_range (meta.json)")
    lo, hi = data_range
    return lo + (hi - lo) * torch.rand(shape, generator=generator)
