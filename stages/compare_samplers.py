"""DVC stage `compare_samplers`: every sampler in eval.compare_samplers at every step count
in eval.compare_nfe (NFE budgets), on the trained model — NFE, wall time per sample and the
sample-to-test distance next to the real-data floor (sbm.comparison).

Writes reports/samplers.json (rows) and reports/samplers.png (quality vs NFE).
"""

from sbm import data, io, models
from sbm.comparison import compare_samplers, plot_quality_vs_nfe
from sbm.config import load_params
from sbm.stage import run_stage, stage_parser


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", model="data/models/score.safetensors",
                        out="reports/samplers.json", plot="reports/samplers.png").parse_args()

    params = load_params(args.params)
    meta = data.load_meta(args.data)
    model, _ = models.load_model(args.model)
    test, _ = data.load_split(args.data, "test")
    train, _ = data.load_split(args.data, "train")
    n = min(params.eval.compare_points, len(test), len(train))
    rows = compare_samplers(model, params.sampler, params.eval.compare_samplers, params.eval.compare_nfe,
                            test=test, reference=train, n=n, n_projections=params.eval.n_projections,
                            data_range=meta.get("value_range"), seed=params.seed)
    io.write_json(args.out, {"n": n, "rows": rows})
    plot_quality_vs_nfe(rows, args.plot)
    print(f"compare_samplers: {len(rows)} runs on {n} samples each -> {args.out}")


if __name__ == "__main__":
    run_stage("compare_samplers", main)
