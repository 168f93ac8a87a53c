"""DVC stage `evaluate_guidance`: class-conditional samples by classifier guidance.

For every scale s in guidance.classifier_scales the unconditional score model is wrapped as
score + s·∇ₓ log p(y | x_t, t) (sbm.guidance.ClassifierGuidance, with the noise-conditional
classifier of train_classifier) and sampled with params `sampler` for guidance.n_per_class
samples of every class y; latent samples are decoded. Per scale: the evaluator's accuracy on
the samples (the fraction it assigns to the class they were generated for, overall and per
class), FID of all the conditional samples against the test split next to FID(train, test),
NFE and wall time. s = 0 is the unguided model (accuracy ≈ the class frequency, ~10%).

Writes reports/guidance.json (flat metrics: cg_acc_s<scale>, cg_fid_s<scale>),
reports/guidance_detail.json (rows with per-class accuracy) and reports/guidance.png.
"""

import torch

from sbm import data, io, latent, models
from sbm.classifier import load_classifier
from sbm.comparison import draw, plot_guidance
from sbm.config import load_params
from sbm.evaluator import accuracy, fid, load_evaluator_dir
from sbm.guidance import ClassifierGuidance
from sbm.stage import run_stage, stage_parser


def _key(scale: float) -> str:
    return f"{scale:g}".replace(".", "p").replace("-", "m")


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", evaluator="data/models/evaluator",
                        model="data/models/score.safetensors", classifier="data/models/classifier.safetensors",
                        metrics="reports/guidance.json", detail="reports/guidance_detail.json",
                        plot="reports/guidance.png").parse_args()
    params = load_params(args.params)
    cfg = params.guidance
    meta = data.load_meta(args.data)
    space = latent.check_space(args.space, params.score.space)
    vae = latent.load_space_vae(args.space)
    evaluator = load_evaluator_dir(args.evaluator)
    if evaluator is None:
        raise ValueError(f"{args.evaluator}: no evaluator (the data has no labels); guidance needs class labels")
    model, _ = models.load_model(args.model)
    classifier, _ = load_classifier(args.classifier)
    train_x, _ = data.load_split(args.data, "train")
    test_x, _ = data.load_split(args.data, "test")
    k = classifier.n_classes
    y = torch.arange(k).repeat_interleave(cfg.n_per_class)  # (K · n,) the class each sample is drawn for
    m = min(len(y), len(train_x))
    floor = fid(test_x, train_x[torch.randperm(len(train_x), generator=torch.Generator().manual_seed(params.seed))[:m]],
                evaluator)
    rows, flat = [], {"cg_fid_floor": floor}
    for s in cfg.classifier_scales:
        guided = ClassifierGuidance(model, classifier, s)
        z, nfe, seconds = draw(guided, params.sampler, len(y), space["shape"], cond=y, seed=params.seed, progress=True)
        x = latent.decode_samples(vae, z, data_range=meta["value_range"] if len(meta["shape"]) == 3 else None)
        pred = evaluator.predict(x)
        per_class = [float((pred[y == c] == c).double().mean()) for c in range(k)]
        row = {"method": "classifier", "scale": s, "accuracy": accuracy(evaluator, x, y), "per_class": per_class,
               "fid": fid(test_x, x[torch.randperm(len(x), generator=torch.Generator().manual_seed(params.seed))[:m]],
                          evaluator),
               "fid_floor": floor, "nfe": nfe, "seconds_per_sample": seconds / len(x)}
        rows.append(row)
        flat[f"cg_acc_s{_key(s)}"], flat[f"cg_fid_s{_key(s)}"] = row["accuracy"], row["fid"]
        print(f"evaluate_guidance: classifier scale {s:g}: accuracy {row['accuracy']:.3f}, FID {row['fid']:.3f} "
              f"(floor {floor:.3f}), NFE {nfe}")
    io.write_json(args.metrics, flat)
    io.write_json(args.detail, {"n_per_class": cfg.n_per_class, "sampler": params.sampler.name, "rows": rows})
    plot_guidance(rows, args.plot)


if __name__ == "__main__":
    run_stage("evaluate_guidance", main)
