"""Sample-quality distances and analytic-truth errors: tensors in, floats / dicts out.

Distances between point clouds (any data; images are flattened to vectors):

- Sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015). For unit
  directions u ~ Uniform(S^{D−1}) the 1-D optimal coupling of two equal-size samples is
  the sorted one, so with P directions and n points per side::

      SW₂(x, y)² = E_u W₂²(uᵀx, uᵀy) ≈ 1/(P n) Σ_p Σ_i ((uₚᵀx)₍ᵢ₎ − (uₚᵀy)₍ᵢ₎)²          (1)

  where (·)₍ᵢ₎ is the i-th order statistic. For N(0, I) against N(m e, I) in D
  dimensions every projection is a shift by m uᵀe, so SW₂² = m² E[(uᵀe)²] = m²/D.
- Unbiased squared maximum mean discrepancy (Gretton et al. 2012, Lemma 6)::

      MMD²_u = 1/(n(n−1)) Σ_{i≠j} k(xᵢ,xⱼ) + 1/(m(m−1)) Σ_{i≠j} k(yᵢ,yⱼ) − 2/(nm) Σ_{i,j} k(xᵢ,yⱼ)  (2)

  with a sum of Gaussian (RBF) kernels k(a, b) = Σ_h exp(−‖a − b‖² / (2h²)). A sum of
  characteristic kernels is characteristic, so the population MMD is 0 iff the
  distributions are equal; several bandwidths keep it sensitive at more than one
  scale. Default bandwidths: the median pairwise distance of y (the median heuristic,
  Gretton et al. 2012) times {0.5, 1, 2}. Being unbiased, the estimate can be slightly
  negative when the two distributions are equal.

Analytic truth for a Gaussian mixture p (see `sbm.gmm`), with x_t = α(t) x₀ + σ(t) ε::

      MSE(t)   = E_{x ~ p_t} ‖s_θ(x, t) − ∇ log p_t(x)‖²                                   (3)
      rel(t)   = MSE(t) / E_{x ~ p_t} ‖∇ log p_t(x)‖²                                       (4)

Evaluator metrics (labelled data; `sbm.evaluator` supplies the classifier and FID)::

      fid       = FID(samples, test),  fid_floor = FID(train, test)                          (5)
      class_tv  = ½ Σ_k |q_k − p_k|,  q = evaluator's class frequencies on the samples,
                  p = class frequencies of the training split                                (6)

Both FIDs use the same number m = min(N_samples, N_train) of generated / training
examples against the whole test split, so their finite-sample biases match and the floor
is what a perfect model scores at this m.

Every function is deterministic given its `generator` / `seed`; none touches the
global RNG.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

#: pairwise-distance blocks are computed this many rows at a time (bounds memory)
_CHUNK = 2048
#: the median heuristic looks at the pairwise distances of at most this many points of y
_MEDIAN_MAX_POINTS = 2048
#: multipliers of the median distance giving the default MMD bandwidths
MMD_BANDWIDTH_FACTORS = (0.5, 1.0, 2.0)


def _flat64(x: Tensor) -> Tensor:
    """(N, ...) -> (N, D) float64 on the CPU."""
    x = torch.as_tensor(x)
    if x.dim() == 1:
        x = x[:, None]
    return x.detach().cpu().reshape(x.shape[0], -1).double()


def _subsample(x: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """n rows of x, without replacement (x itself when it has exactly n rows)."""
    if x.shape[0] == n:
        return x
    idx = torch.randperm(x.shape[0], generator=generator)[:n]
    return x[idx]


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int, generator: torch.Generator | None = None) -> float:
    """SW₂ of eq. (1) between x (N, ...) and y (M, ...) with the same trailing size D.

    The larger set is subsampled (without replacement) to n = min(N, M) points so the
    sorted coupling is one-to-one; then `n_projections` directions u = g/‖g‖,
    g ~ N(0, I_D), are drawn from `generator`. Returns sqrt(mean over directions and
    points of the squared sorted differences)."""
    x, y = _flat64(x), _flat64(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced_wasserstein: dimensions differ ({x.shape[1]} vs {y.shape[1]})")
    if n_projections < 1:
        raise ValueError(f"sliced_wasserstein: n_projections = {n_projections}: must be >= 1")
    n = min(x.shape[0], y.shape[0])
    if n < 1:
        raise ValueError("sliced_wasserstein: empty point set")
    x, y = _subsample(x, n, generator), _subsample(y, n, generator)
    u = torch.randn(n_projections, x.shape[1], generator=generator, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    total = 0.0
    for start in range(0, n_projections, 256):  # (n, 256) projections at a time
        ub = u[start:start + 256]
        px, _ = torch.sort(x @ ub.T, dim=0)
        py, _ = torch.sort(y @ ub.T, dim=0)
        total += float((px - py).pow(2).sum())
    return float((total / (n * n_projections)) ** 0.5)


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """‖aᵢ − bⱼ‖², (len(a), len(b)), clamped at 0 against round-off."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return d.clamp_min_(0.0)


