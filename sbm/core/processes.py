"""Noise processes: how data is perturbed, at which levels, and what the prior is.

Every process here is a Gaussian perturbation kernel indexed by a time t ∈ [0, 1]::

    x_t = α(t) x₀ + σ(t) ε,   ε ~ N(0, I)                                    (1)

so p(x_t | x₀) = N(α(t) x₀, σ(t)² I) and the conditional score is
∇ log p(x_t | x₀) = −(x_t − α(t) x₀) / σ(t)² = −ε / σ(t).                 (2)

t = 1 is the noisiest level (close to the prior), small t the cleanest. Callers never
switch on the kind of process: they use `marginal`, `sample_t`, `grid`, `prior_*` and
`noise_cond` and `sde`, which every process implements.

Every process also gives the noise level of the rescaled state x_t/α = x₀ + σ̃ ε, the σ of
Karras et al. (2022), and its inverse (`sigma_tilde`, `t_from_sigma_tilde`)::

    σ̃(t) = σ(t) / α(t),   log-SNR λ(t) = log(α²/σ²) = −2 log σ̃(t)                      (3)

σ̃ increases with t, so EDM's log-normal training levels ln σ̃ ~ N(P_mean, P_std²)
(`lognormal_t`) map onto any process's t. The inverse t = σ̃⁻¹(σ̃) is one closed form per
process, the only copy in the package (the karras / log-SNR grids of `sbm.core.schedules`, EDM's
churn in `sbm.core.samplers` and the λ draws of `sbm.core.vlb` all call it)::

    VE, NCSN ladder   σ̃ = σ_min (σ_max/σ_min)^t             t = log(σ̃/σ_min) / log(σ_max/σ_min)
    VP                σ̃² = e^{B(t)} − 1                     B = log(1 + σ̃²)
    sub-VP            σ̃ = e^{B/2} − e^{−B/2} = 2 sinh(B/2)   B = 2 asinh(σ̃/2)                  (4)
    (VP, sub-VP)      B(t) = β_min t + ½ (β_max − β_min) t²  t = 2B / (β_min + √(β_min² + 2 (β_max − β_min) B))
    DDPM              σ̃_i = √((1 − ᾱ_i)/ᾱ_i)                t = t_i, the level i nearest in log σ̃

With ``clip=True`` (the default: training times, `lognormal_t`) t is clipped to [t_min, 1] and
the NCSN ladder returns its training level nearest to t; with ``clip=False`` it is the closed form
itself (t > 1 above σ̃(1), t < t_min below σ̃(t_min)), for the ladder the VE time between levels
(the ladder is the VE SDE there, and the network is conditioned on t ∈ [0, 1]). DDPM's marginal
exists only at its N levels, so it returns the nearest level either way.

- `NCSNLadder` — the geometric σ ladder of NCSN (Song & Ermon 2019): α = 1 and
  σ(t) = σ_min (σ_max/σ_min)^t on the L levels t_i = i/(L−1), so σ_L = σ_min at t = 0
  and σ₁ = σ_max at t = 1 (σ_max defaults to the largest pairwise distance of the data).
- `VESDE`, `VPSDE`, `SubVPSDE` — the continuous SDEs of Song et al. (2021),
  dx = f(x, t) dt + g(t) dw, trained on t ~ U[t_min, 1]; `NCSNLadder` is the VE SDE
  restricted to its L levels.
- `DDPMSchedule` — discrete DDPM (Ho et al. 2020): β_1..β_N (linear, or the cosine
  schedule of Nichol & Dhariwal), ᾱ_i = Π_{j≤i}(1 − β_j), α = √ᾱ_i, σ = √(1 − ᾱ_i) at
  t_i = (i+1)/N. Index i is the `timesteps` index of diffusers' schedulers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from sbm.config.params import ProcessParams
from sbm.core.tensor import bcast
from sbm.errors import ConfigError


class NoiseProcess(ABC):
    """Common interface of the noise processes (equation 1 of the module docstring)."""

    #: the smallest time the process is defined at (its cleanest level)
    t_min: float = 0.0

    @abstractmethod
    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(α(t), σ(t)) of p(x_t | x₀) = N(α x₀, σ² I); t: (N,) -> two (N,) tensors."""

    @abstractmethod
    def sample_t(self, n: int, *, generator: torch.Generator | None = None, device=None) -> Tensor:
        """Training times, (n,): one level per example, drawn from the training distribution."""

    @abstractmethod
    def grid(self, n: int | None = None) -> Tensor:
        """Sampling times, decreasing from 1 to t_min, (n,); None: the native discretisation."""

    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior π = N(0, prior_std² I) that x_1 is drawn from."""

    @abstractmethod
    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The forward SDE dx = f(x, t) dt + g(t) dw: (f (N, ...), g (N,)) at x (N, ...), t (N,)."""

    @abstractmethod
    def to_config(self) -> dict:
        """A JSON-able description that `process_from_config` turns back into this process."""

    def noise_cond(self, t: Tensor) -> Tensor:
        """The scalar per example that the network is conditioned on, (N,). Here: t itself."""
        return t

    @abstractmethod
    def t_from_sigma_tilde(self, sigma_tilde: Tensor, *, clip: bool = True) -> Tensor:
        """The inverse of `sigma_tilde` (eq. 3, closed forms eq. 4): the t with σ̃(t) = sigma_tilde, (N,) -> (N,)
        in sigma_tilde's dtype. clip: a level outside [σ̃(t_min), σ̃(1)] goes to the nearer end and a
        process trained on discrete levels returns the level nearest in log σ̃; clip=False: the
        closed form, unclipped (DDPM: still the nearest of its levels, the only times it has)."""

    def sigma_tilde(self, t: Tensor) -> Tensor:
        """σ̃(t) = σ(t)/α(t) of eq. (3), the noise level of x_t/α = x₀ + σ̃ ε; t: (N,) -> (N,)."""
        a, s = self.marginal(t)
        return s / a

    def alpha(self, t: Tensor) -> Tensor:
        return self.marginal(t)[0]

    def sigma(self, t: Tensor) -> Tensor:
        return self.marginal(t)[1]

    def perturb(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = α(t) x₀ + σ(t) ε (equation 1); x0, eps: (N, ...), t: (N,)."""
        a, s = self.marginal(t)
        return bcast(a, x0) * x0 + bcast(s, x0) * eps

    def prior_sample(self, shape, *, generator: torch.Generator | None = None, device=None) -> Tensor:
        """x_1 ~ N(0, prior_std² I), `shape` = (N, ...)."""
        return self.prior_std() * torch.randn(shape, generator=generator, device=device)

    def prior_logp(self, x: Tensor) -> Tensor:
        """log N(x; 0, prior_std² I) per example, (N,)."""
        d = x[0].numel()
        s = self.prior_std()
        sq = x.flatten(1).pow(2).sum(1)
        return -0.5 * sq / s**2 - d * math.log(s) - 0.5 * d * math.log(2 * math.pi)


class ContinuousProcess(NoiseProcess):
    """A process defined for every t ∈ [t_min, 1], trained on t ~ U[t_min, 1]."""

    def __init__(self, t_min: float):
        if not 0 <= t_min < 1:
            raise ConfigError(f"process.t_min = {t_min}: must be in [0, 1)")
        self.t_min = float(t_min)

    def sample_t(self, n, *, generator=None, device=None):
        u = torch.rand(n, generator=generator)
        return (self.t_min + (1 - self.t_min) * u).to(device)

    def grid(self, n=None):
        return torch.linspace(1.0, self.t_min, 1000 if n is None else n)

    def _clip(self, t: Tensor, clip: bool) -> Tensor:
        """t clamped to [t_min, 1] if `clip` (`t_from_sigma_tilde`), else t itself."""
        return t.clamp(self.t_min, 1.0) if clip else t


class VESDE(ContinuousProcess):
    """Variance exploding SDE (Song et al. 2021, eq. 30): α = 1,
    σ(t) = σ_min (σ_max/σ_min)^t,  f = 0,  g(t) = σ(t) √(2 ln(σ_max/σ_min)).
    Its prior is N(0, σ_max² I)."""

    def __init__(self, sigma_min: float, sigma_max: float, t_min: float = 0.0):
        super().__init__(t_min)
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"process: need 0 < sigma_min ({sigma_min}) < sigma_max ({sigma_max})")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def marginal(self, t):
        s = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        return torch.ones_like(s), s

    def sde(self, x, t):
        g = self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
        return torch.zeros_like(x), g

    def t_from_sigma_tilde(self, sigma_tilde, *, clip=True):
        """α = 1, so σ̃ = σ and t = ln(σ̃/σ_min) / ln(σ_max/σ_min) (eq. 4), clipped to [t_min, 1] if `clip`."""
        t = torch.log(sigma_tilde / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)
        return self._clip(t, clip)

    def prior_std(self):
        return self.sigma_max

    def to_config(self):
        return {"name": "ve", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "t_min": self.t_min}


class NCSNLadder(VESDE):
    """The NCSN ladder: the VE marginals on L levels t_i = i/(L−1), trained one level at a time.

    σ(t) = σ_min (σ_max/σ_min)^t, so σ_L = σ_min at t = 0 and σ₁ = σ_max at t = 1; the
    levels are the native sampling grid. Between levels it is the VE SDE."""

    def __init__(self, sigma_min: float, sigma_max: float, n_levels: int):
        super().__init__(sigma_min, sigma_max, 0.0)
        self.n_levels = int(n_levels)

    def levels_t(self) -> Tensor:
        """The L training levels, increasing: t_i = i/(L−1)."""
        return torch.linspace(0.0, 1.0, self.n_levels, dtype=torch.float64).float()

    def sample_t(self, n, *, generator=None, device=None):
        idx = torch.randint(0, self.n_levels, (n,), generator=generator)
        return self.levels_t()[idx].to(device)

    def t_from_sigma_tilde(self, sigma_tilde, *, clip=True):
        """clip: the level t_i nearest to the VE inverse (log σ is affine in t, so nearest in log σ),
        as the ladder trains only there; clip=False: the VE inverse itself, unclipped (between levels
        the ladder is the VE SDE — the karras / log-SNR grids and EDM's churn keep their points distinct)."""
        t = super().t_from_sigma_tilde(sigma_tilde, clip=clip)
        if not clip:
            return t
        idx = (t.double() * (self.n_levels - 1)).round().long()
        return self.levels_t().to(t.device)[idx].to(sigma_tilde.dtype)

    def grid(self, n=None):
        if n is None or n == self.n_levels:
            return self.levels_t().flip(0)
        return torch.linspace(1.0, 0.0, n)

    def to_config(self):
        return {"name": "ncsn", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "n_levels": self.n_levels}


class VPSDE(ContinuousProcess):
    """Variance preserving SDE (Song et al. 2021, eq. 32–33), β(t) = β_min + t(β_max − β_min):
    f = −½β(t) x,  g = √β(t),  α(t) = exp(−½B(t)),  σ(t) = √(1 − e^(−B(t))),
    B(t) = ∫₀ᵗ β = β_min t + ½ t² (β_max − β_min). Prior N(0, I)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        super().__init__(t_min)
        if not 0 < beta_min < beta_max:
            raise ConfigError(f"process: need 0 < beta_min ({beta_min}) < beta_max ({beta_max})")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral(self, t: Tensor) -> Tensor:
        """B(t) = ∫₀ᵗ β(s) ds."""
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def marginal(self, t):
        b = self.integral(t)
        return torch.exp(-0.5 * b), (-torch.expm1(-b)).sqrt()

    def sde(self, x, t):
        beta = self.beta(t)
        return -0.5 * bcast(beta, x) * x, beta.sqrt()

    def t_from_integral(self, b: Tensor) -> Tensor:
        """The t ≥ 0 with B(t) = b: the root of ½(β_max − β_min) t² + β_min t − b = 0, written
        2b / (β_min + √(β_min² + 2(β_max − β_min) b)) (no cancellation at small b); (N,) -> (N,)."""
        return 2 * b / (self.beta_min + (self.beta_min**2 + 2 * (self.beta_max - self.beta_min) * b).sqrt())

    def t_from_sigma_tilde(self, sigma_tilde, *, clip=True):
        """σ̃² = (1 − e^(−B))/e^(−B) = e^B − 1 (log-SNR λ = −log(e^B − 1)), so B = log(1 + σ̃²) (eq. 4);
        t from B by `t_from_integral`, clipped to [t_min, 1] if `clip`."""
        return self._clip(self.t_from_integral(torch.log1p(sigma_tilde**2)), clip)

    def prior_std(self):
        return 1.0

    def to_config(self):
        return {"name": "vp", "beta_min": self.beta_min, "beta_max": self.beta_max, "t_min": self.t_min}


class SubVPSDE(VPSDE):
    """sub-VP SDE (Song et al. 2021, eq. 34): the VP drift with
    g = √(β(t)(1 − e^(−2B(t)))), so α(t) = exp(−½B(t)) and σ(t) = 1 − e^(−B(t)) ≤ the VP's."""

    def marginal(self, t):
        b = self.integral(t)
        return torch.exp(-0.5 * b), -torch.expm1(-b)

    def sde(self, x, t):
        beta = self.beta(t)
        return -0.5 * bcast(beta, x) * x, (beta * -torch.expm1(-2 * self.integral(t))).sqrt()

    def t_from_sigma_tilde(self, sigma_tilde, *, clip=True):
        """σ̃ = (1 − e^(−B)) e^(B/2) = 2 sinh(B/2), so B = 2 asinh(σ̃/2) (eq. 4); t from B, clipped to
        [t_min, 1] if `clip`."""
        return self._clip(self.t_from_integral(2 * torch.asinh(sigma_tilde / 2)), clip)

    def to_config(self):
        return {**super().to_config(), "name": "subvp"}


def ddpm_betas(schedule: str, n: int, beta_min: float, beta_max: float) -> Tensor:
    """β_1..β_N in float64 from the continuous rates β_min, β_max of the VP SDE (β_i = β/N,
    so β_min = 0.1, β_max = 20, N = 1000 give DDPM's 1e-4 … 0.02).
    linear: linspace(β_min/N, β_max/N, N) (Ho et al. 2020);
    cosine: β_i = min(1 − ᾱ(i+1)/ᾱ(i), 0.999) with ᾱ(τ) = cos²((τ/N + 0.008)/1.008 · π/2)
    (Nichol & Dhariwal 2021) — both as diffusers' `linear` and `squaredcos_cap_v2`."""
    if schedule == "linear":
        return torch.linspace(beta_min / n, beta_max / n, n, dtype=torch.float64)
    if schedule == "cosine":
        f = lambda tau: math.cos((tau / n + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(n)], dtype=torch.float64)
    raise ConfigError(f"process.beta_schedule = {schedule!r}: unknown; allowed: linear, cosine")


class DDPMSchedule(NoiseProcess):
    """Discrete DDPM: α_i = √ᾱ_i, σ_i = √(1 − ᾱ_i) at t_i = (i+1)/N, i = 0..N−1."""

    def __init__(self, betas: Tensor, *, schedule: str | None = None, beta_min: float | None = None,
                 beta_max: float | None = None):
        """betas: β_1..β_N (N,). Give schedule/beta_min/beta_max when they produced the betas
        (`ddpm_betas`): the config then names them; otherwise it stores the betas themselves."""
        self.betas = betas.double()
        self.n = len(betas)
        if not ((self.betas > 0) & (self.betas < 1)).all():
            raise ConfigError("process: every DDPM β_i must lie in (0, 1)")
        self.alphas_cumprod = torch.cumprod(1 - self.betas, 0)
        self.t_min = 1.0 / self.n
        if schedule is None:
            self._cfg = {"name": "ddpm", "betas": self.betas.tolist()}
        else:
            self._cfg = {"name": "ddpm", "beta_schedule": schedule, "beta_min": beta_min,
                         "beta_max": beta_max, "n_timesteps": self.n}

    def index(self, t: Tensor) -> Tensor:
        """The timestep index i of t = (i+1)/N (nearest), (N,) long."""
        return (t.double() * self.n).round().long().clamp(1, self.n) - 1

    def time(self, index: Tensor) -> Tensor:
        return (index.double() + 1).float() / self.n

    def marginal(self, t):
        ab = self.alphas_cumprod.to(t.device)[self.index(t)]
        return ab.sqrt().to(t.dtype), (1 - ab).sqrt().to(t.dtype)

    def sample_t(self, n, *, generator=None, device=None):
        return self.time(torch.randint(0, self.n, (n,), generator=generator)).to(device)

    def t_from_sigma_tilde(self, sigma_tilde, *, clip=True):
        """The step t_i whose σ̃_i = √((1 − ᾱ_i)/ᾱ_i) (increasing in i) is nearest to σ̃ in log σ̃ (eq. 4),
        clip or not: the marginal exists only at the N levels."""
        ab = self.alphas_cumprod.to(sigma_tilde.device)
        table = 0.5 * torch.log((1 - ab) / ab)  # log σ̃_i, (N,) increasing
        q = torch.log(sigma_tilde.double())
        hi = torch.searchsorted(table, q).clamp(1, self.n - 1)  # table[hi − 1] < q <= table[hi] inside
        idx = torch.where(q - table[hi - 1] <= table[hi] - q, hi - 1, hi)
        return self.time(idx).to(sigma_tilde.device, sigma_tilde.dtype)

    def grid(self, n=None):
        n = self.n if n is None else n
        idx = torch.linspace(self.n - 1, 0, n, dtype=torch.float64).round().long()
        return self.time(idx)

    def sde(self, x, t):
        """The VP SDE that DDPM discretises: β(t) = N β_i(t), f = −½β x, g = √β."""
        beta = (self.n * self.betas.to(t.device)[self.index(t)]).to(x.dtype)
        return -0.5 * bcast(beta, x) * x, beta.sqrt()

    def prior_std(self):
        return 1.0

    def to_config(self):
        return dict(self._cfg)


def lognormal_t(process: NoiseProcess, n: int, p_mean: float, p_std: float, *,
                generator: torch.Generator | None = None, device=None) -> Tensor:
    """Training times with EDM's level distribution (Karras et al. 2022, Table 1, "training"):
    ln σ̃ ~ N(p_mean, p_std²) with σ̃ = σ/α (eq. 3), mapped to t by `process.t_from_sigma_tilde`
    (clipped to [t_min, 1]; ncsn and ddpm: the nearest level). -> (n,) in the default dtype."""
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    t = process.t_from_sigma_tilde(torch.exp(p_mean + p_std * z))
    return t.to(device=device, dtype=torch.get_default_dtype())


def build_process(cfg: ProcessParams, data_meta: dict | None = None) -> NoiseProcess:
    """The process named by `process.name`; σ_max = null takes the data's max pairwise distance."""
    if cfg.name in ("ncsn", "ve"):
        sigma_max = cfg.sigma_max
        if sigma_max is None:
            if not data_meta or "sigma_max" not in data_meta:
                raise ConfigError("process.sigma_max = null needs the prepared data's meta.json (sigma_max)")
            sigma_max = float(data_meta["sigma_max"])
        if cfg.sigma_min >= sigma_max:
            raise ConfigError(
                f"process.sigma_min = {cfg.sigma_min} >= sigma_max = {sigma_max}"
                f"{' (the data max pairwise distance)' if cfg.sigma_max is None else ''}: need sigma_min < sigma_max"
            )
        if cfg.name == "ncsn":
            return NCSNLadder(cfg.sigma_min, sigma_max, cfg.n_levels)
        return VESDE(cfg.sigma_min, sigma_max, cfg.t_min)
    return process_from_config({**cfg.__dict__})


def process_from_config(d: dict) -> NoiseProcess:
    """Inverse of `NoiseProcess.to_config` (checkpoint loading); extra keys are ignored."""
    name = d["name"]
    if name == "ncsn":
        return NCSNLadder(d["sigma_min"], d["sigma_max"], d["n_levels"])
    if name == "ve":
        return VESDE(d["sigma_min"], d["sigma_max"], d["t_min"])
    if name in ("vp", "subvp"):
        return (VPSDE if name == "vp" else SubVPSDE)(d["beta_min"], d["beta_max"], d["t_min"])
    if name == "ddpm" and "betas" in d:
        return DDPMSchedule(torch.tensor(d["betas"], dtype=torch.float64))
    if name == "ddpm":
        if d["beta_max"] / d["n_timesteps"] >= 1:
            raise ConfigError(f"process.beta_max / n_timesteps = {d['beta_max'] / d['n_timesteps']}: "
                              "DDPM needs every β_i < 1")
        betas = ddpm_betas(d["beta_schedule"], d["n_timesteps"], d["beta_min"], d["beta_max"])
        return DDPMSchedule(betas, schedule=d["beta_schedule"], beta_min=d["beta_min"], beta_max=d["beta_max"])
    raise ValueError(f"unknown process {name!r}")
