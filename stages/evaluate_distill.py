"""DVC stage `evaluate_distill`: the distilled student against its teacher, side by side.

From the same sampling seeds (seed, …, seed + eval.seeds − 1: every score is mean ± sd over
them), decoded (latent models) and measured by FID, KID and precision/recall against the test
split (one QualityMeter for the stage; floor: as many training examples against it): the
teacher with its own sampler at its full steps (params `sampler`), the teacher with DDIM and
with Heun on the probability-flow ODE at each of distill.eval_steps steps, and the student at
the same step counts (DDIM for a progressive student, the multistep consistency sampler for a
consistency model). For each: NFE, and wall time per 1,000 samples (mean over the seeds) measured in this one run,
so the speed-up of the student is read off next to the teacher's.

distill.teacher = score: n = eval.compare_points unconditional samples. text: text.n_per_class
samples of every digit, each drawn for a caption of one of text.templates (taken in turn); the
teacher runs under classifier-free guidance of weight text.weight (two network evaluations per
call), the student (guidance folded in) reads the prompt alone. Each run then also reports the
evaluator's accuracy: the fraction of samples it assigns to the digit named in their prompt.

Writes reports/distill_eval.json (flat: student_fid_<n>, teacher_ddim_fid_<n>,
teacher_heun_fid_<n>, teacher_fid_full (means) and their _sd, speedup_<distill.steps>, and for a
text teacher the same with _acc_; sbm.pipeline.outputs's DistillMetrics), reports/distill_detail.json
(rows, each saying whether it is the teacher or the student, with every seed's value: DistillDetail)
and reports/distill.png (FID against NFE, ±sd error bars).
"""

import dataclasses

from sbm.config.params import load_params
from sbm.config.prompts import CLASS_NAMES
from sbm.distill.students import load_student, load_teacher
from sbm.eval.spread import seed_range
from sbm.eval.sweep import sample_quality
from sbm.pipeline.measured import load_measured, no_evaluator, skip_evaluation
from sbm.pipeline.outputs.conditional import DistillDetail, DistillRun, SampleScores
from sbm.pipeline.plots import plot_quality_vs_nfe
from sbm.pipeline.prepared import load_split
from sbm.pipeline.stage import run_stage, stage_parser


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", evaluator="data/models/evaluator",
                        model="data/models/score.safetensors", text_model="data/models/text.safetensors",
                        student="data/models/student.safetensors", metrics="reports/distill_eval.json",
                        detail="reports/distill_detail.json", plot="reports/distill.png").parse_args()
    params = load_params(args.params)
    cfg, text = params.distill, params.text
    why = no_evaluator(args.evaluator)
    if why:  # its measure is FID on the evaluator's features
        return skip_evaluation("evaluate_distill", why, metrics=args.metrics, detail=args.detail, plots=[args.plot])
    d = load_measured(args.data, args.space, args.evaluator, params.score.space, need_evaluator="evaluate_distill",
                      quantize=params.sampler.quantize)
    student, smeta = load_student(args.student)
    info = smeta["student"]
    if info.get("teacher", "score") != cfg.teacher:
        raise ValueError(f"{args.student}: a student of the {info.get('teacher', 'score')} model, but "
                         f"distill.teacher = {cfg.teacher}; rerun stage distill")
    t = load_teacher(cfg.teacher, args.model, args.text_model, text)
    k = min(int(load_split(args.data, "train")[1].max()) + 1, len(CLASS_NAMES))
    prompts = t.evaluation_prompts(k, text.n_per_class)  # (labels, ids), or None: unconditional samples
    n = len(prompts[0]) if prompts is not None else params.eval.compare_points
    labels, cond = prompts if prompts is not None else (None, None)
    drawn = n if prompts is not None else min(n, len(d.train))  # samples per run and seed
    meter, seeds = d.meter(params.evaluator, params.seed), seed_range(params.seed, params.eval.seeds)

    def measure(model, sampler) -> SampleScores:
        """NFE, FID, KID, precision/recall (and accuracy, prompts only) and time of one run over the seeds."""
        q = sample_quality(model, sampler, drawn, d.shape, labels=labels, cond=cond, evaluator=d.evaluator,
                           meter=meter, reference=d.train, seeds=seeds, decode=d.decode)
        return SampleScores.from_json(q, file="sample_quality")

    base_sampler = dataclasses.replace(params.sampler, batch_size=min(params.sampler.batch_size, n))
    # (label, teacher or student, the full-steps reference?, model, sampler settings)
    runs = [("teacher " + base_sampler.name + " (full)", "teacher", True, t.model, base_sampler)]
    for steps in cfg.eval_steps:
        runs += [("teacher ddim", "teacher", False, t.model,
                  dataclasses.replace(base_sampler, name="ddim", steps=steps + 1, eta=0.0)),
                 ("teacher ode_heun", "teacher", False, t.model,
                  dataclasses.replace(base_sampler, name="ode_heun", steps=steps + 1)),
                 (f"student ({info['method']})", "student", False, student,
                  dataclasses.replace(base_sampler, name=info["sampler"], steps=steps + 1, eta=0.0))]
    rows = []
    for label, kind, full, model, sampler in runs:
        row = DistillRun(label=label, steps=sampler.steps - 1, scores=measure(model, sampler), kind=kind,
                         solver=sampler.name, full=full)
        rows.append(row)
        acc = f", accuracy {row.accuracy:.3f}" if row.accuracy is not None else ""
        print(f"evaluate_distill: {label}, {row.steps} steps: FID {row.fid:.3f} (floor {row.fid_floor:.3f}){acc}, "
              f"NFE {row.nfe}, {row.seconds_per_1000:.2f}s per 1000 samples")
    detail = DistillDetail(n=n, method=info["method"], teacher=cfg.teacher, guidance=info.get("guidance"),
                           student_steps=cfg.steps, teacher_sampler=base_sampler.name,
                           teacher_steps=base_sampler.steps, seeds=seeds, rows=tuple(rows))
    detail.metrics().write(args.metrics)
    detail.write(args.detail)
    plot_quality_vs_nfe(detail.points(), args.plot, metric="fid")


if __name__ == "__main__":
    run_stage("evaluate_distill", main)