def median_distance(y: Tensor) -> float:
    """Median of the pairwise distances ‖yᵢ − yⱼ‖, i < j, over the first
    min(M, 2048) points of y (M, ...) — the median heuristic bandwidth."""
    y = _flat64(y)[:_MEDIAN_MAX_POINTS]
    if y.shape[0] < 2:
        raise ValueError("median_distance: need at least two points")
    d = _sq_dists(y, y)
    iu = torch.triu_indices(y.shape[0], y.shape[0], offset=1)
    return float(d[iu[0], iu[1]].median().sqrt())


def default_bandwidths(y: Tensor) -> list[float]:
    """Median pairwise distance of y times {0.5, 1, 2} (see module docstring)."""
    med = median_distance(y)
    if med <= 0:
        med = 1.0  # all points coincide: any scale is as good as another
    return [f * med for f in MMD_BANDWIDTH_FACTORS]


def _kernel_sum(a: Tensor, b: Tensor, bandwidths: Sequence[float], same: bool) -> float:
    """Σ_{i,j} k(aᵢ, bⱼ) for the summed RBF kernel; `same`: a is b, skip i = j."""
    inv = torch.tensor([1.0 / (2.0 * h * h) for h in bandwidths], dtype=torch.float64)
    total = 0.0
    for start in range(0, a.shape[0], _CHUNK):
        d = _sq_dists(a[start:start + _CHUNK], b)  # (c, M)
        k = torch.exp(-d[None] * inv[:, None, None]).sum(0)
        if same:
            rows = torch.arange(k.shape[0])
            k[rows, rows + start] = 0.0
        total += float(k.sum())
    return total


def mmd_rbf(x: Tensor, y: Tensor, bandwidths: Sequence[float] | None = None) -> float:
    """Unbiased MMD² of eq. (2) between x (N, ...) and y (M, ...), N, M >= 2.

    bandwidths: the h's of k = Σ_h exp(−‖a−b‖²/(2h²)); None: median pairwise distance
    of y times {0.5, 1, 2}, so comparing several x's against one y uses one kernel."""
    x, y = _flat64(x), _flat64(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd_rbf: dimensions differ ({x.shape[1]} vs {y.shape[1]})")
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"mmd_rbf: need at least two points per set (got {n} and {m})")
    bw = default_bandwidths(y) if bandwidths is None else [float(h) for h in bandwidths]
    if not bw or any(not h > 0 for h in bw):
        raise ValueError(f"mmd_rbf: bandwidths = {bw}: need at least one, all > 0")
    kxx = _kernel_sum(x, x, bw, True) / (n * (n - 1))
    kyy = _kernel_sum(y, y, bw, True) / (m * (m - 1))
    kxy = _kernel_sum(x, y, bw, False) / (n * m)
    return float(kxx + kyy - 2.0 * kxy)


