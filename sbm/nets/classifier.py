"""Noise-conditional classifier architectures: (x_t, noise conditioning c (N,)) -> logits (N, K).

- vectors (D,): `MLPClassifierNet`, a residual MLP with the sinusoidal embedding of c added
  inside every block (as `MLPNet`), then LayerNorm → SiLU → Linear(hidden, K);
- images / latents (C, H, W): `ConvClassifierNet`, one conv stage per entry cᵢ of `channels` —
  conv3×3 (stride 2 for i > 0) → GroupNorm → + Linear(emb) → SiLU → conv3×3 → GroupNorm → SiLU —
  then global average pooling, Linear(c_last, hidden) → SiLU → Linear(hidden, K).

What the logits mean (p(y | x_t, t)) and how the input is scaled is `sbm.models.classifier`'s.
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from sbm.nets.score import ResBlock, sinusoidal_embedding


def norm_groups(c: int) -> int:
    return math.gcd(8, c)


class _TimeEmbedding(nn.Module):
    """noise_cond (N,) -> (N, hidden): sinusoidal features mapped by a 2-layer MLP."""

    def __init__(self, embedding_dim: int, hidden: int):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.mlp = nn.Sequential(nn.Linear(embedding_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, c: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(c, self.embedding_dim))


class MLPClassifierNet(nn.Module):
    """(x (N, D), c (N,)) -> logits (N, K): residual MLP, time embedding in every block."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 128, depth: int = 2, embedding_dim: int = 64):
        super().__init__()
        self.embed = _TimeEmbedding(embedding_dim, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResBlock(hidden, hidden) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        e = self.embed(c)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.head(h)


class _ConvStage(nn.Module):
    """conv3×3 (stride) → GN → + emb → SiLU → conv3×3 → GN → SiLU; (N, C_in, H, W) -> (N, C, H', W')."""

    def __init__(self, c_in: int, c: int, stride: int, emb: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride=stride, padding=1)
        self.norm1 = nn.GroupNorm(norm_groups(c), c)
        self.emb = nn.Linear(emb, c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.norm2 = nn.GroupNorm(norm_groups(c), c)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        h = nn.functional.silu(self.norm1(self.conv1(h)) + self.emb(e)[:, :, None, None])
        return nn.functional.silu(self.norm2(self.conv2(h)))


class ConvClassifierNet(nn.Module):
    """(x (N, C, H, W), c (N,)) -> logits (N, K): conv stages with stride-2 downsampling
    (all but the first), the time embedding added per stage, global average pool, MLP head."""

    def __init__(self, in_channels: int, n_classes: int, channels: Sequence[int] = (32, 64), hidden: int = 128,
                 embedding_dim: int = 64):
        super().__init__()
        self.embed = _TimeEmbedding(embedding_dim, hidden)
        stages, c_prev = [], in_channels
        for i, c in enumerate(channels):
            stages.append(_ConvStage(c_prev, c, 1 if i == 0 else 2, hidden))
            c_prev = c
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.Linear(c_prev, hidden), nn.SiLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        e = self.embed(c)
        h = x
        for stage in self.stages:
            h = stage(h, e)
        return self.head(h.mean((-2, -1)))
