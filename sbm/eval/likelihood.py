"""Likelihood metrics of a trained model on test data, under params `likelihood`.

The ODE NLL of a pixel or vector model (`sbm.core.likelihood`, with the exact NLL of the
mixture where it is known), and the latent model's bound on −log p(x) (`sbm.latent.vae`
eqs. 5–7) with log p(z) from the ODE. For quantised data both dequantise first
(`sbm.core.units`), as params `likelihood.dequantization` says, and their details state it:

- "uniform": one draw u ~ U[0, Δ)^D per point, the Jensen bound of units eqs. (4)–(5) (`bpd`);
- "importance (K = …)": K draws per point, the K·N dequantised copies stacked into one ODE
  pass (K times the solves). `bpd` stays the Jensen figure, averaged over the K draws, and
  `bpd_iw` is the importance-weighted bound of units eqs. (6)–(7) from the same draws, never
  above it. The latent bound's analogue, `bpd_bound_iw` / `nll_bound_iw`, weights the K
  dequantisations and the M latent draws together (below).

The ODE's log p is itself an estimate (solver, t_min, prior and, with Hutchinson, probe
noise: `sbm.core.likelihood` eq. 3), so these are bounds only up to it; probe noise biases
the importance-weighted figure down (units' docstring), so compare them with the exact
divergence or several probes. For a ddpm or vp model also the variational bound
(`sbm.core.vlb`), whose decoder is discrete on quantised data: its bits/dim need no
dequantisation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sbm.core.likelihood import dataset_nll
from sbm.core.units import (
    bin_width,
    bits_per_dim,
    dequantize_copies,
    iw_dequantized_nll,
)
from sbm.core.vlb import bound_kind, variational_bound
from sbm.latent.vae import latent_nll_bound


def _dequantization(cfg, n_levels: int | None) -> tuple[int, bool, dict]:
    """(K draws per point, importance-weighted?, the details' statement {"dequantization": "uniform" |
    "importance (K = …)", "dequant_samples": K (importance)}) under params `likelihood`; continuous
    data (n_levels None): (1, False, {})."""
    if n_levels is None:
        return 1, False, {}
    if cfg.dequantization == "uniform":
        return 1, False, {"dequantization": "uniform"}
    k = cfg.dequant_k
    return k, True, {"dequantization": f"importance (K = {k})", "dequant_samples": k}


def _settings(cfg) -> dict:
    return {k: getattr(cfg, k) for k in ("divergence", "probe", "n_probes", "rtol", "atol", "batch_size")}


def nll_metrics(model, test: Tensor, meta: dict, cfg, seed: int, gmm=None,
                progress: bool = True) -> tuple[dict, dict]:
    """ODE NLL of the first cfg.n_points test points (`likelihood` params; dequantised when
    meta has n_levels) -> (flat scalars: nll or bpd, nll_nfe, and with a mixture `gmm` the
    exact nll_exact and nll_gap; detail).

    Quantised data with cfg.dequantization = importance: K = cfg.dequant_k dequantised copies
    of the N points (`dequantize_copies`, one `dataset_nll` pass over the K·N rows), bpd the
    K-draw average of the Jensen bound (units eq. 5) and bpd_iw the importance-weighted one
    (eq. 7) from the same draws. Uniform (K = 1) draws the same u and probes as
    `dataset_nll(points, n_levels=…)` does."""
    points = test[: cfg.n_points]
    n, dim = len(points), points[0].numel()
    n_levels = meta.get("n_levels")
    data_range = tuple(meta.get("data_range") or [-1.0, 1.0])
    k, iw, how = _dequantization(cfg, n_levels)
    g = torch.Generator().manual_seed(seed)
    x = dequantize_copies(points, k, n_levels, data_range, g) if n_levels is not None else points
    summary, logp = dataset_nll(
        model, x, batch_size=cfg.batch_size, divergence=cfg.divergence, probe=cfg.probe,
        n_probes=cfg.n_probes, rtol=cfg.rtol, atol=cfg.atol, generator=g, progress=progress)
    if n_levels is None:
        flat = {"nll": summary["nll"]}
    else:
        logp = logp.reshape(k, n)
        flat = {"bpd": float(bits_per_dim(-logp, dim, n_levels, data_range).mean())}
        if iw:
            flat["bpd_iw"] = float(bits_per_dim(iw_dequantized_nll(logp), dim, n_levels, data_range).mean())
    flat["nll_nfe"] = summary["nll_nfe"]
    if gmm is not None and n_levels is None:
        flat["nll_exact"] = -float(gmm.log_prob(points.reshape(n, -1).double()).mean())
        flat["nll_gap"] = flat["nll"] - flat["nll_exact"]
    detail = {"likelihood": {
        **_settings(cfg), "n": n, "batches": summary["nll_batches"], "dequantized": n_levels is not None,
        "bin_width": bin_width(n_levels, data_range) if n_levels is not None else None,
        **how, **flat,
    }}
    return flat, detail


def latent_nll_metrics(model, vae, test: Tensor, meta: dict, cfg, seed: int, bound_samples: int = 1,
                       progress: bool = True) -> tuple[dict, dict]:
    """The latent model's bound on −log p(x) (sbm.latent.vae eqs. 5–7) for the first cfg.n_points
    test points (dequantised when meta has n_levels), with log p(z_s) of the scaled latents from
    the probability-flow ODE (`dataset_nll` under `likelihood` params) -> (flat scalars
    bpd_bound, bpd_bound_iwae, nll_bound (nats), bound_rec/bound_kl (nats), nll_nfe; detail).
    A bound, not an estimate: the true bits/dim of the model is at most these.

    Quantised data with cfg.dequantization = importance: K = cfg.dequant_k dequantised copies per
    point, each with its M = bound_samples latent draws; the figures above average over the K
    copies, and bpd_bound_iw / nll_bound_iw weight all K·M draws (u_k, z_km) together: with
    q(u, z|x) = U[0, Δ)^D(u) q(z|x + u), P(x) = Δ^D E_q[p(x + u|z) p(z)/q(z|x + u)], so
    log (1/(KM) Σ_km w_km) = log-mean-exp over k of the per-copy IWAE terms (vae eq. 7), i.e.
    units eq. (6) applied to them: never looser than bpd_bound_iwae from the same draws."""
    points = test[: cfg.n_points]
    n, dim = len(points), points[0].numel()
    n_levels = meta.get("n_levels")
    rng = tuple(meta.get("data_range") or [-1.0, 1.0])
    k, iw, how = _dequantization(cfg, n_levels)
    g = torch.Generator().manual_seed(seed)
    x = dequantize_copies(points, k, n_levels, rng, g) if n_levels is not None else points
    nfes = []

    def log_pz(z_s: Tensor) -> Tensor:
        summary, logp = dataset_nll(model, z_s, batch_size=cfg.batch_size, divergence=cfg.divergence,
                                    probe=cfg.probe, n_probes=cfg.n_probes, rtol=cfg.rtol, atol=cfg.atol,
                                    generator=g, progress=progress)
        nfes.append(summary["nll_nfe"])
        return logp.to(z_s.device, z_s.dtype)

    out = latent_nll_bound(vae, x, log_pz, n_samples=bound_samples, n_levels=n_levels, data_range=rng, generator=g)
    flat = {"bpd_bound": float(out["bpd"].mean()), "bpd_bound_iwae": float(out["bpd_iwae"].mean())}
    if iw:
        nll_iw = iw_dequantized_nll(-out["nll_iwae"].reshape(k, n))
        flat["bpd_bound_iw"] = float(bits_per_dim(nll_iw, dim, n_levels, rng).mean())
    flat["nll_bound"] = float(out["nll"].mean())
    if iw:
        flat["nll_bound_iw"] = float(nll_iw.mean())
    flat.update(bound_rec=float(out["rec"].mean()), bound_kl=float(out["kl"].mean()), nll_nfe=sum(nfes) / len(nfes))
    detail = {"likelihood": {
        **_settings(cfg), "n": n, "bound": True, "bound_samples": bound_samples, "dequantized": n_levels is not None,
        "bin_width": bin_width(n_levels, rng) if n_levels is not None else None,
        **how, **flat,
    }}
    return flat, detail


def has_vlb(model) -> bool:
    """Whether the model's process has a variational bound (`sbm.core.vlb.BOUNDS`: ddpm, vp)."""
    return bound_kind(model.process) is not None