def distance_report(samples: Tensor, test: Tensor, reference: Tensor, n_points: int,
                    n_projections: int, seed: int) -> dict:
    """Sample-to-test distances next to their real-to-real floor.

    samples (Ns, ...), test (Nt, ...), reference (Nr, ...): generated points, held-out
    real points and real *training* points (disjoint from test). All three are
    subsampled to n = min(n_points, Ns, Nt, Nr) with a generator seeded by `seed`; the
    same test subset, the same projection directions and the same MMD bandwidths (from
    the test subset) are used for both comparisons, so

        swd = SW₂(samples, test),   swd_floor = SW₂(reference, test),
        mmd = MMD²_u(samples, test), mmd_floor = MMD²_u(reference, test)

    differ only through the first argument. The floor is what a perfect model would
    score at this n: finite-sample noise. Returns a dict of floats: n, swd, swd_floor,
    swd_ratio (swd / swd_floor; None when the floor is 0), mmd, mmd_floor, and
    mmd_bandwidths (list)."""
    n = min(int(n_points), len(samples), len(test), len(reference))
    if n < 2:
        raise ValueError(f"distance_report: need at least 2 points in every set (n = {n})")
    g = torch.Generator().manual_seed(int(seed))
    s = _subsample(_flat64(samples), n, g)
    t = _subsample(_flat64(test), n, g)
    r = _subsample(_flat64(reference), n, g)
    bw = default_bandwidths(t)
    swd = sliced_wasserstein(s, t, n_projections, torch.Generator().manual_seed(int(seed) + 1))
    swd_floor = sliced_wasserstein(r, t, n_projections, torch.Generator().manual_seed(int(seed) + 1))
    return {
        "n": n,
        "swd": swd,
        "swd_floor": swd_floor,
        "swd_ratio": swd / swd_floor if swd_floor > 0 else None,
        "mmd": mmd_rbf(s, t, bw),
        "mmd_floor": mmd_rbf(r, t, bw),
        "mmd_bandwidths": bw,
    }


# --------------------------------------------------------------------------- Gaussian mixture truth


def _model_device(model) -> torch.device:
    p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return p.device if p is not None else torch.device("cpu")


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
    device = _model_device(model)
    levels = torch.as_tensor(levels).reshape(-1)
    out = []
    for t in levels.tolist():
        x0, _ = gmm.sample(n_points, generator=generator)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        tt = torch.full((n_points,), t, dtype=torch.float32)
        alpha, sigma = process.marginal(tt)
        x = alpha[:, None] * x0 + sigma[:, None] * eps  # (N, D), eq. (1) of sbm.processes
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


def evaluator_metrics(samples: Tensor, train: Tensor, train_y: Tensor, test: Tensor, test_y: Tensor, evaluator,
                      seed: int, fid_fn=None) -> tuple[dict, dict]:
    """FID against its floor, eq. (5), the evaluator's test accuracy and the samples' class
    histogram against the training frequencies, eq. (6). samples/train/test (N, ...) in data
    space; labels (N,). fid_fn(real, fake) -> float: the FID to use (default: on the
    evaluator's features, `sbm.evaluator.fid`). -> (flat scalars, detail)."""
    from .evaluator import accuracy, fid

    fid_fn = fid_fn or (lambda real, fake: fid(real, fake, evaluator))

    m = min(len(samples), len(train))
    g = torch.Generator().manual_seed(int(seed))
    pick_s = torch.randperm(len(samples), generator=g)[:m]
    pick_r = torch.randperm(len(train), generator=g)[:m]
    fid_s, fid_r = fid_fn(test, samples[pick_s]), fid_fn(test, train[pick_r])
    k = evaluator.config["n_classes"]
    counts = torch.bincount(evaluator.predict(samples), minlength=k)
    ref = torch.bincount(train_y.long(), minlength=k).double() / len(train_y)
    q = counts.double() / counts.sum()
    flat = {"fid": fid_s, "fid_floor": fid_r, "fid_ratio": fid_s / fid_r if fid_r > 0 else None,
            "evaluator_acc": accuracy(evaluator, test, test_y), "class_tv": float(0.5 * (q - ref).abs().sum())}
    detail = {"evaluator": {"n_fid": m, "n_test": len(test), "class_counts": counts.tolist(),
                            "train_class_freq": ref.tolist(), **flat}}
    return flat, detail
