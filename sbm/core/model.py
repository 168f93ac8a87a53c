"""One wrapper that turns any network into score, ε, x̂₀, v — whatever it was trained to predict.

With x_t = α x₀ + σ ε (see `sbm.core.processes`) the parameterisations are related by::

    score = −ε / σ,      x̂₀ = (x_t − σ ε) / α,      ε = (x_t − α x̂₀) / σ = −σ · score   (1)

`to_eps` maps a raw network output F of kind `prediction` (eps | score | x0 | v | edm) to ε;
`from_eps` maps ε to the requested kind (for v and edm: the F that `to_eps` maps back to ε, the
network's regression target). Samplers, losses and guidance only call `ScoreModel.score/eps/x0/v`.

The network sees its input scaled to unit variance at every level (the c_in of Karras
et al. 2022)::

    F = net(c_in(t) · x_t, noise_cond(t)),   c_in(t) = 1 / √(α(t)² σ_data² + σ(t)²)      (2)

where σ_data is the per-coordinate standard deviation of the training data; otherwise the
inputs at σ_max ≈ the data's diameter would be tens of times larger than at σ_min (`c_in`,
also the input scaling of `sbm.models.classifier`).

The probability-flow ODE of the process's SDE dx = f(x, t) dt + g(t) dw (Song et al. 2021,
eq. 13), which the ODE samplers integrate and `sbm.core.likelihood` differentiates (`pf_drift`)::

    dx/dt = v(x, t) = f(x, t) − ½ g(t)² s_θ(x, t)                                          (3)

`edm`: the preconditioned denoiser of Karras et al. 2022 (eq. 7 and Table 1), written for any
process on the rescaled state x_t/α = x₀ + σ̃ ε with σ̃ = σ/α (`NoiseProcess.sigma_tilde`)::

    x̂₀ = D(x_t/α, σ̃) = c_skip(σ̃) x_t/α + c_out(σ̃) F(c_in(σ̃) x_t/α, c_noise(t))              (4)
    c_skip = σ_d² / (σ̃² + σ_d²),   c_out = σ̃ σ_d / √(σ̃² + σ_d²),   c_in = 1 / √(σ̃² + σ_d²)

with σ_d = σ_data (`ScoreModel.data_std`). c_in(σ̃)/α is exactly eq. (2)'s c_in(t), so the
network's input is the same for every prediction; c_noise is the process's `noise_cond(t)`
(the nets are conditioned on t). For VE (α = 1) eq. (4) is the paper's D(x; σ). As σ̃ → 0,
c_skip → 1 and c_out → 0: D → x_t/α whatever F is. ε = (x_t − α D)/σ is evaluated as
c_in (σ̃ c_in x_t/α − σ_d F) (the same value, without cancelling x_t against α D at small σ̃).

`v`, the v-prediction of Salimans & Ho 2022 ("Progressive distillation for fast sampling of
diffusion models", §4; not the ODE velocity of eq. 3): v = α ε − σ x₀ for α² + σ² = 1. For any
process it is defined on the variance-preserving rescaling x_t/r = (α/r) x₀ + (σ/r) ε,
r = √(α² + σ²)::

    v = (α ε − σ x₀) / r,     ε = (σ x_t + α r v) / r²,     x̂₀ = α x_t / r² − σ v / r          (5)

(VP: r = 1, the paper's v.) With σ_d = 1, eq. (4) is eq. (5) with F = −v: c_skip x_t/α = α x_t/r²
and c_out = σ/r.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from sbm.config.params import PREDICTIONS
from sbm.core.processes import NoiseProcess
from sbm.core.tensor import bcast


def edm_c_skip(sigma_tilde: Tensor, data_std: float) -> Tensor:
    """c_skip(σ̃) = σ_d² / (σ̃² + σ_d²) of eq. (4) (Karras et al. 2022, Table 1), elementwise."""
    return data_std**2 / (sigma_tilde**2 + data_std**2)


def edm_c_out(sigma_tilde: Tensor, data_std: float) -> Tensor:
    """c_out(σ̃) = σ̃ σ_d / √(σ̃² + σ_d²) of eq. (4) (Karras et al. 2022, Table 1), elementwise."""
    return sigma_tilde * data_std * edm_c_in(sigma_tilde, data_std)


def edm_c_in(sigma_tilde: Tensor, data_std: float) -> Tensor:
    """c_in(σ̃) = 1 / √(σ̃² + σ_d²) of eq. (4) (Karras et al. 2022, Table 1), elementwise."""
    return (sigma_tilde**2 + data_std**2).rsqrt()


def _sigma_d(data_std: float | None) -> float:
    if data_std is None or not data_std > 0:
        raise ValueError(f"prediction 'edm' needs data_std = σ_d > 0 (the data's standard deviation), got {data_std}")
    return float(data_std)


def to_eps(out: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, prediction: str,
           data_std: float | None = None) -> Tensor:
    """ε implied by a network output `out` of kind `prediction`, eqs. (1), (4), (5): out, x (N, ...),
    alpha, sigma (N,) -> (N, ...). data_std: σ_d of eq. (4), needed by edm only."""
    a, s = bcast(alpha, x), bcast(sigma, x)
    if prediction == "eps":
        return out
    if prediction == "score":
        return -s * out
    if prediction == "x0":
        return (x - a * out) / s
    if prediction == "v":
        r2 = a**2 + s**2
        return (s * x + a * r2.sqrt() * out) / r2
    if prediction == "edm":  # (x − α D)/σ with D of eq. (4)
        sd = _sigma_d(data_std)
        st = s / a
        ci = edm_c_in(st, sd)
        return ci * (st * ci * x / a - sd * out)
    raise ValueError(f"unknown prediction {prediction!r}; allowed: {', '.join(PREDICTIONS)}")


def from_eps(eps: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, kind: str,
             data_std: float | None = None) -> Tensor:
    """The quantity `kind` implied by ε at x_t, eqs. (1), (4), (5): eps, x (N, ...), alpha, sigma (N,)
    -> (N, ...). For v and edm: the network output F with to_eps(F, ..., kind) = ε (for edm the
    F with D = x̂₀ of eq. (1); data_std: its σ_d)."""
    a, s = bcast(alpha, x), bcast(sigma, x)
    if kind == "eps":
        return eps
    if kind == "score":
        return -eps / s
    if kind == "x0":
        return (x - s * eps) / a
    if kind == "v":
        r2 = a**2 + s**2
        return (r2 * eps - s * x) / (a * r2.sqrt())
    if kind == "edm":
        sd = _sigma_d(data_std)
        st = s / a
        ci = edm_c_in(st, sd)
        return (st * ci * x / a - eps / ci) / sd
    raise ValueError(f"unknown kind {kind!r}; allowed: {', '.join(PREDICTIONS)}")


def c_in(alpha: Tensor, sigma: Tensor, data_std: float) -> Tensor:
    """The input scaling of eq. (2), 1 / √(α² σ_data² + σ²) = edm_c_in(σ/α, σ_data) / α, per
    example: alpha, sigma (N,) -> (N,)."""
    return (alpha**2 * data_std**2 + sigma**2).rsqrt()


def pf_drift(model, x: Tensor, t: Tensor, cond=None) -> Tensor:
    """v(x, t) of eq. (3), shaped like x; x (N, ...), t (N,). model: anything with
    ``.score(x, t, cond)`` and ``.process`` (differentiable in x when the score is)."""
    f, g = model.process.sde(x, t)
    return f - 0.5 * bcast(g**2, x) * model.score(x, t, cond)


def model_dtype_device(model) -> tuple[torch.dtype, torch.device]:
    """The dtype/device of a model's first parameter; float64/CPU for one without parameters
    (an analytic model, or anything that is not an nn.Module)."""
    p = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    if p is None:
        return torch.float64, torch.device("cpu")
    return p.dtype, p.device


class ScoreNet(Protocol):
    """What `ScoreModel` wraps (`sbm.nets.score` MLPNet/UNetNet, `sbm.text.net.TextConditionalNet`):
    ``net(x, c)`` -> shaped like x, or ``net(x, c, cond)`` when `conditional` is True."""

    conditional: bool
    config: dict

    def __call__(self, x: Tensor, c: Tensor, *cond) -> Tensor: ...


class Predicts:
    """score / eps / x0 at (x (N, ...), t (N,)) from one `predict(x, t, kind, cond)`: the
    interface the samplers call (ScoreModel, AnalyticScoreModel, the guidance wrappers)."""

    def score(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        """∇ₓ log p_t(x), shaped like x."""
        return self.predict(x, t, "score", cond)

    def eps(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        return self.predict(x, t, "eps", cond)

    def x0(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        return self.predict(x, t, "x0", cond)

    def v(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        """v = (α ε − σ x̂₀)/√(α² + σ²), eq. (5), shaped like x."""
        return self.predict(x, t, "v", cond)


class ScoreModel(Predicts, nn.Module):
    """net(x_t, noise_cond(t)) read as `prediction` (eps | score | x0 | v | edm: eqs. (1), (4), (5));
    exposes score/eps/x0/v at (x (N, ...), t (N,)). data_std: σ_data of eqs. (2) and (4)."""

    def __init__(self, net: ScoreNet, process: NoiseProcess, prediction: str = "eps", data_std: float = 1.0):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"model.prediction = {prediction!r}: allowed {', '.join(PREDICTIONS)}")
        if not data_std > 0:
            raise ValueError(f"data_std = {data_std}: must be > 0 (σ_data, the data's standard deviation, scales "
                             f"the network's input{' and, for prediction edm, its output' if prediction == 'edm' else ''})")
        self.net = net
        #: read from the net once: a training loop may swap `net` for a wrapper (e.g. DDP) that hides it
        self.conditional = bool(net.conditional)
        self.process = process
        self.prediction = prediction
        self.data_std = float(data_std)

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        """The raw network output F of eq. (2), shaped like x. cond (N, ...) reaches a
        conditional net (`ScoreNet.conditional`, e.g. the token ids of `sbm.text.net.TextConditionalNet`)."""
        a, s = self.process.marginal(t)
        inp, c = bcast(c_in(a, s, self.data_std), x) * x, self.process.noise_cond(t)
        if self.conditional:
            return self.net(inp, c, cond)
        return self.net(inp, c)  # an unconditional net ignores cond

    def predict(self, x: Tensor, t: Tensor, kind: str, cond=None) -> Tensor:
        a, s = self.process.marginal(t)
        eps = to_eps(self(x, t, cond), x, a, s, self.prediction, self.data_std)
        return from_eps(eps, x, a, s, kind, self.data_std)

    def to_config(self) -> dict:
        return {"net": self.net.config, "process": self.process.to_config(), "prediction": self.prediction,
                "data_std": self.data_std}


class AnalyticScoreModel(Predicts, nn.Module):
    """A known score function s(x, t) (e.g. a Gaussian mixture's) behind the ScoreModel API."""

    def __init__(self, score_fn, process: NoiseProcess):
        super().__init__()
        self.score_fn = score_fn
        self.process = process

    def score(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        return self.score_fn(x, t)

    def predict(self, x, t, kind, cond=None):
        a, s = self.process.marginal(t)
        return from_eps(-bcast(s, x) * self.score(x, t), x, a, s, kind)
