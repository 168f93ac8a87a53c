"""DVC stage `report`: reports/report.md from the outputs of the other stages.

Reads reports/{prepare,train_evaluator,train_vae,train_score,sample,samplers,metrics,
eval_detail}.json, the dvclive loss curves of train_score and train_vae
(reports/live/{train_score,train_vae}/plots/metrics/loss.tsv) and the pictures
reports/{reconstructions,class_histogram,samplers,samples}.png — whichever exist (a missing
one skips its section with a note). Writes reports/report.md, reports/loss.png (the score
model's loss curve) and reports/vae_loss.png (the VAE's, only when its curve exists: a
pixel-space model has none). Image data gets a headline table: FID next to its floor,
the evaluator's accuracy, the class TV distance, bits/dim or, for a latent model, its
upper bound. Renders offline (sbm.pipeline.report).
"""

from __future__ import annotations

from sbm.pipeline.report import build_report, inputs_from_argv
from sbm.pipeline.stage import run_stage


def main(argv: list[str] | None = None) -> str:
    inp = inputs_from_argv(argv, __doc__)
    text = build_report(inp)
    n_skipped = text.count("_Skipped")
    print(f"report: wrote {inp.out}" + (f" ({n_skipped} section(s) skipped: inputs absent)" if n_skipped else ""))
    return text


if __name__ == "__main__":
    run_stage("report", main)
