"""Likelihood metrics of a trained model on test data, under params `likelihood`.

The ODE NLL of a pixel or vector model (`sbm.core.likelihood`, with the exact NLL of the
mixture where it is known), and the latent model's bound on −log p(x) (`sbm.latent.vae`
eqs. 5–7) with log p(z) from the ODE. Quantised data is dequantised first (`sbm.core.units`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sbm.core.likelihood import dataset_nll
from sbm.core.units import bin_width, dequantize
from sbm.latent.vae import latent_nll_bound


def nll_metrics(model, test: Tensor, meta: dict, cfg, seed: int, gmm=None,
                progress: bool = True) -> tuple[dict, dict]:
    """ODE NLL of the first cfg.n_points test points (`likelihood` params; dequantised when
    meta has n_levels) -> (flat scalars: nll or bpd, nll_nfe, and with a mixture `gmm` the
    exact nll_exact and nll_gap; detail)."""
    points = test[: cfg.n_points]
    n_levels = meta.get("n_levels")
    data_range = meta.get("data_range") or [-1.0, 1.0]
    summary, _ = dataset_nll(
        model, points, batch_size=cfg.batch_size, divergence=cfg.divergence, probe=cfg.probe,
        n_probes=cfg.n_probes, rtol=cfg.rtol, atol=cfg.atol, n_levels=n_levels, data_range=data_range,
        generator=torch.Generator().manual_seed(seed), progress=progress)
    flat = {k: summary[k] for k in ("nll", "bpd") if k in summary}
    flat["nll_nfe"] = summary["nll_nfe"]
    if gmm is not None and n_levels is None:
        flat["nll_exact"] = -float(gmm.log_prob(points.reshape(len(points), -1).double()).mean())
        flat["nll_gap"] = flat["nll"] - flat["nll_exact"]
    detail = {"likelihood": {
        **{k: getattr(cfg, k) for k in ("divergence", "probe", "n_probes", "rtol", "atol", "batch_size")},
        "n": summary["n"], "batches": summary["nll_batches"], "dequantized": n_levels is not None,
        "bin_width": bin_width(n_levels, data_range) if n_levels is not None else None,
        **flat,
    }}
    return flat, detail


def latent_nll_metrics(model, vae, test: Tensor, meta: dict, cfg, seed: int, bound_samples: int = 1,
                       progress: bool = True) -> tuple[dict, dict]:
    """The latent model's bound on −log p(x) (sbm.latent.vae eqs. 5–7) for the first cfg.n_points
    test points (dequantised when meta has n_levels), with log p(z_s) of the scaled latents from
    the probability-flow ODE (`dataset_nll` under `likelihood` params) -> (flat scalars
    bpd_bound, bpd_bound_iwae, nll_bound (nats), bound_rec/bound_kl (nats), nll_nfe; detail).
    A bound, not an estimate: the true bits/dim of the model is at most these."""
    points = test[: cfg.n_points]
    n_levels = meta.get("n_levels")
    rng = tuple(meta.get("data_range") or [-1.0, 1.0])
    g = torch.Generator().manual_seed(seed)
    x = dequantize(points, n_levels, rng, g) if n_levels is not None else points
    nfes = []

    def log_pz(z_s: Tensor) -> Tensor:
        summary, logp = dataset_nll(model, z_s, batch_size=cfg.batch_size, divergence=cfg.divergence,
                                    probe=cfg.probe, n_probes=cfg.n_probes, rtol=cfg.rtol, atol=cfg.atol,
                                    generator=g, progress=progress)
        nfes.append(summary["nll_nfe"])
        return logp.to(z_s.device, z_s.dtype)

    out = latent_nll_bound(vae, x, log_pz, n_samples=bound_samples, n_levels=n_levels, data_range=rng, generator=g)
    flat = {"bpd_bound": float(out["bpd"].mean()), "bpd_bound_iwae": float(out["bpd_iwae"].mean()),
            "nll_bound": float(out["nll"].mean()), "bound_rec": float(out["rec"].mean()),
            "bound_kl": float(out["kl"].mean()), "nll_nfe": sum(nfes) / len(nfes)}
    detail = {"likelihood": {
        **{k: getattr(cfg, k) for k in ("divergence", "probe", "n_probes", "rtol", "atol", "batch_size")},
        "n": len(points), "bound": True, "bound_samples": bound_samples, "dequantized": n_levels is not None,
        "bin_width": bin_width(n_levels, rng) if n_levels is not None else None, **flat,
    }}
    return flat, detail