def vlb_metrics(model, test: Tensor, meta: dict, cfg, seed: int, progress: bool = True) -> tuple[dict, dict]:
    """The variational bound (sbm.core.vlb) of a ddpm / vp model on the first cfg.n_points test points in
    batches of cfg.batch_size (`likelihood` params: vlb_t_samples, 0 = every t; vlb_variance), noise from
    its own generator seeded by `seed` -> (flat: vlb_nll and its standard error vlb_nll_se in nats per
    example, with quantised data (meta n_levels) vlb_bpd ± vlb_bpd_se of the discrete data (discretised
    decoder, no dequantisation), the prior / reconstruction / diffusion terms, vlb_nfe per batch;
    detail: how). The standard error of the mean is sqrt(Σ se_i²)/n: the Monte Carlo error on these
    test points."""
    from tqdm import tqdm

    points = test[: cfg.n_points]
    n_levels = meta.get("n_levels")
    rng = tuple(meta.get("data_range") or [-1.0, 1.0])
    kind = bound_kind(model.process)
    t_samples = cfg.vlb_t_samples or None
    g = torch.Generator().manual_seed(seed)
    starts = list(range(0, len(points), cfg.batch_size))
    results = []
    with tqdm(total=len(starts), desc=f"evaluate: variational bound ({kind})", disable=not progress) as bar:
        for b, start in enumerate(starts):
            def cb(nfe, b=b):
                bar.set_postfix_str(f"batch {b + 1}/{len(starts)}, nfe {nfe}", refresh=False)

            results.append(variational_bound(model, points[start:start + cfg.batch_size], t_samples=t_samples,
                                             variance=cfg.vlb_variance, n_levels=n_levels, data_range=rng,
                                             generator=g, callback=cb if progress else None))
            bar.update(1)
    cat = {k: torch.cat([getattr(r, k) for r in results]) for k in ("nll", "se", "prior", "recon", "diffusion")}
    n, dim = len(points), points[0].numel()
    nll, se = float(cat["nll"].mean()), float(cat["se"].pow(2).sum().sqrt() / n)
    flat = {"vlb_nll": nll, "vlb_nll_se": se}
    if n_levels is not None:  # −log P of the discrete data: bits/dim without the log Δ of eq. (5)
        flat["vlb_bpd"] = float(bits_per_dim(torch.tensor([nll], dtype=torch.float64), dim)[0])
        flat["vlb_bpd_se"] = se / (dim * math.log(2))
    flat.update(vlb_prior=float(cat["prior"].mean()), vlb_recon=float(cat["recon"].mean()),
                vlb_diffusion=float(cat["diffusion"].mean()),
                vlb_nfe=sum(r.nfe for r in results) / len(results))
    detail = {"bound": kind, **({"variance": cfg.vlb_variance} if kind == "ddpm" else {}),
              "t_samples": cfg.vlb_t_samples,
              "decoder": "discretised_gaussian" if n_levels is not None else "gaussian",
              **({"dequantization": "none"} if n_levels is not None else {}),
              "n": n, "batches": len(results), **flat}
    return flat, detail
