"""DVC stage `evaluate_guidance`: class-conditional samples by classifier guidance.

For every scale s in guidance.classifier_scales the unconditional score model is wrapped as
score + s·∇ₓ log p(y | x_t, t) (sbm.core.guidance.ClassifierGuidance, with the noise-conditional
classifier of train_classifier) and sampled with params eval.conditional_sampler at about
eval.conditional_nfe network evaluations (null: params `sampler`) for guidance.n_per_class
samples of every class y; latent samples are decoded. Per scale: the evaluator's accuracy on
the samples (the fraction it assigns to the class they were generated for, overall and per
class), FID, KID and precision/recall of all the conditional samples against the test split
next to their floor (as many training examples; one QualityMeter for the stage), NFE and wall
time. s = 0 is the unguided model (accuracy ≈ the class frequency, ~10%). Every scale is drawn
with the sampling seeds seed, …, seed + eval.seeds − 1: each score is mean ± sd over them.

Writes reports/guidance.json (flat metrics: cg_acc_s<scale>, cg_fid_s<scale> (means) and their
_sd; sbm.pipeline.outputs's GuidanceMetrics), reports/guidance_detail.json (rows with per-class
accuracy and every seed's value: GuidanceDetail) and reports/guidance.png (±sd error bars).
"""

import torch

from sbm import io
from sbm.config.params import load_params
from sbm.core.guidance import ClassifierGuidance
from sbm.eval.spread import seed_range
from sbm.eval.sweep import conditional_sampler_params, sample_quality
from sbm.models.classifier import load_classifier
from sbm.models.score import load_model
from sbm.pipeline.measured import load_measured, no_evaluator, skip_evaluation
from sbm.pipeline.outputs.conditional import GuidanceDetail, GuidanceRow, SampleScores
from sbm.pipeline.plots import plot_guidance
from sbm.pipeline.stage import run_stage, stage_parser


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", evaluator="data/models/evaluator",
                        model="data/models/score.safetensors", classifier="data/models/classifier.safetensors",
                        metrics="reports/guidance.json", detail="reports/guidance_detail.json",
                        plot="reports/guidance.png").parse_args()
    params = load_params(args.params)
    cfg = params.guidance
    why = io.skipped_reason(args.classifier) or no_evaluator(args.evaluator)
    if why:
        return skip_evaluation("evaluate_guidance", why, metrics=args.metrics, detail=args.detail, plots=[args.plot])
    d = load_measured(args.data, args.space, args.evaluator, params.score.space, need_evaluator="guidance",
                      quantize=params.sampler.quantize)
    model, _ = load_model(args.model)
    classifier, _ = load_classifier(args.classifier)
    k = classifier.n_classes
    y = torch.arange(k).repeat_interleave(cfg.n_per_class)  # (K · n,) the class each sample is drawn for
    meter, seeds = d.meter(params.evaluator, params.seed), seed_range(params.seed, params.eval.seeds)
    sampler = conditional_sampler_params(params.sampler, params.eval.conditional_sampler, params.eval.conditional_nfe,
                                         model)
    rows = []
    for s in cfg.classifier_scales:
        q = sample_quality(ClassifierGuidance(model, classifier, s), sampler, len(y), d.shape, labels=y, cond=y,
                           evaluator=d.evaluator, meter=meter, reference=d.train, seeds=seeds, decode=d.decode,
                           progress=True)
        row = GuidanceRow(scale=s, scores=SampleScores.from_json(q, file="sample_quality"))
        rows.append(row)
        print(f"evaluate_guidance: classifier scale {s:g}: accuracy {row.accuracy:.3f}, FID {row.fid:.3f} "
              f"(floor {row.fid_floor:.3f}), NFE {row.nfe}")
    detail = GuidanceDetail(n_per_class=cfg.n_per_class, sampler=sampler.name, seeds=seeds, rows=tuple(rows))
    detail.metrics().write(args.metrics)
    detail.write(args.detail)
    plot_guidance(rows, args.plot)


if __name__ == "__main__":
    run_stage("evaluate_guidance", main)
