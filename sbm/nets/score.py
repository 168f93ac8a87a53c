"""Network architectures only: they map (x, noise conditioning) to a tensor shaped like x.

What that tensor means (ε, score or x̂₀) is decided by `sbm.models.score`, not here.
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


class ResBlock(nn.Module):
    def __init__(self, hidden: int, emb: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.lin1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb, hidden)
        self.lin2 = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        z = nn.functional.silu(self.lin1(self.norm(h)) + self.emb(e))
        return h + self.lin2(nn.functional.silu(z))


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of tokens (N, L, D) over the positions where mask (N, L) is True -> (N, D)."""
    if mask is None:
        return tokens.mean(1)
    m = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)


class MLPNet(nn.Module):
    """Noise-conditional residual MLP for vectors: (x (N, D), c (N,)) -> (N, D).

    hidden: width; depth: residual blocks; embedding_dim: size of the sinusoidal
    features of c, mapped through a 2-layer MLP and added inside every block.
    context_dim (optional): the net also takes context tokens (N, L, context_dim) and
    their mask; their masked mean, through a linear map, is added to that embedding
    (the vector counterpart of the U-Net's cross-attention)."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, embedding_dim: int = 64,
                 context_dim: int | None = None):
        super().__init__()
        self.config = {"kind": "mlp", "dim": dim, "hidden": hidden, "depth": depth, "embedding_dim": embedding_dim}
        if context_dim is not None:
            self.config["context_dim"] = int(context_dim)
        self.conditional = context_dim is not None
        self.embedding_dim = embedding_dim
        self.embed = nn.Sequential(nn.Linear(embedding_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.context = nn.Linear(int(context_dim), hidden) if self.conditional else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResBlock(hidden, hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, c: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        e = self.embed(sinusoidal_embedding(c, self.embedding_dim))
        if self.conditional:
            if context is None:
                raise ValueError("this MLP is conditional: it needs context tokens (N, L, D) and their mask")
            e = e + self.context(masked_mean(context.to(e.dtype), mask))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(h)


# --------------------------------------------------------------------------- U-Net (images, latents)


def pad_to_multiple(x: Tensor, multiple: int, value: float = 0.0) -> tuple[Tensor, tuple[int, int]]:
    """Pad (N, C, H, W) on the bottom/right to H', W' divisible by `multiple`. -> (padded, (H, W))."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = nn.functional.pad(x, (0, pw, 0, ph), value=value)
    return x, (h, w)


def check_unet_levels(channels, attention, norm_groups: int, head_dim: int, mid_attention: bool = False,
                      where: str = "model.unet") -> None:
    """Raise ValueError (naming the params key) if the U-Net settings are inconsistent."""
    channels, attention = list(channels), list(attention)
    if not channels:
        raise ValueError(f"{where}.channels = []: need at least one level")
    if len(attention) != len(channels):
        raise ValueError(f"{where}.attention = {attention}: needs one true/false per level "
                         f"({len(channels)} levels in {where}.channels = {channels})")
    for c in channels:
        if c < 1 or c % norm_groups:
            raise ValueError(f"{where}.channels = {channels}: every entry must be a positive multiple of "
                             f"{where}.norm_groups = {norm_groups} (GroupNorm)")
    for c, a in zip(channels + channels[-1:], attention + [mid_attention]):
        if a and c % head_dim:
            raise ValueError(f"{where}.channels = {channels}: levels with attention (and the bottleneck, with "
                             f"mid_attention) need channels divisible by the attention head size {head_dim}")


def plain_attention(module: nn.Module) -> nn.Module:
    """Route every diffusers `Attention` in `module` through the plain `AttnProcessor`
    (softmax(QKᵀ/√d)V with baddbmm) instead of PyTorch's fused scaled-dot-product kernel: the
    sliced objectives (ssm, ssm_vr) differentiate the network twice, and the fused CPU kernel
    has no double backward."""
    from diffusers.models.attention_processor import Attention, AttnProcessor

    for m in module.modules():
        if isinstance(m, Attention):
            m.set_processor(AttnProcessor())
    return module


