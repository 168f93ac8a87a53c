"""DVC stage `distill`: a few-step student of the score model (sbm.distill).

distill.method = progressive (Salimans & Ho 2022): rounds that each halve the DDIM steps, from
distill.teacher_steps down to distill.steps; every student starts as a copy of its teacher and
learns to take one DDIM step where the teacher takes two (target x̃, weighting
distill.weighting). consistency (Song et al. 2023): a consistency function f_θ(x, t) = c_skip x +
c_out F_θ, f_θ(x, t_min) = x exactly, trained against an EMA target network on the teacher's
ODE steps (distill.teacher_solver) over distill.teacher_steps intervals.

The teacher is the unconditional model of train_score, in its space (latent or pixel) and on
its training set. Each round is checkpointed in data/checkpoints/distill/<round> (persisted by
DVC): a rerun resumes the round it stopped in and reloads finished rounds. Their fingerprint
includes the teacher's weights, so a new teacher retrains every round. Writes
data/models/student.safetensors (sample it with `python -m sbm sample --checkpoint … --sampler
ddim --steps <distill.steps + 1>`, or `--sampler consistency`) and reports/distill.json.
"""

import torch

from sbm import io, latent, models
from sbm.config import load_params, to_dict
from sbm.distill import distill
from sbm.stage import run_stage, stage_parser


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", model="data/models/score.safetensors",
                        out="data/models/student.safetensors", checkpoints="data/checkpoints/distill",
                        live="reports/live/distill", metrics="reports/distill.json").parse_args()
    params = load_params(args.params)
    cfg = params.distill
    latent.check_space(args.space, params.score.space)
    teacher, meta = models.load_model(args.model)
    x, _, _ = latent.training_set(args.data, args.space, params.score.space, "train")
    torch.manual_seed(params.seed)
    student, rounds = distill(teacher, x, cfg, params.train, seed=params.seed, ckpt_dir=args.checkpoints,
                              live_dir=args.live, config_for_fingerprint={"teacher": io.state_digest(teacher.net)})
    sampler = "ddim" if cfg.method == "progressive" else "consistency"
    extra = {k: meta.get(k) for k in ("data_shape", "data_range", "space", "space_dir")}
    extra["student"] = {"method": cfg.method, "steps": cfg.steps, "sampler": sampler,
                        "teacher": str(args.model), "teacher_steps": cfg.teacher_steps}
    if cfg.method == "progressive":
        models.save_model(args.out, student, extra=extra)
    else:
        from sbm.distill import save_consistency_model

        save_consistency_model(args.out, student, extra=extra)
    io.write_json(args.metrics, {"method": cfg.method, "steps": cfg.steps, "teacher_steps": cfg.teacher_steps,
                                 "train_seconds": round(sum(r.seconds for r in rounds), 2),
                                 "final_loss": rounds[-1].final_loss, "distill": to_dict(cfg),
                                 "rounds": [{"student_steps": r.student_steps, "teacher_steps": r.teacher_steps,
                                             "final_loss": r.final_loss, "seconds": round(r.seconds, 2),
                                             "trained": r.trained} for r in rounds]})
    print(f"distill: {cfg.method} student with {cfg.steps} steps from a {cfg.teacher_steps}-step teacher "
          f"({len(rounds)} round(s), {sum(r.seconds for r in rounds):.1f}s) -> {args.out}")


if __name__ == "__main__":
    run_stage("distill", main)
