"""DVC stage `distill`: a few-step student of the score model (sbm.distill.students).

distill.method = progressive (Salimans & Ho 2022): rounds that each halve the DDIM steps, from
distill.teacher_steps down to distill.steps; every student starts as a copy of its teacher and
learns to take one DDIM step where the teacher takes two (target x̃, weighting
distill.weighting). consistency (Song et al. 2023): a consistency function f_θ(x, t) = c_skip x +
c_out F_θ, f_θ(x, t_min) = x exactly, trained against an EMA target network on the teacher's
ODE steps (distill.teacher_solver) over distill.teacher_steps intervals.

distill.teacher = score: the unconditional model of train_score. text: the text-conditional
model of train_text under classifier-free guidance of weight text.weight, folded into the
student. Each example then gets a caption of its label (a template of text.templates drawn
per example, the empty prompt with probability text.p_uncond), which the guided teacher and
the student both read; the student samples from a prompt with w = 1, one network evaluation per
step instead of two. Either teacher works in its space (latent or pixel) on its training set.

Each round is checkpointed in data/checkpoints/distill/<round> (persisted by DVC): a rerun
resumes the round it stopped in and reloads finished rounds. Their fingerprint includes the
teacher's weights (and the guidance settings), so a new teacher retrains every round. Writes
data/models/student.safetensors (sample it with `python -m sbm sample --checkpoint … --sampler
ddim --steps <distill.steps + 1>`, `--sampler consistency` for a consistency model, and
`--prompt …` for a text student) and reports/distill.json.

Each round's loss curve goes through dvclive to reports/live/distill/<round> (round_<student steps>,
or consistency), continued on resume. At each of its checkpoints the round's EMA student is shown
sampled its own way (params `monitor`, sbm.pipeline.monitoring): `distill.method`'s sampler
(ddim, η = 0 | consistency) at the round's student steps, a text student from class prompts
(as train_text's monitor, w = 1); a picture (plots/images/samples/<step>.png) and, with the
evaluator of data/models/evaluator, the small-n FID/KID (plots/metrics/quality/*.tsv). dvc.yaml
declares reports/live/distill whole as the plot (the round names depend on params), so the rounds'
dvclive summaries (metrics.json, not plot data) are removed when the stage ends: the rounds' final
losses are in reports/distill.json. The directory persists (so a resumed round continues its curves);
rounds of other settings (e.g. round_0016 after distill.teacher_steps went from 32 to 16) are removed
from it when the stage ends, so the plots show this run's rounds only.
"""

import shutil
from pathlib import Path

import torch

from sbm.config.params import SamplerParams, load_params, to_dict
from sbm.config.prompts import CLASS_NAMES
from sbm.distill.students import STUDENT_SAMPLERS, distill, load_teacher, save_student
from sbm.latent.space import check_space
from sbm.pipeline.monitoring import build_monitor
from sbm.pipeline.outputs.training import DistillRound, DistillTraining
from sbm.pipeline.spaces import training_set
from sbm.pipeline.stage import run_stage, stage_parser


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", model="data/models/score.safetensors",
                        text_model="data/models/text.safetensors", evaluator="data/models/evaluator",
                        out="data/models/student.safetensors",
                        checkpoints="data/checkpoints/distill", live="reports/live/distill",
                        metrics="reports/distill.json").parse_args()
    params = load_params(args.params)
    cfg, text = params.distill, params.text
    check_space(args.space, params.score.space)
    teacher = load_teacher(cfg.teacher, args.model, args.text_model, text)
    x, y, _ = training_set(args.data, args.space, params.score.space, "train")
    cond, wrap_loss = teacher.conditioning(y, args.data)
    condition = teacher.monitor_condition(min(int(y.max()) + 1, len(CLASS_NAMES))) if y is not None else None
    shown = []

    def monitor(student_steps: int):  # a round's student, sampled only its own way (as evaluate_distill does)
        sampler = SamplerParams(name=STUDENT_SAMPLERS[cfg.method], steps=student_steps + 1, eta=0.0)
        m = build_monitor(params, data=args.data, space=args.space, evaluator=args.evaluator, condition=condition,
                          sampler=sampler)
        shown.append(m)
        return m if m.active else None

    torch.manual_seed(params.seed)
    student, rounds = distill(teacher.model, x, cfg, params.train, seed=params.seed, ckpt_dir=args.checkpoints,
                              cond=cond, wrap_loss=wrap_loss, live_dir=args.live,
                              config_for_fingerprint=teacher.fingerprint(), monitor=monitor)
    for summary in Path(args.live).glob("*/metrics.json"):  # not plot data in the declared plot directory
        summary.unlink(missing_ok=True)  # every process may get here
    ours = {r.name for r in rounds}  # the directory persists (resumed curves): drop other settings' rounds
    for stale in Path(args.live).iterdir() if Path(args.live).is_dir() else ():
        if stale.is_dir() and stale.name not in ours:
            shutil.rmtree(stale, ignore_errors=True)
    if any(m.active for m in shown):
        print(f"monitor: {sum(m.seconds for m in shown):.1f}s showing the students at the checkpoints")
    guidance = teacher.guidance
    extra = {k: teacher.meta.get(k) for k in ("data_shape", "data_range", "n_levels", "space", "space_dir", "templates")
             if k in teacher.meta}
    extra["student"] = {"method": cfg.method, "steps": cfg.steps, "sampler": STUDENT_SAMPLERS[cfg.method],
                        "teacher": cfg.teacher, "teacher_file": teacher.path, "teacher_steps": cfg.teacher_steps,
                        "guidance": guidance}
    save_student(args.out, student, extra=extra)
    seconds = sum(r.seconds for r in rounds)
    DistillTraining(method=cfg.method, teacher=cfg.teacher, guidance=guidance, steps=cfg.steps,
                    teacher_steps=cfg.teacher_steps, train_seconds=round(seconds, 2),
                    final_loss=rounds[-1].final_loss, distill=to_dict(cfg),
                    rounds=tuple(DistillRound(student_steps=r.student_steps, teacher_steps=r.teacher_steps,
                                              final_loss=r.final_loss, seconds=round(r.seconds, 2), trained=r.trained)
                                 for r in rounds)).write(args.metrics)
    folded = f" (CFG w = {guidance:g} folded in)" if guidance is not None else ""
    print(f"distill: {cfg.method} student of the {cfg.teacher} model{folded} with {cfg.steps} steps from a "
          f"{cfg.teacher_steps}-step teacher ({len(rounds)} round(s), {seconds:.1f}s of training) -> {args.out}")


if __name__ == "__main__":
    run_stage("distill", main)
