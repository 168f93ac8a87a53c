"""DVC stage `evaluate_text`: class-conditional samples from prompts by classifier-free guidance.

The text-conditional model of train_text is wrapped as ε̃ = ε_u + w(ε_c − ε_u)
(sbm.text.conditioning.cfg; ε_u from the empty prompt) for every w in text.guidance_weights
(w = 0: the model's unconditional branch; w = 1: the plain conditional model) and sampled with
params eval.conditional_sampler at about eval.conditional_nfe network evaluations (null: params
`sampler`): text.n_per_class samples of every digit, each drawn for a caption of one of
the training templates (text.templates, taken in turn). Per w: the evaluator's accuracy (the
fraction it assigns to the digit named in the prompt, overall and per class), FID, KID and
precision/recall of the samples against the test split next to their floor (as many training
examples; one QualityMeter for the stage), NFE (sampler calls; CFG with w ∉ {0, 1} evaluates
the network on the conditional and the unconditional batch at each call) and time per sample.
Every run is drawn with the sampling seeds seed, …, seed + eval.seeds − 1: each score is
mean ± sd over them.

Generalisation of the text encoder: at w = text.weight, the same for every phrasing of
text.unseen_templates (never seen in training, e.g. "the number {name} written by hand").

Writes reports/text.json (flat: cfg_acc_w<w>, cfg_fid_w<w>, cfg_unseen_acc (means) and their _sd,
cfg_fid_floor; sbm.pipeline.outputs's TextMetrics) and reports/text_detail.json (rows with per-class
accuracy and every seed's value, and the unseen phrasings: TextDetail).
"""

from functools import partial

import torch

from sbm import io
from sbm.config.params import load_params
from sbm.config.prompts import CLASS_NAMES
from sbm.eval.spread import seed_range
from sbm.eval.sweep import conditional_sampler_params, sample_quality
from sbm.pipeline.measured import load_measured, no_evaluator, skip_evaluation
from sbm.pipeline.outputs.conditional import CfgRow, SampleScores, TextDetail, UnseenRow
from sbm.pipeline.prepared import load_split
from sbm.pipeline.stage import run_stage, stage_parser
from sbm.text.conditioning import cfg as guided
from sbm.text.conditioning import class_prompts, prompt_ids
from sbm.text.net import load_text_model


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", evaluator="data/models/evaluator",
                        model="data/models/text.safetensors", metrics="reports/text.json",
                        detail="reports/text_detail.json").parse_args()
    params = load_params(args.params)
    cfg = params.text
    why = io.skipped_reason(args.model) or no_evaluator(args.evaluator)
    if why:
        return skip_evaluation("evaluate_text", why, metrics=args.metrics, detail=args.detail)
    d = load_measured(args.data, args.space, args.evaluator, params.score.space, need_evaluator="evaluate_text",
                      quantize=params.sampler.quantize)
    model, _ = load_text_model(args.model)
    k = min(int(load_split(args.data, "train")[1].max()) + 1, len(CLASS_NAMES))
    y = torch.arange(k).repeat_interleave(cfg.n_per_class)  # (K · n,) the digit each sample is drawn for
    seen = prompt_ids(model, class_prompts(y, cfg.templates))  # checked before any sampling
    unseen = {t: prompt_ids(model, class_prompts(y, [t])) for t in cfg.unseen_templates}
    meter, seeds = d.meter(params.evaluator, params.seed), seed_range(params.seed, params.eval.seeds)
    sampler = conditional_sampler_params(params.sampler, params.eval.conditional_sampler, params.eval.conditional_nfe,
                                         model)
    quality = partial(sample_quality, cfg=sampler, n=len(y), shape=d.shape, labels=y, evaluator=d.evaluator,
                      meter=meter, reference=d.train, seeds=seeds, decode=d.decode, progress=True)

    def measure(w: float, cond) -> SampleScores:
        return SampleScores.from_json(quality(guided(model, w), cond=cond), file="sample_quality")

    rows = []
    for w in cfg.guidance_weights:
        row = CfgRow(scale=w, scores=measure(w, seen), network_evals_per_call=1 if w in (0.0, 1.0) else 2)
        rows.append(row)
        print(f"evaluate_text: CFG w = {w:g}: accuracy {row.accuracy:.3f}, FID {row.fid:.3f} "
              f"(floor {row.fid_floor:.3f}), NFE {row.nfe}")
    unseen_rows = []
    for template, ids in unseen.items():
        row = UnseenRow(scale=cfg.weight, template=template, scores=measure(cfg.weight, ids))
        unseen_rows.append(row)
        print(f"evaluate_text: unseen phrasing {template!r} at w = {cfg.weight:g}: accuracy {row.accuracy:.3f}")
    detail = TextDetail(n_per_class=cfg.n_per_class, sampler=sampler.name, encoder=cfg.encoder,
                        weight=cfg.weight, seeds=seeds, rows=tuple(rows), unseen=tuple(unseen_rows))
    detail.metrics().write(args.metrics)
    detail.write(args.detail)


if __name__ == "__main__":
    run_stage("evaluate_text", main)
