"""What a training stage writes when it has nothing to learn (data without labels: no
classifier, no text model): every declared output still exists, and the files say why, so the
stages that read them (`sbm.pipeline.measured.skip_evaluation`) and the report can print it.
"""

from __future__ import annotations

from pathlib import Path

from sbm import io
from sbm.pipeline.outputs.skipped import SkippedTraining


def skip_training(stage: str, reason: str, *, out, metrics, checkpoints=None, live=None) -> None:
    """A training stage with nothing to learn (e.g. a classifier on data without labels): its
    model file says why (`sbm.io.write_skipped`, which later stages check), its metrics file
    holds {"trained": false, "skipped": reason}, and its other declared outputs exist (an
    empty checkpoint directory, a dvclive curve with a header only)."""


    io.write_skipped(out, stage, reason)
    SkippedTraining(reason=reason).write(metrics)
    if checkpoints is not None:
        Path(checkpoints).mkdir(parents=True, exist_ok=True)
    if live is not None:
        tsv = Path(live) / "plots" / "metrics" / "loss.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        if not tsv.is_file():
            tsv.write_text("step\tloss\n")
    print(f"{stage}: skipped: {reason}")


