"""Distances between samples and data: tensors in, floats / dicts out.

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

Copies of the training data (`memorisation`): with d(x) = min_j ‖x − x_j^train‖ the distance to the
nearest training example, a sample set that copies its training data has many d = 0 and a small
typical d. The held-out test split is the reference a model that does not copy matches (the idea of
Meehan, Chaudhuri & Dasgupta 2020's data-copying test, read here through two numbers)::

    copies = #{i: d(sᵢ) ≤ tol}/n_s,    nn_ratio = median_i d(sᵢ) / median_j d(tⱼ)                (3)

next to copies_floor, the same fraction for the test points (real data can hold duplicates). A
model that copies has copies ≫ copies_floor and nn_ratio ≪ 1; on quantised data (samples written on
the data's grid, params sampler.quantize) d = 0 means an exact copy.

Every function is deterministic given its `generator` / `seed`; none touches the
global RNG.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

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


def nearest_distances(x: Tensor, reference: Tensor) -> Tensor:
    """d(xᵢ) = min_j ‖xᵢ − reference_j‖ (eq. 3), x (n, ...), reference (m, ...) -> (n,) float64."""
    a, b = _flat64(x), _flat64(reference)
    return torch.cat([_sq_dists(a[i:i + _CHUNK], b).min(1).values for i in range(0, len(a), _CHUNK)]).sqrt()


def memorisation(samples: Tensor, train: Tensor, test: Tensor, tol: float = 1e-6) -> dict[str, float]:
    """Eq. (3): {"copies", "copies_floor", "nn_ratio"} of samples (n, ...) against the training
    examples train (m, ...), the test split test (k, ...) giving the floor and the reference."""
    d_s, d_t = nearest_distances(samples, train), nearest_distances(test, train)
    if not float(d_t.median()) > 0:
        raise ValueError("memorisation: the median test point equals a training example; the test split "
                         "is no reference (is it a copy of the training split?)")
    return {"copies": float((d_s <= tol).double().mean()), "copies_floor": float((d_t <= tol).double().mean()),
            "nn_ratio": float(d_s.median() / d_t.median())}


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


