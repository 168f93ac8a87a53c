"""One wrapper that turns any network into score, ε, x̂₀ — whatever it was trained to predict.

With x_t = α x₀ + σ ε (see `sbm.core.processes`) the three parameterisations are related by::

    score = −ε / σ,      x̂₀ = (x_t − σ ε) / α,      ε = (x_t − α x̂₀) / σ = −σ · score   (1)

`to_eps` maps a raw network output F of kind `prediction` to ε; `from_eps` maps ε to the
requested kind. Samplers, losses and guidance only call `ScoreModel.score/eps/x0`.

The network sees its input scaled to unit variance at every level (the c_in of Karras
et al. 2022)::

    F = net(c_in(t) · x_t, noise_cond(t)),   c_in(t) = 1 / √(α(t)² σ_data² + σ(t)²)      (2)

where σ_data is the per-coordinate standard deviation of the training data; otherwise the
inputs at σ_max ≈ the data's diameter would be tens of times larger than at σ_min (`c_in`,
also the input scaling of `sbm.models.classifier`).

The probability-flow ODE of the process's SDE dx = f(x, t) dt + g(t) dw (Song et al. 2021,
eq. 13), which the ODE samplers integrate and `sbm.core.likelihood` differentiates (`pf_drift`)::

    dx/dt = v(x, t) = f(x, t) − ½ g(t)² s_θ(x, t)                                          (3)
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from sbm.core.processes import NoiseProcess
from sbm.core.tensor import bcast

PREDICTIONS = ("eps", "score", "x0")


def to_eps(out: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, prediction: str) -> Tensor:
    """ε implied by a network output `out` of kind `prediction`, eq. (1). All (N, ...)."""
    a, s = bcast(alpha, x), bcast(sigma, x)
    if prediction == "eps":
        return out
    if prediction == "score":
        return -s * out
    if prediction == "x0":
        return (x - a * out) / s
    raise ValueError(f"unknown prediction {prediction!r}; allowed: {', '.join(PREDICTIONS)}")


def from_eps(eps: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, kind: str) -> Tensor:
    """The quantity `kind` (eps | score | x0) implied by ε at x_t, eq. (1)."""
    a, s = bcast(alpha, x), bcast(sigma, x)
    if kind == "eps":
        return eps
    if kind == "score":
        return -eps / s
    if kind == "x0":
        return (x - s * eps) / a
    raise ValueError(f"unknown kind {kind!r}; allowed: {', '.join(PREDICTIONS)}")


def c_in(alpha: Tensor, sigma: Tensor, data_std: float) -> Tensor:
    """The input scaling of eq. (2), 1 / √(α² σ_data² + σ²), per example: alpha, sigma (N,) -> (N,)."""
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


class ScoreModel(Predicts, nn.Module):
    """net(x_t, noise_cond(t)) read as `prediction`; exposes score/eps/x0 at (x (N, ...), t (N,))."""

    def __init__(self, net: ScoreNet, process: NoiseProcess, prediction: str = "eps", data_std: float = 1.0):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"model.prediction = {prediction!r}: allowed {', '.join(PREDICTIONS)}")
        if not data_std > 0:
            raise ValueError(f"data_std = {data_std}: must be > 0")
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
        eps = to_eps(self(x, t, cond), x, a, s, self.prediction)
        return from_eps(eps, x, a, s, kind)

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
