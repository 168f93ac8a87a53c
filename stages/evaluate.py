"""DVC stage `evaluate`: how close are the samples to the data, how likely the test data is
under the model, and (for the Gaussian mixture) how close is the learned score to the exact one.

Reads params (seed, eval, likelihood), data/prepared (train + test splits, meta), the samples
and the score model; writes reports/metrics.json (flat scalars, for `dvc metrics show` /
`dvc exp show`) and reports/eval_detail.json (per-level tables, weights, likelihood settings).

Distances (sbm.metrics.distance_report): SW₂ and MMD² of samples vs test points, next to
the floor — the same distances from real training points to the same test points.
Likelihood (sbm.likelihood.dataset_nll): the probability-flow ODE log-likelihood of the first
`likelihood.n_points` test points — `nll` (mean nats per example) for continuous data, or,
when meta.json has n_levels (quantised data, e.g. digits), `bpd`: bits/dim of the points
dequantised by u ~ U[0, Δ) (the variational bound of sbm.likelihood, eq. 5); `nll_nfe`,
the mean number of score evaluations per ODE solve.
Gaussian mixture only: score error per noise level against the exact score, mixture
weights read off the samples, mean true log-density of samples and of test points, and
`nll_exact` = −mean true log p₀ of the same likelihood points, `nll_gap` = nll − nll_exact.
"""

from __future__ import annotations

import argparse
import math

import torch
from tqdm import tqdm

from sbm import data, io, likelihood, metrics, models
from sbm.config import load_params
from sbm.gmm import GaussianMixture
from sbm.stage import run_stage

#: evaluate the score error on at most this many noise levels of the model's grid
MAX_SCORE_LEVELS = 20


