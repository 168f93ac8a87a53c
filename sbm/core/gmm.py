"""Gaussian mixtures: the analytic ground truth for losses, samplers and likelihoods.

p(x) = Σₖ wₖ N(x; μₖ, Σₖ). Perturbed by any process of `sbm.core.processes`
(x_t = α x₀ + σ ε) it stays a mixture::

    p_t(x) = Σₖ wₖ N(x; α μₖ, α² Σₖ + σ² I)                                   (1)

so its log-density and score are known exactly at every noise level::

    ∇ log p_t(x) = Σₖ rₖ(x) · (−Cₖ⁻¹ (x − α μₖ)),  Cₖ = α² Σₖ + σ² I,
    rₖ(x) = wₖ N(x; α μₖ, Cₖ) / p_t(x)   (the posterior responsibilities).      (2)

All computations run in float64; inputs and outputs keep the caller's dtype.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


class GaussianMixture:
    """weights (K,), means (K, D), covs (K, D, D)."""

    def __init__(self, weights, means, covs):
        w = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.covs.shape != (k, d, d):
            raise ValueError(f"mixture shapes disagree: weights {tuple(self.weights.shape)}, "
                             f"means {tuple(self.means.shape)}, covs {tuple(self.covs.shape)}")
        torch.linalg.cholesky(self.covs)  # raises if a covariance is not SPD

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "covs": self.covs.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "GaussianMixture":
        return cls(d["weights"], d["means"], d["covs"])

    # ------------------------------------------------------------------ sampling

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n draws, (n, D) float32, and their component labels, (n,) long."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covs)[labels]
        x = self.means[labels] + (chol @ z.unsqueeze(-1)).squeeze(-1)
        return x.float(), labels

    # ------------------------------------------------------------------ density and score

    def _components(self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float):
        """Per-component log wₖN(x; αμₖ, Cₖ), (N, K), and Cₖ⁻¹(x − αμₖ), (N, K, D), eq. (1)–(2)."""
        x = x.double()
        n, d = x.shape
        alpha = torch.as_tensor(alpha, dtype=torch.float64).expand(n).reshape(n, 1, 1)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(n).reshape(n, 1, 1)
        eye = torch.eye(d, dtype=torch.float64)
        cov = alpha.unsqueeze(-1) ** 2 * self.covs + (sigma.unsqueeze(-1) ** 2) * eye  # (N, K, D, D)
        diff = x[:, None, :] - alpha * self.means  # (N, K, D)
        chol = torch.linalg.cholesky(cov)
        sol = torch.cholesky_solve(diff.unsqueeze(-1), chol).squeeze(-1)  # C⁻¹ diff
        maha = (diff * sol).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logn = -0.5 * (maha + logdet + d * math.log(2 * math.pi))
        return torch.log(self.weights) + logn, sol

    def log_prob(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        """log p_t(x) of eq. (1), (N,); alpha/sigma scalars or per-example (N,)."""
        logc, _ = self._components(x, alpha, sigma)
        return torch.logsumexp(logc, -1).to(x.dtype)

    def score(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        """∇ₓ log p_t(x) of eq. (2), (N, D)."""
        logc, sol = self._components(x, alpha, sigma)
        r = torch.softmax(logc, -1)
        return -(r.unsqueeze(-1) * sol).sum(1).to(x.dtype)

    def responsibilities(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        """rₖ(x) of eq. (2), (N, K)."""
        logc, _ = self._components(x, alpha, sigma)
        return torch.softmax(logc, -1).to(x.dtype)

    def nearest_component(self, x: Tensor) -> Tensor:
        """Index of the component with the highest density at x, ignoring the weights, (N,).

        Used to read mixture weights off samples: with the weights left out, the
        assignment does not itself favour the heavy components."""
        logc, _ = self._components(x, 1.0, 0.0)
        return (logc - torch.log(self.weights)).argmax(-1)

    def exact_score_fn(self, process) -> Callable[[Tensor, Tensor], Tensor]:
        """s(x, t) = ∇ log p_t(x) under `process` (x: (N, D), t: (N,)), for tests and eval."""

        def fn(x: Tensor, t: Tensor, cond=None) -> Tensor:
            a, s = process.marginal(t.reshape(-1).expand(x.shape[0]))
            return self.score(x, a, s)

        return fn
