"""DVC stage `sample`: draw samples from the trained score model.

Reads params (seed, sampler), the model and the data meta; writes
data/samples/samples.safetensors, reports/sample.json and reports/samples.png.
"""

import torch

from sbm import data, io, models
from sbm.comparison import draw
from sbm.config import load_params
from sbm.plots import plot_samples
from sbm.stage import run_stage, stage_parser


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", model="data/models/score.safetensors",
                        out="data/samples/samples.safetensors", metrics="reports/sample.json",
                        plot="reports/samples.png").parse_args()

    params = load_params(args.params)
    cfg = params.sampler
    meta = data.load_meta(args.data)
    model, _ = models.load_model(args.model)
    x, nfe, seconds = draw(model, cfg, cfg.n_samples, meta["shape"], data_range=meta["value_range"],
                           seed=params.seed, progress=True)
    bad = (~torch.isfinite(x.flatten(1))).any(1).sum().item()
    if bad:
        raise ValueError(f"{bad} of {len(x)} samples are not finite (sampler {cfg.name}, step_size "
                         f"{cfg.step_size}); lower sampler.step_size or check the model")
    info = {"sampler": cfg.name, "n": len(x), "nfe": nfe, "wall_time_s": round(seconds, 3),
            "seconds_per_sample": seconds / len(x)}
    io.save_tensors(args.out, {"x": x}, {"kind": "samples", **info})
    io.write_json(args.metrics, info)
    test, _ = data.load_split(args.data, "test")
    plot_samples(x, args.plot, reference=test if x[0].numel() == 2 else None,
                 title=f"{cfg.name}, NFE {nfe}")
    print(f"sample: {len(x)} samples with {cfg.name}, NFE {nfe}, {seconds:.1f}s")


if __name__ == "__main__":
    run_stage("sample", main)