def _clean(v):
    """JSON-safe copy: floats that are not finite become None (JSON has no NaN)."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def load_samples(path) -> tuple[torch.Tensor, dict]:
    """x (N, ...) of a samples file; ValueError naming the file if any sample is not finite."""
    tensors, meta = io.load_tensors(path)
    if "x" not in tensors:
        raise ValueError(f"{path}: no tensor 'x' (holds {', '.join(tensors) or 'nothing'}); not a samples file")
    x = tensors["x"]
    bad = int((~torch.isfinite(x.reshape(len(x), -1))).any(1).sum()) if len(x) else 0
    if bad:
        raise ValueError(f"{path}: {bad} of {len(x)} samples are not finite (NaN/inf); "
                         "the sampler diverged: lower sampler.step_size or check the model")
    if len(x) < 2:
        raise ValueError(f"{path}: {len(x)} samples; need at least 2 to evaluate")
    return x, meta


def evaluate_gmm(model, gmm: GaussianMixture, samples, test, n_score_points: int, seed: int,
                 progress: bool = True) -> tuple[dict, dict]:
    """Analytic-truth metrics for Gaussian-mixture data -> (flat metrics, detail)."""
    levels = model.process.grid()
    if len(levels) > MAX_SCORE_LEVELS:
        levels = model.process.grid(MAX_SCORE_LEVELS)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for t in tqdm(levels.reshape(-1, 1), desc="evaluate: score error", unit="level", disable=not progress):
        rows += metrics.score_error_per_level(model, gmm, t, n_score_points, g)
    true_w = gmm.weights.tolist()
    rec_w = metrics.mixture_weights(samples.reshape(len(samples), -1), gmm)
    rel = [r["rel_err"] for r in rows]
    flat = {
        "score_rel_err_mean": sum(rel) / len(rel),
        "score_rel_err_max": max(rel),
        "score_mse_mean": sum(r["mse"] for r in rows) / len(rows),
        "weight_err_max": max(abs(a - b) for a, b in zip(rec_w, true_w)),
        "weight_tv": 0.5 * sum(abs(a - b) for a, b in zip(rec_w, true_w)),
        "logp_samples": metrics.mean_log_density(samples.reshape(len(samples), -1), gmm),
        "logp_test": metrics.mean_log_density(test.reshape(len(test), -1), gmm),
    }
    flat["logp_gap"] = flat["logp_test"] - flat["logp_samples"]
    for i, r in enumerate(rows):  # level 0 = the noisiest (the grid decreases in t)
        flat[f"score_rel_err_l{i:02d}"] = r["rel_err"]
    detail = {
        "score_levels": rows,
        "weights": {"true": true_w, "recovered": rec_w, "means": gmm.means.tolist()},
        "logp": {"samples": flat["logp_samples"], "test": flat["logp_test"]},
    }
    return flat, detail


def evaluate_likelihood(model, test, meta: dict, cfg, seed: int, gmm: GaussianMixture | None = None,
                        progress: bool = True) -> tuple[dict, dict]:
    """ODE NLL of the first cfg.n_points test points (`likelihood` params) -> (flat metrics, detail)."""
    points = test[: cfg.n_points]
    n_levels = meta.get("n_levels")
    data_range = meta.get("data_range") or [-1.0, 1.0]
    summary, _ = likelihood.dataset_nll(
        model, points, batch_size=cfg.batch_size, divergence=cfg.divergence, probe=cfg.probe,
        n_probes=cfg.n_probes, rtol=cfg.rtol, atol=cfg.atol, n_levels=n_levels, data_range=data_range,
        generator=torch.Generator().manual_seed(seed), progress=progress)
    flat = {k: summary[k] for k in ("nll", "bpd") if k in summary}
    flat["nll_nfe"] = summary["nll_nfe"]
    if gmm is not None and n_levels is None:
        flat["nll_exact"] = -metrics.mean_log_density(points.reshape(len(points), -1), gmm)
        flat["nll_gap"] = flat["nll"] - flat["nll_exact"]
    detail = {"likelihood": {
        **{k: getattr(cfg, k) for k in ("divergence", "probe", "n_probes", "rtol", "atol", "batch_size")},
        "n": summary["n"], "batches": summary["nll_batches"], "dequantized": n_levels is not None,
        "bin_width": likelihood.bin_width(n_levels, data_range) if n_levels is not None else None,
        **flat,
    }}
    return flat, detail


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--model", default="data/models/score.safetensors")
    ap.add_argument("--samples", default="data/samples/samples.safetensors")
    ap.add_argument("--metrics", default="reports/metrics.json")
    ap.add_argument("--detail", default="reports/eval_detail.json")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    cfg = params.eval
    meta = data.load_meta(args.data)
    samples, sample_meta = load_samples(args.samples)
    if list(samples.shape[1:]) != list(meta["shape"]) and samples[0].numel() != meta["dim"]:
        raise ValueError(f"{args.samples}: samples of shape {list(samples.shape[1:])}, "
                         f"but the data in {args.data} has shape {meta['shape']}")
    gmm = GaussianMixture.from_dict(meta["gmm"]) if meta.get("gmm") else None
    if gmm is not None and gmm.dim != samples[0].numel():
        raise ValueError(f"{args.data}/meta.json: the mixture has dimension {gmm.dim}, "
                         f"the samples {samples[0].numel()}")
    model = models.load_model(args.model)[0]  # fail before the work
    train_x, _ = data.load_split(args.data, "train")
    test_x, _ = data.load_split(args.data, "test")

    dist = metrics.distance_report(samples, test_x, train_x, cfg.n_points, cfg.n_projections, params.seed)
    flat = {"n_samples": len(samples), "n_eval": dist["n"], "swd": dist["swd"], "swd_floor": dist["swd_floor"],
            "swd_ratio": dist["swd_ratio"], "mmd": dist["mmd"], "mmd_floor": dist["mmd_floor"]}
    detail = {
        "data": {"name": meta.get("name"), "shape": meta.get("shape"), "n_train": len(train_x), "n_test": len(test_x)},
        "samples": {"file": str(args.samples), "n": len(samples),
                    **{k: sample_meta.get(k) for k in ("sampler", "nfe", "wall_time_s")}},
        "distances": dist,
    }
    if gmm is not None:
        gflat, gdetail = evaluate_gmm(model, gmm, samples, test_x, cfg.n_score_points, params.seed,
                                      progress=not args.no_progress)
        flat.update(gflat)
        detail.update(gdetail)
    lflat, ldetail = evaluate_likelihood(model, test_x, meta, params.likelihood, params.seed, gmm,
                                         progress=not args.no_progress)
    flat.update(lflat)
    detail.update(ldetail)
    msg = (f"evaluate: SW₂ {flat['swd']:.4f} (floor {flat['swd_floor']:.4f}), "
           f"MMD² {flat['mmd']:.2e} (floor {flat['mmd_floor']:.2e})")
    if gmm is not None:
        msg += f", score rel. err. {flat['score_rel_err_mean']:.3f}, weight err. {flat['weight_err_max']:.3f}"
    if "bpd" in flat:
        msg += f", {flat['bpd']:.3f} bits/dim"
    else:
        msg += f", NLL {flat['nll']:.3f} nats" + (f" (exact {flat['nll_exact']:.3f})" if "nll_exact" in flat else "")
    msg += f" ({flat['nll_nfe']:.0f} NFE)"
    flat, detail = _clean(flat), _clean(detail)
    io.write_json(args.metrics, flat)
    io.write_json(args.detail, detail)
    print(msg)
    return flat


if __name__ == "__main__":
    run_stage("evaluate", main)
