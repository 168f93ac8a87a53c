"""DVC stage `train_score`: fit the noise-conditional score model on the prepared data.

Reads params (seed, loss, objective, process, model, train, score, monitor), data/prepared and
the space directory data/latent (sbm.latent.vae): with score.space = latent the model is trained on
the VAE's scaled training latents z·s, with pixel on the training split itself. Writes the EMA
model to data/models/score.safetensors, resumable state to data/checkpoints/score
(persisted by DVC), the loss curve through dvclive and reports/train_score.json. At every
checkpoint the EMA model's samples are pictured and, with the evaluator of data/models/evaluator,
their small-n FID/KID logged through dvclive too (params `monitor`, sbm.pipeline.monitoring).

Started by `train.launcher` (dvc.yaml: `${train.launcher} stages/train_score.py`): `python`
runs one process; `accelerate launch --multi_gpu --num_processes N --main_process_port 0`
runs N that share each batch (sbm.train.loop). Only the main process writes files.
"""

import torch

from sbm.config.params import load_params, to_dict
from sbm.core.losses import build_loss
from sbm.core.model import ScoreModel
from sbm.core.processes import build_process
from sbm.latent.space import check_space
from sbm.models.score import save_model
from sbm.nets.score import build_net
from sbm.pipeline.monitoring import build_monitor
from sbm.pipeline.outputs.training import ScoreTraining
from sbm.pipeline.spaces import training_set
from sbm.pipeline.stage import run_stage, stage_parser
from sbm.pipeline.training import data_fingerprint, fit, n_params


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", evaluator="data/models/evaluator",
                        out="data/models/score.safetensors", checkpoints="data/checkpoints/score",
                        live="reports/live/train_score", metrics="reports/train_score.json").parse_args()

    params = load_params(args.params)
    space = check_space(args.space, params.score.space)
    x, _, meta = training_set(args.data, args.space, params.score.space, "train")
    process = build_process(params.process, meta)  # ve/ncsn: σ_max of the space trained in
    data_std = float(x.std())  # σ_data of the input scaling c_in (sbm.models.score, eq. 2)
    torch.manual_seed(params.seed)  # the initial weights (under DDP, rank 0's are broadcast)
    model = ScoreModel(build_net(params.model, meta["shape"]), process, params.model.prediction, data_std)
    loss_fn = build_loss(params.loss, params.objective, meta["dim"])  # refuses esm in high dim, before work
    fp_config = {"loss": params.loss, "objective": to_dict(params.objective), "model": model.to_config(),
                 "data": data_fingerprint(meta), "space": space}
    monitor = build_monitor(params, data=args.data, space=args.space, evaluator=args.evaluator)
    done = fit(model, loss_fn, x, params.train, args, seed=params.seed, fingerprint=fp_config, monitor=monitor)
    if done is None:
        return
    ema_model, result = done
    # data_shape: the shape the model samples (latents for a latent model); space: how to decode them
    save_model(args.out, ema_model, extra={"loss": params.loss, "data_shape": meta["shape"],
                                              "data_range": meta.get("value_range"),
                                              "n_levels": meta.get("n_levels"),
                                              "space": space, "space_dir": str(args.space)})
    out = ScoreTraining(loss=params.loss, space=space["space"], final_loss=result.final_loss, steps=result.steps,
                        train_seconds=round(result.total_seconds, 2), resumed_from=result.resumed_from,
                        n_params=n_params(ema_model), world_size=result.world_size)
    out.write(args.metrics)
    print(f"train_score: {params.loss} loss {result.final_loss:.4f} after {result.steps} steps "
          f"({result.seconds:.1f}s, {out.n_params} parameters)")


if __name__ == "__main__":
    run_stage("train_score", main)
