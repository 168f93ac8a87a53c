"""Network architectures only: they map (x, noise conditioning) to a tensor shaped like x.

What that tensor means (ε, score or x̂₀) is decided by `sbm.models`, not here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(c: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """Transformer-style features of the scalar conditioning c ∈ [0, 1], (N,) -> (N, dim).

    emb = [sin(scale·c·ωⱼ), cos(scale·c·ωⱼ)], ωⱼ = 10000^(−j/(dim/2)) (Vaswani et al. 2017,
    as used for DDPM timesteps with scale = number of steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=c.device) / half)
    arg = scale * c.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], -1)
    return nn.functional.pad(emb, (0, dim - 2 * half))


class _ResBlock(nn.Module):
    def __init__(self, hidden: int, emb: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.lin1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb, hidden)
        self.lin2 = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        z = nn.functional.silu(self.lin1(self.norm(h)) + self.emb(e))
        return h + self.lin2(nn.functional.silu(z))


class MLPNet(nn.Module):
    """Noise-conditional residual MLP for vectors: (x (N, D), c (N,)) -> (N, D).

    hidden: width; depth: residual blocks; embedding_dim: size of the sinusoidal
    features of c, mapped through a 2-layer MLP and added inside every block."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, embedding_dim: int = 64):
        super().__init__()
        self.config = {"kind": "mlp", "dim": dim, "hidden": hidden, "depth": depth, "embedding_dim": embedding_dim}
        self.embedding_dim = embedding_dim
        self.embed = nn.Sequential(nn.Linear(embedding_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_ResBlock(hidden, hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        e = self.embed(sinusoidal_embedding(c, self.embedding_dim))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(h)


NETS = {"mlp": MLPNet}


def net_from_config(cfg: dict) -> nn.Module:
    """Rebuild an architecture from the `config` dict it carries (checkpoint loading)."""
    cfg = dict(cfg)
    kind = cfg.pop("kind")
    if kind not in NETS:
        raise ValueError(f"checkpoint names an unknown network kind {kind!r}; known: {', '.join(NETS)}")
    return NETS[kind](**cfg)


def build_net(model_cfg, shape: list[int]) -> nn.Module:
    """The architecture for examples of `shape` from params `model` (vectors: MLPNet)."""
    if len(shape) != 1:
        raise ValueError(f"data of shape {list(shape)}: only vector data (one dimension) is supported yet")
    return MLPNet(shape[0], model_cfg.hidden, model_cfg.depth, model_cfg.embedding_dim)
