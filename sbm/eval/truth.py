"""Errors against the analytic truth: tensors in, floats / dicts out.

Analytic truth for a Gaussian mixture p (see `sbm.core.gmm`), with x_t = α(t) x₀ + σ(t) ε::

      MSE(t)   = E_{x ~ p_t} ‖s_θ(x, t) − ∇ log p_t(x)‖²                                   (3)
      rel(t)   = MSE(t) / E_{x ~ p_t} ‖∇ log p_t(x)‖²                                       (4)

Every function is deterministic given its `generator` / `seed`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sbm.core.model import model_dtype_device
from sbm.eval.distances import _flat64


@torch.no_grad()
def score_error_per_level(model, gmm, levels: Tensor, n_points: int,
                          generator: torch.Generator | None = None) -> list[dict]:
    """Score error against the exact mixture score at each time in `levels` (L,), eqs. (3)–(4).

    For each t: x₀ ~ p (the mixture, n_points draws), ε ~ N(0, I), x = α(t) x₀ + σ(t) ε
    — an exact draw from p_t; (α, σ) from `model.process.marginal`. The model score
    s_θ(x, t) (model: anything with `.score(x (N, D), t (N,))` and `.process`) is
    compared with ∇ log p_t(x) (float64) by the per-example squared norm.

    Returns one dict per level, in the order of `levels`: t, alpha, sigma,
    mse = mean ‖s_θ − ∇log p_t‖², score_sq = mean ‖∇log p_t‖², rel_err = mse / score_sq."""
    process = model.process
    _, device = model_dtype_device(model)
    levels = torch.as_tensor(levels).reshape(-1)
    out = []
    for t in levels.tolist():
        x0, _ = gmm.sample(n_points, generator=generator)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        tt = torch.full((n_points,), t, dtype=torch.float32)
        alpha, sigma = process.marginal(tt)
        x = alpha[:, None] * x0 + sigma[:, None] * eps  # (N, D), eq. (1) of sbm.core.processes
        truth = gmm.score(x.double(), alpha.double(), sigma.double())
        sq_err = 0.0
        for start in range(0, n_points, 8192):
            sl = slice(start, start + 8192)
            pred = model.score(x[sl].to(device), tt[sl].to(device)).detach().cpu().double()
            sq_err += float((pred.reshape(truth[sl].shape) - truth[sl]).pow(2).sum())
        sq_ref = float(truth.pow(2).sum())
        mse, score_sq = sq_err / n_points, sq_ref / n_points
        out.append({
            "t": float(t),
            "alpha": float(alpha[0]),
            "sigma": float(sigma[0]),
            "mse": mse,
            "score_sq": score_sq,
            "rel_err": mse / score_sq if score_sq > 0 else float("nan"),
        })
    return out


def mixture_weights(samples: Tensor, gmm) -> list[float]:
    """Fraction of samples (N, D) assigned to each of the K components by
    `gmm.nearest_component` (highest component density, weights left out), (K,) as a list."""
    x = _flat64(samples)
    if x.shape[1] != gmm.dim:
        raise ValueError(f"mixture_weights: samples have dimension {x.shape[1]}, the mixture {gmm.dim}")
    idx = gmm.nearest_component(x)
    counts = torch.bincount(idx, minlength=gmm.n_components).double()
    return (counts / max(x.shape[0], 1)).tolist()


def mean_log_density(x: Tensor, gmm) -> float:
    """Mean of the true log-density log p(xᵢ) over x (N, D) (nats, float64)."""
    x = _flat64(x)
    if x.shape[1] != gmm.dim:
        raise ValueError(f"mean_log_density: points have dimension {x.shape[1]}, the mixture {gmm.dim}")
    return float(gmm.log_prob(x).mean())


def gmm_metrics(model, gmm, samples: Tensor, test: Tensor, n_score_points: int, seed: int,
                progress: bool = True, max_levels: int = 20) -> tuple[dict, dict]:
    """Analytic-truth metrics for Gaussian-mixture data -> (flat scalars, detail tables):
    score error at up to `max_levels` levels of the model's grid, mixture weights read off
    the samples (N, D), mean true log-density of samples and test points (N, D)."""
    levels = model.process.grid()
    if len(levels) > max_levels:
        levels = model.process.grid(max_levels)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for t in tqdm(levels.reshape(-1, 1), desc="evaluate: score error", unit="level", disable=not progress):
        rows += score_error_per_level(model, gmm, t, n_score_points, g)
    true_w = gmm.weights.tolist()
    rec_w = mixture_weights(samples.reshape(len(samples), -1), gmm)
    rel = [r["rel_err"] for r in rows]
    flat = {
        "score_rel_err_mean": sum(rel) / len(rel),
        "score_rel_err_max": max(rel),
        "score_mse_mean": sum(r["mse"] for r in rows) / len(rows),
        "weight_err_max": max(abs(a - b) for a, b in zip(rec_w, true_w)),
        "weight_tv": 0.5 * sum(abs(a - b) for a, b in zip(rec_w, true_w)),
        "logp_samples": mean_log_density(samples.reshape(len(samples), -1), gmm),
        "logp_test": mean_log_density(test.reshape(len(test), -1), gmm),
    }
    flat["logp_gap"] = flat["logp_test"] - flat["logp_samples"]
    for i, r in enumerate(rows):  # level 0 = the noisiest (the grid decreases in t)
        flat[f"score_rel_err_l{i:02d}"] = r["rel_err"]
    detail = {
        "score_levels": rows,
        "weights": {"true": true_w, "recovered": rec_w, "means": gmm.means.tolist()},
        "logp": {"samples": flat["logp_samples"], "test": flat["logp_test"]},
    }
    return flat, detail
