"""Command line: `python -m sbm <command>` (or `sbm <command>` once installed).

  sample    draw samples from a trained score model into a PNG (and optionally a tensor file);
            with --prompt, from the text-conditional model under classifier-free guidance
  compare   write reports/compare.md: the DVC experiments' params and metrics side by side
  ci-report write reports/ci.md (+ reports/ci/*.png): CI's experiments as a table, `dvc metrics diff`,
            their training curves and sample grids side by side
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from sbm import io
from sbm.config.params import SAMPLERS, SamplerParams, TextParams
from sbm.core.tensor import finite_rows
from sbm.distill.students import load_student
from sbm.errors import ConfigError
from sbm.eval.sweep import draw
from sbm.latent.space import VAE_FILE
from sbm.latent.vae import decode_samples, load_vae
from sbm.pipeline.ci_report import write_ci_report
from sbm.pipeline.experiments import write_report
from sbm.pipeline.plots import image_grid, plot_samples
from sbm.pipeline.prepared import sample_format
from sbm.pipeline.stage import USER_ERRORS
from sbm.text.conditioning import cfg as guided
from sbm.text.conditioning import prompt_ids


def _load_vae(args, meta: dict):
    """The VAE that decodes a latent checkpoint's samples: --vae, else the one in the space
    directory it was trained in (recorded by train_score); None for a pixel-space model."""
    from pathlib import Path


    space = meta.get("space") or {"space": "pixel"}
    if space["space"] != "latent":
        if args.vae:
            raise ValueError(f"--vae {args.vae}: {args.checkpoint} is a pixel-space model; it needs no decoder")
        return None
    path = Path(args.vae) if args.vae else Path(meta.get("space_dir", "data/latent")) / VAE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{args.checkpoint} is a latent model and its VAE {path} does not exist; "
                                "pass --vae PATH (the vae.safetensors of its train_vae stage)")
    vae = load_vae(path)[0]
    if list(vae.latent_shape) != list(space["shape"]) or abs(vae.scale - space["scale"]) > 1e-6 * space["scale"]:
        raise ValueError(f"--vae {path}: latents {list(vae.latent_shape)} with scale {vae.scale:.6g}, but the "
                         f"model was trained on {space['shape']} with scale {space['scale']:.6g}: not its VAE")
    return vae


#: the sample command's flags for the params they set (the params' own checks name the flag)
FLAGS = {"sampler.n_samples": "--n", "sampler.batch_size": "--batch-size", "sampler.steps": "--steps",
         "sampler.step_size": "--step-size", "text.weight": "--guidance"}


def _sampler_params(args) -> SamplerParams:
    """The sampler settings of the command line, checked by `SamplerParams` itself (and --guidance
    by `TextParams.weight`'s range)."""
    try:
        if args.guidance is not None:
            TextParams(weight=args.guidance)
        cfg = SamplerParams(name=args.sampler, n_samples=args.n, batch_size=min(args.n, args.batch_size),
                            steps=args.steps, denoise=not args.no_denoise,
                            quantize=not args.continuous)
        return cfg if args.step_size is None else dataclasses.replace(cfg, step_size=args.step_size)
    except ConfigError as err:
        message = str(err)
        for key, flag in FLAGS.items():
            message = message.replace(key, flag)
        raise ConfigError(message) from None


def _sample(args) -> None:
    cfg = _sampler_params(args)  # bad settings fail before any checkpoint is read

    if args.checkpoint is None:
        args.checkpoint = "data/models/text.safetensors" if args.prompt else "data/models/score.safetensors"
    model, meta = load_student(args.checkpoint)  # any score model; a consistency student too
    cond = None
    folded = (meta.get("student") or {}).get("guidance")  # a student with the teacher's CFG folded in
    if args.guidance is None:
        args.guidance = 1.0 if folded is not None else 2.0
    if args.prompt:  # checked (empty, over-long, not a text model) before any sampling
        cond = prompt_ids(model, args.prompt).repeat_interleave(args.n, 0)
        if folded is not None and args.guidance != 1.0:
            print(f"sample: {args.checkpoint} already samples under CFG w = {folded:g}; --guidance "
                  f"{args.guidance:g} guides it further", file=sys.stderr)
        model = guided(model, args.guidance)
    shape = meta.get("data_shape")
    if not shape:
        raise io.CheckpointError(f"{args.checkpoint}: no data_shape in its metadata; was it written by train_score?")
    vae = _load_vae(args, meta)
    n = args.n * len(args.prompt or [None])
    x, nfe, seconds = draw(model, cfg, n, shape, data_range=meta.get("data_range") if vae is None else None,
                           seed=args.seed, progress=True, cond=cond)
    bad = int((~finite_rows(x)).sum())
    if bad:
        raise ValueError(f"{bad} of {len(x)} samples are not finite ({args.sampler}, steps {args.steps}); "
                         "try more steps or another sampler")
    data = {"data_shape": (meta.get("space") or {}).get("data_shape", shape),
            "data_range": meta.get("data_range"), "n_levels": meta.get("n_levels")}
    x = decode_samples(vae, x, **sample_format(data, quantize=cfg.quantize))
    w = f"CFG w = {args.guidance:g}" + (f" on a student distilled at w = {folded:g}" if folded is not None else "")
    title = f"{args.sampler}, NFE {nfe}" + (f", {w}" if args.prompt else "")
    if args.prompt and x.dim() == 4:
        image_grid(list(x.split(args.n)), args.out, title=title, row_titles=args.prompt)
    else:
        plot_samples(x, args.out, title=title)
    if args.save:
        io.save_tensors(args.save, {"x": x}, {"kind": "samples", "sampler": args.sampler, "nfe": nfe,
                                              "wall_time_s": seconds, "checkpoint": str(args.checkpoint)})
    print(f"sample: {len(x)} samples, {args.sampler}, NFE {nfe}, {seconds:.1f}s -> {args.out}")


def _compare(args) -> None:

    text = write_report(args.out, args.repo)
    print(text if args.print else f"wrote {args.out}")


def _ci_report(args) -> None:
    write_ci_report(args.out, args.exp or None, args.base, args.repo)
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> None:

    ap = argparse.ArgumentParser(prog="sbm", description="score-based generative modelling pipeline")
    sub = ap.add_subparsers(dest="command", required=True)

    smp = sub.add_parser("sample", help="draw samples from a trained model into a PNG")
    smp.add_argument("--checkpoint", default=None, help="a score model (default: data/models/score.safetensors of "
                     "train_score; with --prompt data/models/text.safetensors of train_text), or a distilled "
                     "student (data/models/student.safetensors: --sampler ddim, or consistency for a consistency "
                     "model, with --steps = its steps + 1)")
    smp.add_argument("--n", type=int, default=64, help="number of samples (with --prompt: per prompt)")
    smp.add_argument("--prompt", action="append", default=None,
                     help="a text prompt (repeat for several); needs a text-conditional model")
    smp.add_argument("--guidance", type=float, default=None,
                     help="--prompt: classifier-free guidance weight w (0: unconditional, 1: conditional; "
                     "default 2, or 1 for a student with the guidance folded in: distill.teacher = text)")
    smp.add_argument("--sampler", default="ddim", choices=SAMPLERS)
    smp.add_argument("--steps", type=int, default=50, help="levels/steps from t = 1 to t_min")
    smp.add_argument("--step-size", type=float, default=None, help="Langevin step size ε")
    smp.add_argument("--batch-size", type=int, default=1000)
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--no-denoise", action="store_true", help="skip the final Tweedie denoise")
    smp.add_argument("--continuous", action="store_true",
                     help="keep image samples continuous (default: rounded to the data's quantisation levels, "
                          "as params sampler.quantize; checkpoints without n_levels are never rounded)")
    smp.add_argument("--vae", default=None, help="latent models: the VAE that decodes the samples "
                     "(default: the one recorded in the checkpoint, data/latent/vae.safetensors)")
    smp.add_argument("--out", default="samples.png", help="PNG: scatter (2-D) or image grid")
    smp.add_argument("--save", default=None, help="also write the samples as a safetensors file")
    smp.set_defaults(run=_sample)

    cmp = sub.add_parser("compare", help="compare DVC experiments into a markdown report")
    cmp.add_argument("--out", default="reports/compare.md")
    cmp.add_argument("--repo", default=None, help="DVC repository (default: the current one)")
    cmp.add_argument("--print", action="store_true", help="also print the report")
    cmp.set_defaults(run=_compare)

    ci = sub.add_parser("ci-report", help="the CI report: experiments, metrics diff, curves and samples")
    ci.add_argument("--out", default="reports/ci.md", help="markdown file; its pictures go in the folder of the "
                    "same name without .md (reports/ci/)")
    ci.add_argument("--exp", action="append", default=None,
                    help="an experiment to show (repeat; default: every experiment of the current commit)")
    ci.add_argument("--base", default="HEAD~1", help="the commit of `dvc metrics diff` (default HEAD~1)")
    ci.add_argument("--repo", default=None, help="DVC repository (default: the current one)")
    ci.set_defaults(run=_ci_report)

    args = ap.parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as err:
        print(f"sbm {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
