"""DVC stage `prepare`: build the dataset named in params.yaml (see `sbm.pipeline.data`).

    python stages/prepare.py [--params params.yaml] [--out data/prepared] [--report reports/prepare.json]

Writes OUT/dataset, OUT/meta.json and REPORT (the meta without the bulky "gmm" entry).
Bad params or data exit with status 2 and one line on stderr (`sbm.pipeline.stage.run_stage`).
"""

from __future__ import annotations

from sbm.config.params import load_params
from sbm.pipeline.data import prepare
from sbm.pipeline.outputs.prepared import PreparedData
from sbm.pipeline.stage import run_stage, stage_parser


def main(argv: list[str] | None = None) -> dict:
    args = stage_parser(__doc__, out="data/prepared", report="reports/prepare.json").parse_args(argv)
    params = load_params(args.params)
    meta = prepare(params.data, params.seed, args.out)
    PreparedData.from_meta(meta).write(args.report)
    print(f"prepare: {meta['name']} shape={meta['shape']} train={meta['n_train']} test={meta['n_test']} "
          f"range=[{meta['value_range'][0]:.3g}, {meta['value_range'][1]:.3g}] "
          f"sigma_max={meta['sigma_max']:.4g} classes={meta['n_classes']} -> {args.out}")
    return meta


if __name__ == "__main__":
    run_stage("prepare", main)  # ConfigError/ValueError/FileNotFoundError -> exit 2, one line
