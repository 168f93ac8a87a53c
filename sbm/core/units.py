"""Units of likelihood: dequantisation of quantised data, and bits/dim; and samples written on the data's grid.

Quantised data and bits/dim. Data on n_levels evenly spaced values per coordinate, the
grid lo, lo + Δ, …, hi of the model's (scaled) coordinates, Δ = (hi − lo)/(n_levels − 1)
(digits: 17 levels on [−1, 1], Δ = 1/8). `dequantize` adds u ~ U[0, Δ)^D, so the cells
[x, x + Δ)^D of the grid points tile [lo, hi + Δ)^D and the discrete model is
P(x) = ∫_{[0,Δ)^D} p(x + u) du. By Jensen (the variational dequantisation bound with a
uniform q, Theis et al. 2016; Ho et al. 2019)::

    log P(x) = log E_u[p(x + u)] + D log Δ ≥ E_u[log p(x + u)] + D log Δ              (4)

    bits/dim = −log₂ P(x)/D ≤ (E_u[−log p(x + u)]/D − log Δ) / ln 2                    (5)

`bits_per_dim` applies (5) to the continuous NLL (nats) of the dequantised points:
bpd = (nll/D − log Δ)/ln 2, with Δ the bin width *in the model's coordinates*. Check: a
density uniform on the dequantised cube [lo, hi + Δ)^D, (n_levels Δ)^{−D}, gives exactly
log₂ n_levels bits/dim, whatever the data range.

Importance-weighted dequantisation. The importance-weighted bound of Burda et al. (2016)
with the same uniform q (variational dequantisation, Ho et al. 2019, with q = U[0, Δ)^D;
Zheng et al. 2023, i-DODE), from K draws u_1..u_K ~ U[0, Δ)^D per point::

    log P(x) ≥ E_{u_1..K}[log (1/K Σ_k p(x + u_k))] + D log Δ                          (6)

    bits/dim ≤ (E_{u_1..K}[−log (1/K Σ_k p(x + u_k))]/D − log Δ) / ln 2                (7)

(6) is (4) for K = 1, never decreases with K in expectation (Burda et al., Thm 1) and
tends to log P(x) as K → ∞ (the average of p(x + u_k) tends to E_u[p(x + u)]). Per draw the
K-sample log-mean-exp is also ≥ the K-sample mean of log p(x + u_k) (Jensen), so (7) from K
draws is never above the K-draw average of (5) from the same draws. `iw_dequantized_nll`
is the bracket of (7) from the (K, N) log-densities; `bits_per_dim` turns it into bits/dim
exactly as it does (5). If log p is itself a noisy unbiased estimate (the Hutchinson ODE of
`sbm.core.likelihood`), (5) gains no bias but (6) gains an optimistic one: E[e^ε] ≥ 1 for
noise ε, up to ≈ Var(ε)/2 nats as K grows (Gaussian ε); the exact divergence adds no such noise.

Samples of quantised data. `quantize` writes a continuous sample x in the data's own format::

    Q(x) = lo + Δ · round((clamp(x, lo, hi) − lo)/Δ)                                   (8)

(params `sampler.quantize`; `sbm.latent.vae.decode_samples` applies it to every image sample).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


def bin_width(n_levels: int, data_range: Sequence[float] = (-1.0, 1.0)) -> float:
    """Δ = (hi − lo)/(n_levels − 1): the spacing of the quantisation grid lo..hi (module docstring)."""
    lo, hi = float(data_range[0]), float(data_range[1])
    if n_levels < 2:
        raise ValueError(f"n_levels = {n_levels}: need at least 2 levels")
    if not hi > lo:
        raise ValueError(f"data_range = {list(data_range)}: need low < high")
    return (hi - lo) / (n_levels - 1)


def quantize(x: Tensor, n_levels: int, data_range: Sequence[float] = (-1.0, 1.0)) -> Tensor:
    """x (N, ...) clamped to [lo, hi] and rounded to the nearest grid point lo + kΔ (eq. 8), same shape/dtype.

    What a sample of quantised data is written as: the score model trains on the grid values, so its
    samples lie near them, and rounding to the nearest one is the discrete decoder of Ho et al. (2020,
    eq. 13: bins [x − Δ/2, x + Δ/2] about each value, the end bins open) taken at its mode — as an
    8-bit image is written at its bit depth. (Unlike `dequantize`'s cells [x, x + Δ), which serve the
    likelihood of eq. 4, not the sampler.) Idempotent, and the identity on the grid."""
    delta = bin_width(n_levels, data_range)
    lo, hi = float(data_range[0]), float(data_range[1])
    k = ((x.double().clamp(lo, hi) - lo) / delta).round().clamp(0, n_levels - 1)
    return (lo + delta * k).to(x.dtype)


def dequantize(x: Tensor, n_levels: int, data_range: Sequence[float] = (-1.0, 1.0),
               generator: torch.Generator | None = None) -> Tensor:
    """x + u, u ~ U[0, Δ) per coordinate (eq. 4): x (N, ...) on the grid lo + kΔ, k = 0..n_levels−1.

    Raises ValueError if x is not on that grid (wrong n_levels or data_range)."""
    delta = bin_width(n_levels, data_range)
    lo = float(data_range[0])
    k = (x.double() - lo) / delta
    off = (k - k.round()).abs().max() if x.numel() else torch.tensor(0.0)
    if float(off) > 1e-3 or (x.numel() and (float(k.min()) < -1e-3 or float(k.max()) > n_levels - 1 + 1e-3)):
        raise ValueError(f"dequantize: values are not on the {n_levels}-level grid of {list(data_range)} "
                         f"(spacing {delta:.6g}); check n_levels / data_range")
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64)
    return (x.double() + delta * u).to(x.dtype)


def dequantize_copies(x: Tensor, k: int, n_levels: int, data_range: Sequence[float] = (-1.0, 1.0),
                      generator: torch.Generator | None = None) -> Tensor:
    """K dequantised copies of every point for eqs. (6)–(7): x (N, ...) -> (K·N, ...), copy k of
    point n at row k·N + n (so log-densities of the rows reshape to (K, N)), each with its own
    u ~ U[0, Δ)^D from one `dequantize` call: K = 1 draws exactly what `dequantize(x)` draws."""
    if k < 1:
        raise ValueError(f"dequantize_copies: k = {k}: need at least one draw")
    return dequantize(x.repeat(k, *([1] * (x.dim() - 1))), n_levels, data_range, generator)


def bits_per_dim(nll_nats: Tensor, dim: int, n_levels: int | None = None,
                 data_range: Sequence[float] = (-1.0, 1.0)) -> Tensor:
    """Bits/dim of eq. (5) from the continuous NLL in nats of dequantised points, (N,) -> (N,).

    bpd = (nll/D − log Δ)/ln 2 with Δ = bin_width(n_levels, data_range); n_levels None:
    continuous data, plain nll/(D ln 2)."""
    nll = torch.as_tensor(nll_nats, dtype=torch.float64)
    offset = 0.0 if n_levels is None else math.log(bin_width(n_levels, data_range))
    return (nll / dim - offset) / math.log(2)


def iw_dequantized_nll(logp: Tensor) -> Tensor:
    """The bracket of eq. (7), −log (1/K Σ_k p(x + u_k)), nats: logp (K, N) -> (N,) float64.

    logp[k, n] = log p(x_n + u_{k,n}), the continuous log-density of the k-th dequantised copy
    of point n (u ~ U[0, Δ)^D, `dequantize`). Computed as log K − logsumexp_k (stable for any
    magnitude). K = 1: −logp[0], the uniform (Jensen) term of (5); bits/dim of eq. (7) by
    `bits_per_dim(iw_dequantized_nll(logp), D, n_levels, data_range)`."""
    logp = torch.as_tensor(logp, dtype=torch.float64)
    if logp.dim() != 2 or logp.shape[0] < 1:
        raise ValueError(f"iw_dequantized_nll: expected log-densities of shape (K, N) with K >= 1, "
                         f"got {tuple(logp.shape)}")
    return math.log(logp.shape[0]) - torch.logsumexp(logp, 0)
