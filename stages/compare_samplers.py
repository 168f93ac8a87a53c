"""DVC stage `compare_samplers`: every sampler in eval.compare_samplers at every step count
in eval.compare_nfe (NFE budgets), on the trained model — NFE, wall time per sample and the
sample-to-test distances next to the real-data floor (sbm.eval.sweep); with an evaluator
(labelled data) also FID, KID and precision/recall against the test split next to their floor
(n training examples against the same split; one QualityMeter for the stage). A latent model's
samples are decoded first (sbm.latent.vae.decode_samples).

Every run is drawn with the sampling seeds seed, seed + 1, …, seed + eval.seeds − 1 and each
score is reported as mean ± sd over them (sbm.eval.sweep.over_seeds); floors once.

Writes reports/samplers.json (rows: sbm.pipeline.outputs's SamplerComparison) and
reports/samplers.png (FID, or SW₂ without an evaluator, against NFE, ±sd error bars).
"""

from sbm.config.params import load_params
from sbm.eval.spread import seed_range
from sbm.eval.sweep import compare_samplers
from sbm.models.score import load_model
from sbm.pipeline.measured import load_measured
from sbm.pipeline.outputs.sampling import SamplerComparison, SamplerRun
from sbm.pipeline.plots import plot_quality_vs_nfe
from sbm.pipeline.stage import run_stage, stage_parser


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", evaluator="data/models/evaluator",
                        model="data/models/score.safetensors", out="reports/samplers.json",
                        plot="reports/samplers.png").parse_args()

    params = load_params(args.params)
    d = load_measured(args.data, args.space, args.evaluator, params.score.space, quantize=params.sampler.quantize)
    model, _ = load_model(args.model)
    n = min(params.eval.compare_points, len(d.train), len(d.test) if d.evaluator is None else len(d.train))
    seeds = seed_range(params.seed, params.eval.seeds)
    rows = compare_samplers(model, params.sampler, params.eval.compare_samplers, params.eval.compare_nfe,
                            test=d.test, reference=d.train, n=n, n_projections=params.eval.n_projections,
                            data_range=d.meta.get("value_range") if d.vae is None else None, seed=params.seed,
                            seeds=seeds, shape=d.shape, quality=d.meter(params.evaluator, params.seed),
                            decode=d.decode)
    out = SamplerComparison(n=n, metric="fid" if d.evaluator is not None else "swd", seeds=seeds,
                            rows=tuple(SamplerRun.from_json(r, file="compare_samplers") for r in rows))
    out.write(args.out)
    plot_quality_vs_nfe(out.points(), args.plot, metric=out.metric)
    print(f"compare_samplers: {len(out.rows)} runs on {n} samples each, seeds {list(seeds)} -> {args.out}")


if __name__ == "__main__":
    run_stage("compare_samplers", main)
