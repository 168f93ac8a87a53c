"""DVC stage `compare_samplers`: every sampler in eval.compare_samplers at every step count
in eval.compare_nfe (NFE budgets), on the trained model — NFE, wall time per sample and the
sample-to-test distance next to the real-data floor (sbm.comparison); with an evaluator
(labelled data) also FID(samples, test) next to FID(train, test). A latent model's samples
are decoded first (sbm.latent.decode_samples).

Writes reports/samplers.json (rows) and reports/samplers.png (FID, or SW₂ without an
evaluator, against NFE).
"""

from sbm import data, io, latent, models
from sbm.comparison import compare_samplers, plot_quality_vs_nfe
from sbm.config import load_params
from sbm.evaluator import fid, load_evaluator_dir
from sbm.stage import run_stage, stage_parser


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", evaluator="data/models/evaluator",
                        model="data/models/score.safetensors", out="reports/samplers.json",
                        plot="reports/samplers.png").parse_args()

    params = load_params(args.params)
    meta = data.load_meta(args.data)
    space = latent.check_space(args.space, params.score.space)
    vae = latent.load_space_vae(args.space)
    evaluator = load_evaluator_dir(args.evaluator)
    model, _ = models.load_model(args.model)
    test, _ = data.load_split(args.data, "test")
    train, _ = data.load_split(args.data, "train")
    n = min(params.eval.compare_points, len(train)) if evaluator is not None else \
        min(params.eval.compare_points, len(test), len(train))
    image = len(meta["shape"]) == 3
    quality = None
    if evaluator is not None:  # FID with n generated vs the test split, floor: n training examples
        floor = fid(test, train[:n], evaluator)
        quality = lambda x: {"fid": fid(test, x, evaluator), "fid_floor": floor}  # noqa: E731
    rows = compare_samplers(model, params.sampler, params.eval.compare_samplers, params.eval.compare_nfe,
                            test=test, reference=train, n=n, n_projections=params.eval.n_projections,
                            data_range=meta.get("value_range") if vae is None else None, seed=params.seed,
                            shape=space["shape"], quality=quality,
                            decode=lambda z: latent.decode_samples(vae, z, data_range=meta["value_range"] if image else None))
    metric = "fid" if evaluator is not None else "swd"
    io.write_json(args.out, {"n": n, "metric": metric, "rows": rows})
    plot_quality_vs_nfe(rows, args.plot, metric=metric)
    print(f"compare_samplers: {len(rows)} runs on {n} samples each -> {args.out}")


if __name__ == "__main__":
    run_stage("compare_samplers", main)
