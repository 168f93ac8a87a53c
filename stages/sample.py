"""DVC stage `sample`: draw samples from the trained score model.

Reads params (seed, sampler), the model, the data meta and the space directory: a latent
model's samples z_s are decoded by the VAE, x = decode(z_s / s) (sbm.latent.vae.decode_samples);
image samples are clamped to the data's value range (and, with sampler.quantize, rounded to its
levels). Writes data/samples/samples.safetensors (data space), reports/sample.json
(sbm.pipeline.outputs's SampleSummary) and reports/samples.png (an image grid, or a scatter for 2-D).

From prompts: with the text-conditional model of train_text, text.n_per_prompt samples for
every prompt of text.prompts under classifier-free guidance of weight text.weight
(sbm.text.conditioning.cfg); the prompts are checked (empty, non-string, over-long) before any
sampling. Writes data/samples/prompts.safetensors and reports/prompt_samples.png (one row per
prompt).
"""

import torch

from sbm import io
from sbm.config.params import load_params
from sbm.eval.sweep import draw
from sbm.latent.space import check_space
from sbm.latent.vae import decode_samples, load_space_vae
from sbm.models.score import load_model
from sbm.pipeline.outputs.sampling import SampleSummary
from sbm.pipeline.plots import image_grid, placeholder, plot_samples
from sbm.pipeline.prepared import load_meta, load_split, sample_format
from sbm.pipeline.stage import run_stage, stage_parser
from sbm.text.conditioning import cfg as guided
from sbm.text.conditioning import prompt_ids
from sbm.text.net import load_text_model


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", model="data/models/score.safetensors",
                        out="data/samples/samples.safetensors", metrics="reports/sample.json",
                        plot="reports/samples.png", text_model="data/models/text.safetensors",
                        prompts_out="data/samples/prompts.safetensors",
                        prompts_plot="reports/prompt_samples.png").parse_args()

    params = load_params(args.params)
    cfg = params.sampler
    meta = load_meta(args.data)
    space = check_space(args.space, params.score.space)
    vae = load_space_vae(args.space)
    model, _ = load_model(args.model)
    no_text = io.skipped_reason(args.text_model)  # data without labels has no text model
    if no_text is None:
        text_model, _ = load_text_model(args.text_model)
        ids = prompt_ids(text_model, params.text.prompts).repeat_interleave(params.text.n_per_prompt, 0)
    image = len(meta["shape"]) == 3
    z, nfe, seconds = draw(model, cfg, cfg.n_samples, space["shape"],
                           data_range=meta["value_range"] if vae is None else None, seed=params.seed, progress=True)
    bad = (~torch.isfinite(z.flatten(1))).any(1).sum().item()
    if bad:
        raise ValueError(f"{bad} of {len(z)} samples are not finite (sampler {cfg.name}, step_size "
                         f"{cfg.step_size}); lower sampler.step_size or check the model")
    x = decode_samples(vae, z, **sample_format(meta, quantize=cfg.quantize))
    info = SampleSummary(sampler=cfg.name, space=space["space"], n=len(x), nfe=nfe, wall_time_s=round(seconds, 3),
                         seconds_per_sample=seconds / len(x))
    io.save_tensors(args.out, {"x": x.contiguous()}, {"kind": "samples", **info.to_json()})
    info.write(args.metrics)
    test, _ = load_split(args.data, "test")
    plot_samples(x, args.plot, reference=test if x[0].numel() == 2 else None,
                 title=f"{cfg.name}, NFE {nfe}" + (" (latent, decoded)" if vae is not None else ""))
    print(f"sample: {len(x)} samples with {cfg.name} in {space['space']} space, NFE {nfe}, {seconds:.1f}s")

    if no_text is not None:
        io.write_skipped(args.prompts_out, "sample (prompts)", no_text)
        placeholder(args.prompts_plot, f"no samples from prompts: {no_text}")
        print(f"sample: no samples from prompts ({no_text})")
        return
    w, n = params.text.weight, params.text.n_per_prompt
    z, nfe, seconds = draw(guided(text_model, w), cfg, len(ids), space["shape"], cond=ids, seed=params.seed)
    xp = decode_samples(vae, z, **sample_format(meta, quantize=cfg.quantize))
    io.save_tensors(args.prompts_out, {"x": xp.contiguous()},
                    {"kind": "samples", "prompts": params.text.prompts, "n_per_prompt": n, "weight": w, "nfe": nfe})
    title = f"classifier-free guidance, w = {w:g}, {cfg.name}"
    if image:
        image_grid(list(xp.split(n)), args.prompts_plot, title=title, row_titles=params.text.prompts)
    else:
        plot_samples(xp, args.prompts_plot, title=title)
    print(f"sample: {n} samples for each of {len(params.text.prompts)} prompts (w = {w:g}), {seconds:.1f}s")


if __name__ == "__main__":
    run_stage("sample", main)
