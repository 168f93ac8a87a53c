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


def max_pairwise_distance(x: Tensor, chunk: int = 2048) -> float:
    """max_{i,j} ‖x_i − x_j‖ of x (N, D), exact (float64): NCSN's σ₁ (Song & Ermon 2020, Technique 1).

    Pruned first, exactly: with c the mean and r_i = ‖x_i − c‖, any pair at the diameter
    satisfies diam ≤ r_i + r_j ≤ r_i + max r, so both ends have r_i ≥ lb − max r for any realised
    distance lb ≤ diam. The survivors are compared in row chunks of torch.cdist (memory O(chunk·N)).
    """
    x = x.reshape(len(x), -1).double()
    r = (x - x.mean(0)).norm(dim=1)
    lb = (x - x[r.argmax()]).norm(dim=1).max().item()
    cand = x[r >= (lb - r.max().item()) - 1e-9 * (1 + lb)]
    best = lb
    for i in range(0, len(cand), chunk):
        best = max(best, torch.cdist(cand[i:i + chunk], cand[i:]).max().item())
    return best
