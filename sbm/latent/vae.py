"""Latent models: a KL-regularised autoencoder, its latent scale and the likelihood bound through it.

The autoencoder (Kingma & Welling 2014; the "KL-f" autoencoder of Rombach et al. 2022) is a
diffusers `AutoencoderKL` read as a VAE with a Gaussian encoder and a Gaussian decoder::

    q_φ(z|x) = N(z; μ_φ(x), diag σ_φ(x)²)              encoder: (N, C, H, W) -> 2 × (N, c, H/f, W/f)   (1)
    p_θ(x|z) = N(x; x̂_θ(z), σ_dec² I)                  decoder: (N, c, H/f, W/f) -> (N, C, H, W)       (2)

with f = 2^(len(vae.channels) − 1) and c = vae.latent_channels. The decoder variance is
either fixed (`vae.decoder_std` = σ_dec) or learned: one log σ_dec per image channel, a
parameter of the network initialised at log 0.1 and trained with the rest. Either way
p(x|z) is a proper density, so the bound (5) below is a real likelihood bound.

Training loss per example (`vae_loss`), with z = μ + σ ⊙ ε (reparameterisation)::

    L(x) = −log p_θ(x|z) + β · KL(q(z|x) ‖ N(0, I))                                          (3)
    −log p_θ(x|z) = Σ_pixels [(x − x̂)² / (2σ_dec²) + log σ_dec + ½ log 2π]    (Gaussian NLL, summed)
    KL = ½ Σ_latent [μ² + σ² − 1 − log σ²]

β = `vae.kl_weight`; β = 1 makes (3) the negative ELBO.

Latent scale (Rombach et al. 2022, sec. 4.3 / appendix G): the score model is trained on
z_s = s · z with s = 1 / std(z), z ~ q(z|x) over the training set (`latent_scale`), so
its latents have unit variance like the data the noise processes are tuned for.

Likelihood bound (Kingma & Welling 2014, eq. 3; Vahdat et al. 2021, LSGM eq. 2)::

    −log p(x) ≤ E_{q(z|x)}[−log p(x|z) − log p(z) + log q(z|x)]                              (5)

with any latent prior p(z), e.g. the score model's probability-flow ODE density on the
*scaled* latents, given as `log_pz(z_s) -> (N,)`. The change of variables z_s = s z gives::

    log p(z) = log p_s(s z) + d log s,     d = numel(z)                                       (6)

`latent_nll_bound` also returns the importance-weighted bound (Burda et al. 2016)::

    −log p(x) ≤ −log (1/K Σ_k w_k),  w_k = p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)           (7)

which is never looser than the K-sample average of (5) (Jensen, for every draw). Both are
bounds in expectation over the draws z_k: E[(5)] = −log p(x) + KL(q(z|x) ‖ p(z|x)), and
E[(7)] − (−log p(x)) ≥ 0 falls as O(1/K); a single estimate can dip below −log p(x) by its
Monte-Carlo error. Both are exact, for every draw, when q(z|x) is the true posterior
p(z|x) (then every w_k = p(x)). Bits/dim use `sbm.core.units.bits_per_dim`
(with `n_levels` for quantised data: x must then be dequantised).

A *latent model* is anything with `posterior(x) -> (mean, logvar)`, `decode(z) -> x̂`,
`decoder_log_prob(x, z) -> (N,)` and a float `scale`; `latent_scale`, `reconstruction_metrics`
and `latent_nll_bound` need nothing else (the tests use an analytic linear-Gaussian one).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from sbm import io
from sbm.core.units import bits_per_dim, quantize
from sbm.latent.space import LATENTS_FILE, SPACE_FILE, VAE_FILE, read_space
from sbm.nets.score import pad_to_multiple

LOG_2PI = math.log(2 * math.pi)
#: initial σ_dec of a learned decoder variance
LEARNED_STD_INIT = 0.1


def _unwrap(net: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel-style wrapper (accelerate.prepare)."""
    return getattr(net, "module", net)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Σ over all but the batch dim of log N(x; mean, exp(log_std)²), (N, ...) -> (N,).

    log_std broadcasts against x (a scalar, or (C, 1, 1) for one σ per channel)."""
    z = (x - mean) * torch.exp(-log_std)
    lp = -0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI
    return lp.flatten(1).sum(1)


def diag_gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, diag e^logvar) ‖ N(0, I)) = ½ Σ[μ² + σ² − 1 − log σ²], (N, ...) -> (N,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


# --------------------------------------------------------------------------- the network


class VAENet(nn.Module):
    """The trainable part: an AutoencoderKL plus the decoder's log σ_dec (parameter or buffer).

    `forward(x) -> (rec_nll (N,), kl (N,))` computes the two terms of eq. (3) for one
    reparameterised z ~ q(z|x), so a data-parallel wrapper sees every parameter in forward."""

    def __init__(self, shape: Sequence[int], channels: Sequence[int], layers_per_block: int, latent_channels: int,
                 norm_groups: int, decoder_std: float | None):
        super().__init__()
        from diffusers import AutoencoderKL

        c, h, w = (int(s) for s in shape)
        self.shape = (c, h, w)
        self.multiple = 2 ** (len(channels) - 1)
        self.ae = AutoencoderKL(
            in_channels=c, out_channels=c, down_block_types=("DownEncoderBlock2D",) * len(channels),
            up_block_types=("UpDecoderBlock2D",) * len(channels), block_out_channels=tuple(int(k) for k in channels),
            layers_per_block=int(layers_per_block), latent_channels=int(latent_channels),
            norm_num_groups=int(norm_groups), sample_size=max(h, w), scaling_factor=1.0,
        )
        init = torch.full((c, 1, 1), math.log(LEARNED_STD_INIT if decoder_std is None else decoder_std))
        if decoder_std is None:
            self.log_std = nn.Parameter(init)
        else:
            self.register_buffer("log_std", init)

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, log σ²) of q(z|x), eq. (1): x (N, C, H, W) -> two (N, c, ⌈H/f⌉, ⌈W/f⌉)."""
        xp, _ = pad_to_multiple(x, self.multiple)
        dist = self.ae.encode(xp).latent_dist
        return dist.mean, dist.logvar

    def decode(self, z: Tensor) -> Tensor:
        """x̂(z), the mean of p(x|z), eq. (2), cropped to the data's (N, C, H, W)."""
        return self.ae.decode(z).sample[..., : self.shape[1], : self.shape[2]]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.moments(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        rec = -gaussian_log_prob(x, self.decode(z), self.log_std)
        return rec, diag_gaussian_kl(mean, logvar)


class VAE(nn.Module):
    """The KL autoencoder as a latent model (module docstring); `.net` is what `sbm.train.loop` trains.

    data shape (C, H, W); latents (latent_channels, ⌈H/f⌉, ⌈W/f⌉), f = 2^(len(channels) − 1).
    `scale` is the latent scale factor s of eq. (6) (1 until `latent_scale` has been applied)."""

    def __init__(self, shape: Sequence[int], channels: Sequence[int] = (32, 64, 64), layers_per_block: int = 1,
                 latent_channels: int = 4, norm_groups: int = 16, kl_weight: float = 1.0,
                 decoder_std: float | None = None, scale: float = 1.0):
        super().__init__()
        shape = [int(s) for s in shape]
        if len(shape) != 3:
            raise ValueError(f"the VAE needs image data (C, H, W); got examples of shape {shape} "
                             "(vector data has no latent model here)")
        channels = [int(c) for c in channels]
        for c in channels:
            if c % norm_groups:
                raise ValueError(f"vae.channels = {channels}: every entry must be a multiple of "
                                 f"vae.norm_groups = {norm_groups}")
        if decoder_std is not None and not decoder_std > 0:
            raise ValueError(f"vae.decoder_std = {decoder_std}: must be > 0 (or null for a learned σ)")
        self.config = {"shape": shape, "channels": channels, "layers_per_block": int(layers_per_block),
                       "latent_channels": int(latent_channels), "norm_groups": int(norm_groups),
                       "kl_weight": float(kl_weight), "decoder_std": None if decoder_std is None else float(decoder_std)}
        self.net = VAENet(shape, channels, layers_per_block, latent_channels, norm_groups, decoder_std)
        self.kl_weight = float(kl_weight)
        self.scale = float(scale)

    @property
    def data_shape(self) -> tuple[int, int, int]:
        return tuple(self.config["shape"])

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        c, h, w = self.config["shape"]
        f = 2 ** (len(self.config["channels"]) - 1)
        return (self.config["latent_channels"], -(-h // f), -(-w // f))

    def _param(self) -> Tensor:
        return next(_unwrap(self.net).parameters())

    def _in(self, x: Tensor) -> Tensor:
        p = self._param()
        return x.reshape(x.shape[0], *self.data_shape).to(p.device, p.dtype)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, log σ²) of q(z|x), eq. (1); x (N, C, H, W) (or flat (N, C·H·W))."""
        return _unwrap(self.net).moments(self._in(x))

    def encode(self, x: Tensor, *, sample: bool = False, generator: torch.Generator | None = None,
               scaled: bool = False) -> Tensor:
        """z = μ(x) (sample=False) or z ~ q(z|x); times `scale` if scaled. -> (N, *latent_shape)."""
        mean, logvar = self.posterior(x)
        z = mean
        if sample:
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device="cpu").to(mean.device)
            z = mean + torch.exp(0.5 * logvar) * eps
        return z * self.scale if scaled else z

    def decode(self, z: Tensor, *, scaled: bool = False) -> Tensor:
        """x̂(z), the decoder mean, eq. (2); z_s / scale first if scaled. -> (N, C, H, W)."""
        z = z.to(self._param().device, self._param().dtype)
        return _unwrap(self.net).decode(z / self.scale if scaled else z)

    def decoder_std(self) -> Tensor:
        """σ_dec per image channel, (C,)."""
        return _unwrap(self.net).log_std.detach().exp().flatten()

    def decoder_log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) of eq. (2), summed over pixels: x (N, C, H, W), z unscaled -> (N,)."""
        x = self._in(x)
        return gaussian_log_prob(x, self.decode(z), _unwrap(self.net).log_std)

    def to_config(self) -> dict:
        return dict(self.config)


def vae_loss(model: VAE, x: Tensor, cond=None) -> Tensor:
    """Eq. (3) per example: Gaussian NLL summed over pixels + β·KL(q(z|x) ‖ N(0, I)), (N,).

    The signature of `sbm.core.losses` (`cond` is ignored), so `sbm.train.loop.train(vae, vae_loss, ...)`
    trains it."""
    rec, kl = model.net(x.reshape(x.shape[0], *model.data_shape))
    return rec + model.kl_weight * kl


def build_vae(cfg, shape: Sequence[int]) -> VAE:
    """The VAE of params `vae` (`sbm.config.params.VAEParams`) for examples of `shape` = (C, H, W)."""
    return VAE(shape, cfg.channels, cfg.layers_per_block, cfg.latent_channels, cfg.norm_groups, cfg.kl_weight,
               cfg.decoder_std)


def vae_from_config(cfg: dict, scale: float = 1.0) -> VAE:
    return VAE(**cfg, scale=scale)


def save_vae(path: str | Path, vae: VAE, extra: dict | None = None) -> None:
    """Weights (net.*) + config + latent scale in one safetensors file (sbm.io), never pickle."""
    io.save_module(path, vae, "vae", {"vae": vae.to_config(), "scale": vae.scale, **(extra or {})})


def load_vae(path: str | Path) -> tuple[VAE, dict]:
    """Rebuild a VAE written by `save_vae`. -> (vae in eval mode, meta)."""
    return io.load_module(path, "vae", lambda meta: vae_from_config(meta["vae"], meta.get("scale", 1.0)))


# --------------------------------------------------------------------------- latents, scale, metrics


def _batches(n: int, batch_size: int | None):
    step = n if not batch_size else batch_size
    for i in range(0, n, max(step, 1)):
        yield slice(i, min(i + step, n))


@torch.no_grad()
def encode_dataset(model, x: Tensor, *, sample: bool = True, scaled: bool = True,
                   generator: torch.Generator | None = None, batch_size: int = 256) -> Tensor:
    """Latents of every example, (N, *latent_shape), on the CPU: z ~ q(z|x) (sample) or μ(x),
    times model.scale if scaled (the score model's training data: z_s = s z)."""
    out = []
    for sl in _batches(len(x), batch_size):
        mean, logvar = model.posterior(x[sl])
        z = mean
        if sample:
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
            z = mean + torch.exp(0.5 * logvar) * eps
        out.append((z * model.scale if scaled else z).cpu())
    return torch.cat(out)


def latent_scale(model, x_train: Tensor, *, sample: bool = True, generator: torch.Generator | None = None,
                 batch_size: int = 256) -> float:
    """s = 1 / std(z) over all coordinates of z ~ q(z|x) (or μ(x)), x in `x_train` (Rombach et al.)."""
    z = encode_dataset(model, x_train, sample=sample, scaled=False, generator=generator, batch_size=batch_size)
    std = float(z.double().std())
    if not std > 0:
        raise ValueError(f"latents have standard deviation {std}; cannot scale them to unit variance")
    return 1.0 / std


@torch.no_grad()
def reconstruction_metrics(model, x_test: Tensor, *, batch_size: int = 256,
                           peak_to_peak: float = 2.0) -> dict[str, float]:
    """{mse, psnr, kl} on `x_test` with the deterministic reconstruction x̂ = decode(μ(x)).

    mse: mean squared error per coordinate over the whole set; psnr = 10 log10(P² / mse)
    dB with P = peak_to_peak = 2 for data in [-1, 1]; kl: mean KL(q(z|x) ‖ N(0, I)) per
    example in nats."""
    se, kl, n, count = 0.0, 0.0, 0, 0
    for sl in _batches(len(x_test), batch_size):
        mean, logvar = model.posterior(x_test[sl])
        xb = x_test[sl].reshape(mean.shape[0], -1).to(mean.device, mean.dtype)
        rec = model.decode(mean).reshape(mean.shape[0], -1)
        se += float((rec - xb).double().pow(2).sum())
        count += xb.numel()
        kl += float(diag_gaussian_kl(mean, logvar).double().sum())
        n += mean.shape[0]
    mse = se / count
    return {"mse": mse, "psnr": 10.0 * math.log10(peak_to_peak**2 / mse) if mse > 0 else float("inf"),
            "kl": kl / n}


# --------------------------------------------------------------------------- the likelihood bound


def standard_normal_log_pz(std: float = 1.0) -> Callable[[Tensor], Tensor]:
    """log N(z; 0, std² I) per example, a `log_pz` for `latent_nll_bound`.

    With the VAE's own training prior N(0, I) on z and scale s, pass std = s (z_s = s z)."""

    def log_pz(z: Tensor) -> Tensor:
        d = z[0].numel()
        return -0.5 * z.flatten(1).pow(2).sum(1) / std**2 - d * math.log(std) - 0.5 * d * LOG_2PI

    return log_pz


def latent_nll_bound(model, x: Tensor, log_pz: Callable[[Tensor], Tensor], n_samples: int = 1,
                     scale: float | None = None, *, n_levels: int | None = None,
                     data_range: Sequence[float] = (-1.0, 1.0), generator: torch.Generator | None = None,
                     batch_size: int | None = None) -> dict[str, Tensor]:
    """Upper bounds on −log p(x) through the latent model, eqs. (5)–(7); x: (N, ...).

    log_pz(z_s) -> (N,): log-density of the prior over *scaled* latents z_s = s z
    (s = `scale`, default `model.scale`); eq. (6) turns it into log p(z). n_samples = K
    draws z_k ~ q(z|x) per example. Returns float64 (N,) tensors on the CPU:

    - nll:  K-sample average of (5), nats      - nll_iwae: eq. (7), nats (≤ nll)
    - bpd, bpd_iwae: the same in bits/dim (`sbm.core.units.bits_per_dim`, D = numel of
      an example; with n_levels, x must be dequantised data of that grid)
    - rec:  E_q[−log p(x|z)]                     - kl:  E_q[log q(z|x) − log p(z)]   (nll = rec + kl)
    """

    if n_samples < 1:
        raise ValueError(f"n_samples = {n_samples}: need at least one latent sample")
    s = float(model.scale if scale is None else scale)
    if not s > 0:
        raise ValueError(f"latent scale = {s}: must be > 0")
    recs, kls, iwaes = [], [], []
    for sl in _batches(len(x), batch_size):
        xb = x[sl]
        with torch.no_grad():
            mean, logvar = model.posterior(xb)
        std = torch.exp(0.5 * logvar)
        d = mean[0].numel()
        rec_sum = torch.zeros(mean.shape[0], dtype=torch.float64)
        kl_sum = torch.zeros(mean.shape[0], dtype=torch.float64)
        log_w = []
        for _ in range(n_samples):
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
            z = mean + std * eps
            log_q = (-0.5 * (eps.pow(2) + logvar + LOG_2PI)).flatten(1).sum(1)
            with torch.no_grad():
                log_px_z = model.decoder_log_prob(xb, z)
            log_p_z = log_pz(s * z).detach() + d * math.log(s)  # eq. (6)
            rec_sum -= log_px_z.double().cpu()
            kl_sum += (log_q - log_p_z).double().cpu()
            log_w.append((log_px_z + log_p_z - log_q).double().cpu())
        recs.append(rec_sum / n_samples)
        kls.append(kl_sum / n_samples)
        iwaes.append(-(torch.logsumexp(torch.stack(log_w), 0) - math.log(n_samples)))
    rec, kl, iwae = torch.cat(recs), torch.cat(kls), torch.cat(iwaes)
    nll = rec + kl
    dim = x[0].numel()
    return {"nll": nll, "nll_iwae": iwae, "rec": rec, "kl": kl,
            "bpd": bits_per_dim(nll, dim, n_levels, data_range),
            "bpd_iwae": bits_per_dim(iwae, dim, n_levels, data_range)}


# --------------------------------------------------------------------------- the score model's space
#
# The train_vae stage writes a *space directory* that says where the score model lives:
#
#     space.json           {"space": "latent" | "pixel", "data_shape": [C, H, W], "shape": model's
#                          example shape, "scale": s (latent only)}
#     vae.safetensors      latent only: the VAE with its scale (save_vae)
#     latents.safetensors  latent only: "train" and "test", one z ~ q(z|x) per example, times s
#
# A pixel space holds only space.json: the score model is trained on the data itself.


def write_space(out_dir: str | Path, data_shape: Sequence[int], vae: VAE | None = None,
                latents: dict[str, Tensor] | None = None) -> dict:
    """Write a space directory (see above); `vae` None = pixel space. -> the space.json dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (VAE_FILE, LATENTS_FILE):
        (out / name).unlink(missing_ok=True)
    info = {"space": "pixel", "data_shape": [int(s) for s in data_shape], "shape": [int(s) for s in data_shape]}
    if vae is not None:
        if not latents or set(latents) != {"train", "test"}:
            raise ValueError("a latent space needs the scaled latents of the train and test splits")
        save_vae(out / VAE_FILE, vae)
        io.save_tensors(out / LATENTS_FILE, {k: v.contiguous() for k, v in latents.items()},
                        {"kind": "latents", "scale": vae.scale})
        info.update(space="latent", shape=list(vae.latent_shape), scale=vae.scale)
    io.write_json(out / SPACE_FILE, info)
    return info


def load_space_vae(space_dir: str | Path) -> VAE | None:
    """The VAE of a latent space directory, or None for a pixel space."""
    if read_space(space_dir)["space"] == "pixel":
        return None
    return load_vae(Path(space_dir) / VAE_FILE)[0]


@torch.no_grad()
def decode_samples(vae: VAE | None, z_s: Tensor, *, data_range: Sequence[float] | None = None,
                   n_levels: int | None = None, batch_size: int = 1000) -> Tensor:
    """Samples of the score model -> data space: x̂ = decode(z_s / s) for a latent model (the
    decoder mean, eq. 2), unchanged for a pixel model; clamped to `data_range` if given, and with
    `n_levels` too rounded to the data's grid of that many levels (`sbm.core.units.quantize`, eq. 8:
    params `sampler.quantize`). (N, ...)."""
    if n_levels is not None and data_range is None:
        raise ValueError("decode_samples: n_levels needs the data_range of its grid")
    if vae is None:
        x = z_s
    else:
        x = torch.cat([vae.decode(z_s[i:i + batch_size], scaled=True).float().cpu()
                       for i in range(0, len(z_s), batch_size)])
    if n_levels is not None:
        return quantize(x, n_levels, data_range)
    return x.clamp(*data_range) if data_range is not None else x


