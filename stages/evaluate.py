"""DVC stage `evaluate`: how close are the samples to the data, how likely the test data is
under the model, and (for the Gaussian mixture) how close is the learned score to the exact one.

Reads params (seed, eval, likelihood, vae.bound_samples, score.space), data/prepared (train +
test splits, meta), the space directory (data/latent), the evaluator, the samples and the
score model; writes reports/metrics.json (flat scalars, for `dvc metrics show` / `dvc exp
show`), reports/eval_detail.json (per-level tables, weights, likelihood settings, class
counts) and reports/class_histogram.png (labelled data).

Evaluator (labelled data; sbm.eval.evaluator.evaluator_metrics): `fid` = FID(samples, test) on the
evaluator's features next to `fid_floor` = FID(train, test), `evaluator_acc` on the test
split, and `class_tv`, the total-variation distance between the classes the evaluator
assigns to the samples and the training split's class frequencies.

Distances (sbm.eval.distances.distance_report): SW₂ and MMD² of samples vs test points, next to
the floor — the same distances from real training points to the same test points.
Likelihood (sbm.core.likelihood.dataset_nll): the probability-flow ODE log-likelihood of the first
`likelihood.n_points` test points — `nll` (mean nats per example) for continuous data, or,
when meta.json has n_levels (quantised data, e.g. digits), `bpd`: bits/dim of the points
dequantised by u ~ U[0, Δ) (the variational bound of sbm.core.likelihood, eq. 5); `nll_nfe`,
the mean number of score evaluations per ODE solve. A latent model instead reports
`bpd_bound` (and `bpd_bound_iwae`): the bound −log p(x) ≤ E_q[−log p(x|z) − log p(z) +
log q(z|x)] with log p(z) from the ODE on the latents (sbm.eval.likelihood.latent_nll_metrics).
Gaussian mixture only: score error per noise level against the exact score, mixture
weights read off the samples, mean true log-density of samples and of test points, and
`nll_exact` = −mean true log p₀ of the same likelihood points, `nll_gap` = nll − nll_exact.
"""

from __future__ import annotations

import torch

from sbm import io
from sbm.config.params import load_params
from sbm.core.gmm import GaussianMixture
from sbm.eval.distances import distance_report
from sbm.eval.evaluator import evaluator_metrics, fid_from_params, load_evaluator_dir
from sbm.eval.likelihood import latent_nll_metrics, nll_metrics
from sbm.eval.truth import gmm_metrics
from sbm.latent.vae import check_space, load_space_vae
from sbm.models.score import load_model
from sbm.pipeline import data
from sbm.pipeline.plots import placeholder, plot_class_histogram
from sbm.pipeline.stage import run_stage, stage_parser


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


def main(argv: list[str] | None = None) -> dict:
    ap = stage_parser(__doc__, data="data/prepared", space="data/latent", evaluator="data/models/evaluator",
                      model="data/models/score.safetensors", samples="data/samples/samples.safetensors",
                      metrics="reports/metrics.json", detail="reports/eval_detail.json",
                      histogram="reports/class_histogram.png")
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
    check_space(args.space, params.score.space)
    vae = load_space_vae(args.space)  # fail before the work
    evaluator = load_evaluator_dir(args.evaluator)
    model = load_model(args.model)[0]
    train_x, train_y = data.load_split(args.data, "train")
    test_x, test_y = data.load_split(args.data, "test")

    dist = distance_report(samples, test_x, train_x, cfg.n_points, cfg.n_projections, params.seed)
    flat = {"n_samples": len(samples), "n_eval": dist["n"], "swd": dist["swd"], "swd_floor": dist["swd_floor"],
            "swd_ratio": dist["swd_ratio"], "mmd": dist["mmd"], "mmd_floor": dist["mmd_floor"]}
    detail = {
        "data": {"name": meta.get("name"), "shape": meta.get("shape"), "n_train": len(train_x), "n_test": len(test_x)},
        "samples": {"file": str(args.samples), "n": len(samples),
                    **{k: sample_meta.get(k) for k in ("sampler", "nfe", "wall_time_s")}},
        "distances": dist,
    }
    if evaluator is not None:
        eflat, edetail = evaluator_metrics(
            samples, train_x, train_y, test_x, test_y, evaluator, params.seed,
            fid_fn=lambda real, fake: fid_from_params(params.evaluator, real, fake, evaluator))
        flat.update(eflat)
        detail.update(edetail)
        plot_class_histogram(edetail["evaluator"]["class_counts"], args.histogram,
                             reference=edetail["evaluator"]["train_class_freq"],
                             title=f"evaluator classes of {len(samples)} samples (TV {eflat['class_tv']:.3f})")
    else:
        placeholder(args.histogram, "no class labels in this data set: no evaluator, no class histogram")
    if gmm is not None:
        gflat, gdetail = gmm_metrics(model, gmm, samples, test_x, cfg.n_score_points, params.seed,
                                      progress=not args.no_progress)
        flat.update(gflat)
        detail.update(gdetail)
    if vae is not None:
        lflat, ldetail = latent_nll_metrics(model, vae, test_x, meta, params.likelihood, params.seed,
                                                       params.vae.bound_samples, progress=not args.no_progress)
    else:
        lflat, ldetail = nll_metrics(model, test_x, meta, params.likelihood, params.seed, gmm,
                                                progress=not args.no_progress)
    flat.update(lflat)
    detail.update(ldetail)
    msg = (f"evaluate: SW₂ {flat['swd']:.4f} (floor {flat['swd_floor']:.4f}), "
           f"MMD² {flat['mmd']:.2e} (floor {flat['mmd_floor']:.2e})")
    if evaluator is not None:
        msg += (f", FID {flat['fid']:.3f} (floor {flat['fid_floor']:.3f}), evaluator acc. {flat['evaluator_acc']:.3f}, "
                f"class TV {flat['class_tv']:.3f}")
    if gmm is not None:
        msg += f", score rel. err. {flat['score_rel_err_mean']:.3f}, weight err. {flat['weight_err_max']:.3f}"
    if "bpd_bound" in flat:
        msg += f", ≤ {flat['bpd_bound']:.3f} bits/dim (latent bound)"
    elif "bpd" in flat:
        msg += f", {flat['bpd']:.3f} bits/dim"
    else:
        msg += f", NLL {flat['nll']:.3f} nats" + (f" (exact {flat['nll_exact']:.3f})" if "nll_exact" in flat else "")
    msg += f" ({flat['nll_nfe']:.0f} NFE)"
    io.write_json(args.metrics, flat)
    io.write_json(args.detail, detail)
    print(msg)
    return flat


if __name__ == "__main__":
    run_stage("evaluate", main)
