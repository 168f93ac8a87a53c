"""The tensor helpers every layer shares (one copy each).

Shapes: a per-example quantity is (N,); a batch is (N, ...) (vectors (N, D), images (N, C, H, W)).
"""

from __future__ import annotations

import torch
from torch import Tensor


def bcast(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-example (N,) tensor to (N, 1, …, 1), broadcasting against `like` (N, ...)."""
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim()))


def per_example(t: Tensor | float, n: int, device=None) -> Tensor:
    """t as a per-example (n,) tensor: a scalar or 0-d / 1-element tensor is repeated, an (n,)
    one is kept. device: where it goes (None: where t is)."""
    t = torch.as_tensor(t, device=device)
    return t.reshape(()).expand(n) if t.numel() == 1 else t.reshape(n)


def finite_rows(x: Tensor) -> Tensor:
    """(N,) bool: which examples of x (N, ...) hold only finite values."""
    return torch.isfinite(x.flatten(1)).all(1)
