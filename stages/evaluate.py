"""DVC stage `evaluate`: how close are the samples to the data, how likely the test data is
under the model, and (for the Gaussian mixture) how close is the learned score to the exact one.

Reads params (seed, eval, likelihood, vae.bound_samples, score.space), data/prepared (train +
test splits, meta), the space directory (data/latent), the evaluator, the samples and the
score model; writes reports/metrics.json (flat scalars, for `dvc metrics show` / `dvc exp
show`), reports/eval_detail.json (per-level tables, weights, likelihood settings, class
counts) and reports/class_histogram.png (labelled data).

The work is sbm.pipeline.evaluation.evaluate; the outputs are sbm.pipeline.outputs's EvalMetrics
and EvalDetail.

Evaluator (labelled data; sbm.eval.evaluator.evaluator_metrics): `fid` = FID(samples, test) on the
evaluator's features next to `fid_floor` = FID(train, test), `evaluator_acc` on the test
split, and `class_tv`, the total-variation distance between the classes the evaluator
assigns to the samples and the training split's class frequencies.

Distances (sbm.eval.distances.distance_report): SW₂ and MMD² of samples vs test points, next to
the floor — the same distances from real training points to the same test points.
Copies (sbm.eval.distances.memorisation, eq. 3): `copies`, the fraction of samples equal to a
training example, next to `copies_floor` (the test split's), and `nn_ratio`, the median distance
of a sample to its nearest training example over the test split's (≈ 1: no copying; absent when the
test split's median point is itself a training example).
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

from sbm.config.params import load_params
from sbm.pipeline.evaluation import evaluate, plot_classes, summary_line
from sbm.pipeline.stage import run_stage, stage_parser


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, data="data/prepared", space="data/latent", evaluator="data/models/evaluator",
                      model="data/models/score.safetensors", samples="data/samples/samples.safetensors",
                      metrics="reports/metrics.json", detail="reports/eval_detail.json",
                      histogram="reports/class_histogram.png")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    result = evaluate(params, data_dir=args.data, space_dir=args.space, evaluator_dir=args.evaluator,
                      model_path=args.model, samples_path=args.samples, progress=not args.no_progress)
    plot_classes(result, args.histogram)
    result.write(args.metrics, args.detail)
    print(summary_line(result.metrics))


if __name__ == "__main__":
    run_stage("evaluate", main)
