"""DVC stage `evaluate_distill`: the distilled student against its teacher, side by side.

On the same n = eval.compare_points samples from the same seed, decoded (latent models) and
measured by FID on the evaluator's features against the test split (floor: FID(train, test)
at the same n): the teacher with its own sampler at its full steps (params `sampler`), the
teacher with DDIM and with Heun on the probability-flow ODE at each of distill.eval_steps
steps, and the student at the same step counts (DDIM for a progressive student, the multistep
consistency sampler for a consistency model). For each: NFE, and wall time per 1,000 samples
measured in this one run, so the speed-up of the student is read off next to the teacher's.

Writes reports/distill_eval.json (flat: student_fid_<n>, teacher_ddim_fid_<n>,
teacher_heun_fid_<n>, teacher_fid_full, speedup_<distill.steps>), reports/distill_detail.json
(rows) and reports/distill.png (FID against NFE).
"""

import dataclasses

from sbm import io, models
from sbm.comparison import draw, load_measured, plot_quality_vs_nfe
from sbm.config import load_params
from sbm.distill import load_student
from sbm.evaluator import fid
from sbm.stage import run_stage, stage_parser


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", evaluator="data/models/evaluator",
                        model="data/models/score.safetensors", student="data/models/student.safetensors",
                        metrics="reports/distill_eval.json", detail="reports/distill_detail.json",
                        plot="reports/distill.png").parse_args()
    params = load_params(args.params)
    cfg = params.distill
    d = load_measured(args.data, args.space, args.evaluator, params.score.space, need_evaluator="evaluate_distill")
    teacher, _ = models.load_model(args.model)
    student, smeta = load_student(args.student)
    n = min(params.eval.compare_points, len(d.train))
    floor = d.fid_floor(n, params.seed)
    base = dataclasses.replace(params.sampler, batch_size=min(params.sampler.batch_size, n))
    student_sampler = smeta["student"]["sampler"]
    runs = [("teacher " + base.name + " (full)", teacher, base)]
    for k in cfg.eval_steps:
        runs += [("teacher ddim", teacher, dataclasses.replace(base, name="ddim", steps=k + 1, eta=0.0)),
                 ("teacher ode_heun", teacher, dataclasses.replace(base, name="ode_heun", steps=k + 1)),
                 (f"student ({smeta['student']['method']})", student,
                  dataclasses.replace(base, name=student_sampler, steps=k + 1, eta=0.0))]
    rows, flat = [], {"fid_floor": floor}
    for name, model, sampler in runs:
        z, nfe, seconds = draw(model, sampler, n, d.shape, seed=params.seed)
        row = {"sampler": name, "steps": sampler.steps - 1, "nfe": nfe, "fid": fid(d.test, d.decode(z), d.evaluator),
               "fid_floor": floor, "seconds_per_1000": 1000 * seconds / n}
        rows.append(row)
        key = {"teacher ddim": "teacher_ddim", "teacher ode_heun": "teacher_heun"}.get(name, "student")
        if name.endswith("(full)"):
            flat["teacher_fid_full"], flat["teacher_nfe_full"] = row["fid"], nfe
        else:
            flat[f"{key}_fid_{row['steps']}"] = row["fid"]
        print(f"evaluate_distill: {name}, {row['steps']} steps: FID {row['fid']:.3f} (floor {floor:.3f}), NFE {nfe}, "
              f"{row['seconds_per_1000']:.2f}s per 1000 samples")
    full = rows[0]
    at = {r["steps"]: r for r in rows if r["sampler"].startswith("student")}
    if cfg.steps in at:
        flat[f"speedup_{cfg.steps}"] = full["seconds_per_1000"] / at[cfg.steps]["seconds_per_1000"]
        flat[f"student_over_teacher_fid_{cfg.steps}"] = at[cfg.steps]["fid"] / full["fid"]
    io.write_json(args.metrics, flat)
    io.write_json(args.detail, {"n": n, "method": smeta["student"]["method"], "student_steps": cfg.steps,
                                "teacher_sampler": base.name, "teacher_steps": base.steps, "rows": rows})
    plot_quality_vs_nfe(rows, args.plot, metric="fid")


if __name__ == "__main__":
    run_stage("evaluate_distill", main)
