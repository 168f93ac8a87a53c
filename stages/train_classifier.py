"""DVC stage `train_classifier`: the noise-conditional classifier p(y | x_t, t) of classifier
guidance (sbm.models.classifier), in the space the score model lives in (params `score.space`):
the VAE's scaled latents or the data itself, noised by the same process at every t.

Trained under the shared loop (sbm.train.loop: accelerate, EMA, resumable checkpoints in
data/checkpoints/classifier) with params `classifier` (architecture, steps, batch_size, lr)
and the loop settings of `train`. Metrics: test accuracy in each quarter of the noise range
[t_min, 1] (q1 = least noise); writes data/models/classifier.safetensors and
reports/train_classifier.json. At every checkpoint the same accuracies of the EMA classifier, on
monitor.n_quality test examples per quarter (in the space it is trained in) noised with the same
seeded t and ε each time, are logged through dvclive as quality/accuracy_q1..q4 against step
(params `monitor`: `accuracy_monitor`; a resumed run does not repeat a step's row).
"""

import torch
from torch import Tensor, nn

from sbm.config.params import Params, load_params, to_dict
from sbm.core.processes import build_process
from sbm.models.classifier import NoisyClassifier, accuracy_by_noise_quarter, classifier_loss, save_classifier
from sbm.pipeline.outputs.training import ClassifierTraining
from sbm.pipeline.skips import skip_training
from sbm.pipeline.spaces import training_set
from sbm.pipeline.stage import run_stage, stage_parser
from sbm.pipeline.training import data_fingerprint, fit
from sbm.train.loop import loop_params
from sbm.train.monitor import Monitor


def accuracy_monitor(params: Params, x_test: Tensor, y_test: Tensor) -> Monitor:
    """The training monitor of params `monitor` for the classifier: `sbm.train.monitor.Monitor`
    without samples or pictures (n_grid, sampler and nfe do not apply). Its "draw" at a checkpoint is
    the EMA classifier's accuracy in each quarter of the noise range (`accuracy_by_noise_quarter`,
    the stage's final metric) on n_quality test examples per quarter, drawn with replacement from
    x_test (N, ...) (labels y_test (N,), in the space the classifier is trained in) and noised to
    x_t = α(t) x₀ + σ(t) ε, t ~ U(quarter); logged as quality/accuracy_q1..q4 (q1 = least noise).
    The draws, t and ε come from a generator seeded by params seed at every checkpoint: every
    checkpoint sees the same noisy inputs, so the curves differ by the weights only.
    monitor.enabled false or n_quality 0 -> an inactive monitor (shows nothing)."""
    m = params.monitor
    if not m.enabled or not m.n_quality:
        return Monitor(draw=None, n_grid=0, n_quality=0)

    def accuracies(model: nn.Module, n: int) -> Tensor:
        """(1, 4): the accuracies at n test examples per quarter, q1 first (the one row `measure` names)."""
        device = next(model.parameters()).device
        acc = accuracy_by_noise_quarter(model, x_test.to(device), y_test, n,
                                        generator=torch.Generator().manual_seed(params.seed))
        return torch.tensor([list(acc.values())], dtype=torch.float64)

    def measure(row: Tensor) -> dict[str, float]:
        return {f"accuracy_q{i}": float(a) for i, a in enumerate(row[0], start=1)}

    return Monitor(draw=accuracies, measure=measure, n_grid=0, n_quality=m.n_quality)


def main() -> None:
    args = stage_parser(__doc__, data="data/prepared", space="data/latent", out="data/models/classifier.safetensors",
                        checkpoints="data/checkpoints/classifier", live="reports/live/train_classifier",
                        metrics="reports/train_classifier.json").parse_args()
    params = load_params(args.params)
    cfg = params.classifier
    x, y, meta = training_set(args.data, args.space, params.score.space, "train")
    if y is None:
        return skip_training("train_classifier", f"data {meta['name']!r} has no class labels, so there is no "
                             "classifier to guide with", out=args.out, metrics=args.metrics,
                             checkpoints=args.checkpoints, live=args.live)
    x_test, y_test, _ = training_set(args.data, args.space, params.score.space, "test")
    process = build_process(params.process, meta)  # the score model's process (same space, same σ_max)
    torch.manual_seed(params.seed)
    model = NoisyClassifier(meta["shape"], int(y.max()) + 1, process, cfg.channels, cfg.hidden, cfg.embedding_dim,
                            cfg.depth, float(x.std()))
    loop = loop_params(params.train, cfg)
    fp = {"classifier": model.config, "data": data_fingerprint(meta, ("name", "shape", "n_train", "seed"))}
    monitor = accuracy_monitor(params, x_test, y_test)
    done = fit(model, classifier_loss, x, loop, args, seed=params.seed, fingerprint=fp, cond=y, monitor=monitor)
    if done is None:
        return
    ema, result = done
    ema = ema.cpu().eval()
    acc = accuracy_by_noise_quarter(ema, x_test, y_test, generator=torch.Generator().manual_seed(params.seed))
    save_classifier(args.out, ema, {"space": params.score.space, "test_accuracy": acc})
    ClassifierTraining(accuracy_by_quarter=tuple(acc.values()), space=params.score.space,
                       final_loss=result.final_loss, steps=result.steps, train_seconds=round(result.total_seconds, 2),
                       classifier=to_dict(cfg)).write(args.metrics)
    print("train_classifier: test accuracy by noise quarter (q1 least noise) "
          + ", ".join(f"{q} {a:.3f}" for q, a in acc.items()) + f" ({result.seconds:.1f}s) -> {args.out}")


if __name__ == "__main__":
    run_stage("train_classifier", main)
