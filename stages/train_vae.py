"""DVC stage `train_vae`: the space the score model lives in (params `score.space`).

latent: train the KL autoencoder of params `vae` (sbm.latent.vae, a diffusers AutoencoderKL) on
the training split under the shared loop (sbm.train.loop: accelerate, EMA, resumable checkpoints
in data/checkpoints/vae, dvclive curve), compute the latent scale s = 1/std of training
latents, encode both splits (one z ~ q(z|x) each, times s) and write the space directory
data/latent (space.json, vae.safetensors, latents.safetensors). Metrics (test split):
reconstruction MSE and PSNR of decode(μ(x)), mean KL(q(z|x) ‖ N(0, I)) in nats, the scale;
with an evaluator (labelled data), the latent model's ceiling: FID and KID against the test split
of the training split's reconstructions from the posterior mean and from a posterior sample,
written as samples are (params sampler.quantize), next to their floor
(sbm.pipeline.measured.reconstruction_ceiling: a latent model that learned the training latents
exactly would score these);
reports/reconstructions.png shows test images above their reconstructions. At every checkpoint
the EMA autoencoder's reconstructions of fixed training examples are pictured below them
(plots/images/samples/<step>.png) and, with the evaluator of data/models/evaluator, their small-n
FID/KID against the test split logged (plots/metrics/quality/*.tsv; floor: the same real examples):
the ceiling of a latent model against step (params `monitor`, sbm.pipeline.monitoring).

pixel: no autoencoder; data/latent holds only space.json (the score model trains on the
data), the picture shows test data only, the dvclive curve has no rows (its header only) and
plots/images is empty.
"""

import shutil
from pathlib import Path

import torch

from sbm.config.params import load_params, to_dict
from sbm.latent.space import SPACE_FILE
from sbm.latent.vae import build_vae, encode_dataset, latent_scale, reconstruction_metrics, vae_loss, write_space
from sbm.pipeline.measured import load_measured, no_evaluator, reconstruction_ceiling
from sbm.pipeline.monitoring import build_reconstruction_monitor
from sbm.pipeline.outputs.training import PixelSpace, ReconstructionCeiling, VaeTraining
from sbm.pipeline.plots import image_grid, plot_samples
from sbm.pipeline.prepared import load_meta, load_split
from sbm.pipeline.stage import run_stage, stage_parser
from sbm.pipeline.training import data_fingerprint, fit, n_params
from sbm.train.loop import loop_params
from sbm.train.monitor import images_dir


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", evaluator="data/models/evaluator", out="data/latent",
                        checkpoints="data/checkpoints/vae",
                        live="reports/live/train_vae", metrics="reports/train_vae.json",
                        plot="reports/reconstructions.png").parse_args()
    params = load_params(args.params)
    meta = load_meta(args.data)
    test, _ = load_split(args.data, "test")
    shown = test[:16]
    if params.score.space == "pixel":
        write_space(args.out, meta["shape"])
        curve = Path(args.live) / "plots" / "metrics" / "loss.tsv"  # declared in dvc.yaml: no rows, no VAE
        shutil.rmtree(Path(args.live), ignore_errors=True)
        curve.parent.mkdir(parents=True)
        curve.write_text("step\tloss\n")
        images_dir(args.live)  # declared in dvc.yaml: no pictures, no VAE
        Path(args.checkpoints).mkdir(parents=True, exist_ok=True)  # declared (persisted) output; kept as is
        PixelSpace().write(args.metrics)
        plot_samples(test[:64] if len(meta["shape"]) == 3 else test, args.plot,
                     title="pixel space (no autoencoder): test data")
        print(f"train_vae: score.space = pixel, no autoencoder; wrote {args.out}/{SPACE_FILE}")
        return

    if len(meta["shape"]) != 3:
        raise ValueError(f"score.space = 'latent' needs image data (C, H, W); {args.data} holds examples of shape "
                         f"{meta['shape']}: set score.space=pixel")
    x, _ = load_split(args.data, "train")
    torch.manual_seed(params.seed)
    vae = build_vae(params.vae, meta["shape"])
    cfg = loop_params(params.train, params.vae)
    fp_config = {"vae": vae.to_config(), "data": data_fingerprint(meta, ("name", "shape", "n_train", "seed"))}
    monitor = build_reconstruction_monitor(params, data=args.data, evaluator=args.evaluator)
    done = fit(vae, vae_loss, x, cfg, args, seed=params.seed, fingerprint=fp_config, monitor=monitor)
    if done is None:
        return
    ema_vae, result = done
    ema_vae = ema_vae.cpu().eval()
    g = torch.Generator().manual_seed(params.seed)
    ema_vae.scale = latent_scale(ema_vae, x, generator=g)
    z = {"train": encode_dataset(ema_vae, x, generator=g), "test": encode_dataset(ema_vae, test, generator=g)}
    info = write_space(args.out, meta["shape"], ema_vae, z)
    rec = reconstruction_metrics(ema_vae, test)
    ceiling = None
    if no_evaluator(args.evaluator) is None:  # labelled data: the latent model's ceiling on the evaluator's features
        d = load_measured(args.data, args.out, args.evaluator, "latent", quantize=params.sampler.quantize)
        ceiling = ReconstructionCeiling.from_json(
            reconstruction_ceiling(d, d.meter(params.evaluator, params.seed), seed=params.seed), file="ceiling")
    with torch.no_grad():
        shown_rec = ema_vae.decode(ema_vae.encode(shown)).clamp(-1, 1)
    image_grid([shown, shown_rec], args.plot, row_titles=["test images", "reconstructions decode(μ(x))"],
               title=f"VAE: PSNR {rec['psnr']:.1f} dB, latents {info['shape']}")
    VaeTraining(recon_mse=rec["mse"], recon_psnr=rec["psnr"], kl=rec["kl"], scale=ema_vae.scale,
                latent_shape=tuple(info["shape"]), final_loss=result.final_loss, steps=result.steps,
                train_seconds=round(result.total_seconds, 2), resumed_from=result.resumed_from,
                n_params=n_params(ema_vae), vae=to_dict(params.vae), ceiling=ceiling).write(args.metrics)
    print(f"train_vae: PSNR {rec['psnr']:.2f} dB, MSE {rec['mse']:.4f}, KL {rec['kl']:.2f} nats, scale "
          f"{ema_vae.scale:.4f}, latents {info['shape']} ({result.seconds:.1f}s) -> {args.out}")
    if ceiling is not None:
        print(f"train_vae: the latent model's ceiling, FID of the training split's reconstructions against test: "
              f"{ceiling.ceiling_fid_mean:.3f} (posterior mean), {ceiling.ceiling_fid_sample:.3f} (a posterior "
              f"sample); floor {ceiling.ceiling_fid_floor:.3f}")


if __name__ == "__main__":
    run_stage("train_vae", main)
