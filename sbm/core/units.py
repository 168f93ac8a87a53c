"""Units of likelihood: dequantisation of quantised data, and bits/dim.

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


def bits_per_dim(nll_nats: Tensor, dim: int, n_levels: int | None = None,
                 data_range: Sequence[float] = (-1.0, 1.0)) -> Tensor:
    """Bits/dim of eq. (5) from the continuous NLL in nats of dequantised points, (N,) -> (N,).

    bpd = (nll/D − log Δ)/ln 2 with Δ = bin_width(n_levels, data_range); n_levels None:
    continuous data, plain nll/(D ln 2)."""
    nll = torch.as_tensor(nll_nats, dtype=torch.float64)
    offset = 0.0 if n_levels is None else math.log(bin_width(n_levels, data_range))
    return (nll / dim - offset) / math.log(2)