class UNetNet(nn.Module):
    """Noise-conditional U-Net for images or latents: (x (N, C, H, W), c (N,)) -> (N, C, H, W).

    A diffusers `UNet2DModel` (Ho et al. 2020; Song et al. 2021 style): one resolution level
    per entry of `channels`, `layers_per_block` ResNet blocks per level, self-attention at the
    levels flagged in `attention` (and in the bottleneck if `mid_attention`), GroupNorm with
    `norm_groups` groups. Level i has `channels[i]` channels; every level but the last halves
    the resolution, so there are L − 1 = len(channels) − 1 down-samplings (8×8 digits: use 2
    or 3 levels; 4×4 / 2×2 latents: 1 or 2).

    **Cross-attention** (`context_dim` = D set): a diffusers `UNet2DConditionModel`
    instead (Rombach et al. 2022, the latent-diffusion U-Net): at the flagged levels and the
    bottleneck a transformer block — self-attention, then cross-attention whose keys and
    values are projections of the context tokens (N, L, D), then a GEGLU feed-forward — so
    `forward(x, c, context, mask)` takes the encoded condition; mask (N, L) bool marks the
    real tokens (the padded ones get no attention weight).

    Noise conditioning: c ∈ [0, 1] is passed as the diffusers timestep `time_scale · c`
    (1000 by default), so the sinusoidal embedding sin/cos(time_scale · c · ωⱼ),
    ωⱼ = 10000^(−j/(d/2)), d = channels[0], sees the same range as DDPM's integer timesteps
    0..999 (as `sinusoidal_embedding` does for the MLP); it is then mapped by a 2-layer MLP
    to 4·channels[0] features added inside every ResNet block.

    Attention heads have `head_dim` features; every attention runs through `plain_attention`.

    Sizes: H and W are zero-padded on the bottom/right to multiples of 2^(L−1) and the
    output is cropped back, so any H, W works (e.g. 2×2 latents with 3 levels run at 4×4).

    `config` holds every constructor argument, so `net_from_config(net.config)` rebuilds it."""

    def __init__(self, in_channels: int, height: int, width: int, channels=(64, 128), layers_per_block: int = 2,
                 attention=(False, True), mid_attention: bool = True, norm_groups: int = 16,
                 time_scale: float = 1000.0, head_dim: int = 8, context_dim: int | None = None):
        super().__init__()
        channels, attention = [int(c) for c in channels], [bool(a) for a in attention]
        check_unet_levels(channels, attention, norm_groups, head_dim, mid_attention)
        self.config = {"kind": "unet", "in_channels": int(in_channels), "height": int(height), "width": int(width),
                       "channels": channels, "layers_per_block": int(layers_per_block), "attention": attention,
                       "mid_attention": bool(mid_attention), "norm_groups": int(norm_groups),
                       "time_scale": float(time_scale), "head_dim": int(head_dim)}
        if context_dim is not None:  # absent for unconditional nets (their configs predate it)
            self.config["context_dim"] = int(context_dim)
        self.conditional = context_dim is not None
        self.multiple = 2 ** (len(channels) - 1)
        self.time_scale = float(time_scale)
        size = (-(-int(height) // self.multiple) * self.multiple, -(-int(width) // self.multiple) * self.multiple)
        common = dict(sample_size=size, in_channels=in_channels, out_channels=in_channels,
                      block_out_channels=tuple(channels), layers_per_block=layers_per_block,
                      norm_num_groups=norm_groups, flip_sin_to_cos=True, freq_shift=0)
        if self.conditional:
            from diffusers import UNet2DConditionModel

            self.unet = UNet2DConditionModel(
                **common, cross_attention_dim=int(context_dim),
                down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
                up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
                mid_block_type="UNetMidBlock2DCrossAttn" if mid_attention else "UNetMidBlock2D",
                # diffusers reads this argument as the number of heads (its issue #2011)
                attention_head_dim=tuple(max(c // head_dim, 1) for c in channels),
            )
        else:
            from diffusers import UNet2DModel

            self.unet = UNet2DModel(
                **common, time_embedding_type="positional", attention_head_dim=head_dim, add_attention=mid_attention,
                down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
                up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
            )
        plain_attention(self.unet)

    def forward(self, x: Tensor, c: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x (N, C, H, W), c (N,) or (1,); conditional nets: context (N, L, D), mask (N, L) bool."""
        if x.dim() != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"UNetNet expects (N, {self.config['in_channels']}, H, W) inputs, got {tuple(x.shape)}")
        xp, (h, w) = pad_to_multiple(x, self.multiple)
        t = self.time_scale * c.float().reshape(-1)  # (N,) or (1,): diffusers broadcasts over the batch
        if not self.conditional:
            return self.unet(xp, t, return_dict=False)[0][..., :h, :w]
        d = self.config["context_dim"]
        if context is None or context.dim() != 3 or context.shape[0] != x.shape[0] or context.shape[2] != d:
            shape = None if context is None else tuple(context.shape)
            raise ValueError(f"this U-Net attends to a context of shape (N={x.shape[0]}, L, {d}); got {shape}")
        out = self.unet(xp, t, encoder_hidden_states=context.to(xp.dtype),
                        encoder_attention_mask=None if mask is None else mask.to(xp.dtype), return_dict=False)[0]
        return out[..., :h, :w]


NETS = {"mlp": MLPNet, "unet": UNetNet}


def net_from_config(cfg: dict) -> nn.Module:
    """Rebuild an architecture from the `config` dict it carries (checkpoint loading)."""
    cfg = dict(cfg)
    kind = cfg.pop("kind")
    if kind == "text":
        raise ValueError("this is a text-conditional network: rebuild it with sbm.text.net.text_net_from_config "
                         "(a checkpoint: sbm.text.net.load_text_model)")
    if kind not in NETS:
        raise ValueError(f"checkpoint names an unknown network kind {kind!r}; known: {', '.join(NETS)}")
    return NETS[kind](**cfg)


def build_net(model_cfg, shape: list[int]) -> nn.Module:
    """The architecture for examples of `shape` from params `model`.

    shape (D,): `MLPNet` (model.hidden, model.depth, model.embedding_dim);
    shape (C, H, W) (images, latents): `UNetNet` with the settings of `model.unet`."""
    shape = [int(s) for s in shape]
    if len(shape) == 1:
        return MLPNet(shape[0], model_cfg.hidden, model_cfg.depth, model_cfg.embedding_dim)
    if len(shape) == 3:
        u = model_cfg.unet
        return UNetNet(shape[0], shape[1], shape[2], u.channels, u.layers_per_block, u.attention,
                       u.mid_attention, u.norm_groups)
    raise ValueError(f"data of shape {shape}: supported are vectors (D,) (MLP) and images/latents (C, H, W) (U-Net)")
