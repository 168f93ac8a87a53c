"""DVC stage `train_evaluator`: the classifier whose calibrated features every quality metric
reads (sbm.eval.evaluator), and what those metrics can see (sbm.eval.degrade).

Trained on the real *training* split only (never on samples), with params `evaluator`;
its accuracy is measured on the test split. Then the degradation ladder: real training
images blurred, noised, faded, shifted and speckled, scored against the test split by the
metrics of params `evaluator` (FID, KID, precision/recall) at the n every sample set is scored
at (min(sampler.n_samples, training split)), next to the bar they must meet.
Writes data/models/evaluator/evaluator.safetensors, reports/train_evaluator.json and
reports/calibration.json. Data without labels (swiss_roll, checkerboard) has no evaluator:
the directory then holds none.json saying why (sbm.eval.evaluator.load_evaluator_dir), and
evaluate skips FID.
"""

import time
from pathlib import Path

from sbm import io
from sbm.config.params import load_params, to_dict
from sbm.eval.evaluator import EVALUATOR_FILE, NO_EVALUATOR_FILE, accuracy, save_evaluator, train_evaluator
from sbm.pipeline.outputs.skipped import SkippedTraining
from sbm.eval.degrade import bar_failures, calibrate_metric
from sbm.eval.quality import QualityMeter
from sbm.pipeline.outputs.training import EvaluatorTraining, LadderRow, MetricCalibration
from sbm.pipeline.prepared import load_meta, load_split
from sbm.pipeline.stage import run_stage, stage_parser


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", out="data/models/evaluator",
                        metrics="reports/train_evaluator.json", calibration="reports/calibration.json").parse_args()
    params = load_params(args.params)
    meta = load_meta(args.data)
    x, y = load_split(args.data, "train")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (EVALUATOR_FILE, NO_EVALUATOR_FILE):
        (out / name).unlink(missing_ok=True)
    if y is None:
        why = f"data {meta['name']!r} has no class labels, so there is no evaluator (and no FID)"
        io.write_json(out / NO_EVALUATOR_FILE, {"reason": why})
        SkippedTraining().write(args.metrics)
        SkippedTraining().write(args.calibration)
        print(f"train_evaluator: {why}")
        return
    test, test_y = load_split(args.data, "test")
    start = time.perf_counter()
    ev = train_evaluator(x, y, params.evaluator, params.seed, progress=True)
    seconds = time.perf_counter() - start
    acc = accuracy(ev, test, test_y)
    save_evaluator(out / EVALUATOR_FILE, ev, {"test_accuracy": acc, "data": meta["name"]})
    EvaluatorTraining(test_accuracy=acc, train_accuracy=accuracy(ev, x, y), n_classes=ev.config["n_classes"],
                      train_seconds=round(seconds, 2), evaluator=to_dict(params.evaluator)).write(args.metrics)
    print(f"train_evaluator: test accuracy {acc:.4f} ({seconds:.1f}s) -> {out / EVALUATOR_FILE}")
    if len(meta["shape"]) == 3:
        n = min(params.sampler.n_samples, len(x))
        rows = calibrate_metric(QualityMeter.from_params(params.evaluator, test, ev, seed=params.seed), x, n,
                                meta["value_range"], seed=params.seed)
        failures = bar_failures(rows)
        MetricCalibration(feature=params.evaluator.feature, n=n, n_test=len(test),
                          rows=tuple(LadderRow.from_json(r, file="calibrate_metric") for r in rows),
                          bar_failures=tuple(failures)).write(args.calibration)
        print(f"train_evaluator: degradation ladder on {n} images -> {args.calibration}: "
              + ("the bar is met" if not failures else "the bar is NOT met: " + "; ".join(failures)))
    else:
        SkippedTraining(reason="the degradation ladder degrades images; this data is vectors").write(args.calibration)


if __name__ == "__main__":
    run_stage("train_evaluator", main)
