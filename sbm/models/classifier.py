"""A noise-conditional classifier p(y | x_t, t): the ingredient of classifier guidance.

It is trained on noisy inputs at every level of a noise process (Song et al. 2021, sec. 5
and App. I.1; Dhariwal & Nichol 2021, sec. 4), with x_t = α(t) x₀ + σ(t) ε::

    ℓ(x₀, y) = −log p_φ(y | x_t, t),   t ~ process.sample_t,  ε ~ N(0, I)            (1)

so that ∇ₓ log p_φ(y | x_t, t) is available at the noise level a sampler is at
(`sbm.core.guidance.ClassifierGuidance`). As `sbm.core.model.ScoreModel` does, the network sees its
input scaled to unit variance at every level (c_in(t) of `sbm.core.model` eq. 2, with σ_data
the data's standard deviation) and the noise conditioning of the process::

    logits = net(c_in(t) · x_t, noise_cond(t))                                             (2)

Architectures (`.net`, the trainable part, so `sbm.train.loop.train` trains it):

- vectors (D,): a residual MLP with the sinusoidal embedding of noise_cond(t) added inside
  every block (as `sbm.nets.score.MLPNet`), then LayerNorm → SiLU → Linear(hidden, K);
- images / latents (C, H, W): one conv stage per entry cᵢ of `channels` —
  conv3×3 (stride 2 for i > 0) → GroupNorm → + Linear(emb) → SiLU → conv3×3 → GroupNorm → SiLU —
  then global average pooling, Linear(c_last, hidden) → SiLU → Linear(hidden, K).

Checkpoints are safetensors weights + the JSON config (`save_classifier`/`load_classifier`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from sbm import io
from sbm.core.model import c_in
from sbm.core.processes import NoiseProcess, process_from_config
from sbm.core.tensor import bcast, per_example
from sbm.nets.classifier import ConvClassifierNet, MLPClassifierNet


class NoisyClassifier(nn.Module):
    """p_φ(y | x_t, t) of eq. (1)–(2) for examples of `shape` ((D,) or (C, H, W)) and K classes.

    channels: conv stage widths (images only); hidden: MLP width / head width; depth: MLP
    residual blocks (vectors only); embedding_dim: sinusoidal features of noise_cond(t);
    data_std: σ_data of eq. (2). `.config` (JSON-able, with the process) rebuilds it through
    `classifier_from_config`."""

    def __init__(self, shape: Sequence[int], n_classes: int, process: NoiseProcess, channels: Sequence[int] = (32, 64),
                 hidden: int = 128, embedding_dim: int = 64, depth: int = 2, data_std: float = 1.0):
        super().__init__()
        shape = [int(s) for s in shape]
        if len(shape) not in (1, 3):
            raise ValueError(f"classifier: examples of shape {shape}; supported are (D,) vectors and (C, H, W) images")
        if n_classes < 2:
            raise ValueError(f"classifier: {n_classes} classes; a classifier needs at least 2")
        if not data_std > 0:
            raise ValueError(f"classifier: data_std = {data_std}: must be > 0")
        channels = [int(c) for c in channels]
        if len(shape) == 3 and (not channels or min(channels) < 1):
            raise ValueError(f"classifier: channels = {channels}: need at least one positive width")
        self.config = {"shape": shape, "n_classes": int(n_classes), "channels": channels, "hidden": int(hidden),
                       "embedding_dim": int(embedding_dim), "depth": int(depth), "data_std": float(data_std),
                       "process": process.to_config()}
        self.process = process
        self.shape, self.n_classes, self.data_std = shape, int(n_classes), float(data_std)
        if len(shape) == 1:
            self.net = MLPClassifierNet(shape[0], n_classes, hidden, depth, embedding_dim)
        else:
            self.net = ConvClassifierNet(shape[0], n_classes, channels, hidden, embedding_dim)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Logits of p(y | x_t, t), eq. (2): x (N, *shape), t (N,) or a scalar -> (N, K)."""
        t = per_example(t, x.shape[0], x.device)
        a, s = self.process.marginal(t)
        scale = c_in(a, s, self.data_std).to(x.dtype)
        return self.net(bcast(scale, x) * x, self.process.noise_cond(t))

    def log_prob(self, x: Tensor, t: Tensor | float, y: Tensor) -> Tensor:
        """log p(y | x_t, t) per example, (N,); y: (N,) class indices (differentiable in x)."""
        logp = torch.log_softmax(self(x, t), -1)
        return logp.gather(1, y.long().reshape(-1, 1).to(logp.device)).squeeze(1)


def classifier_loss(model: NoisyClassifier, x0: Tensor, y: Tensor) -> Tensor:
    """Eq. (1) per example, (N,): the `loss_fn(model, x, cond)` of `sbm.train.loop.train` with
    cond = the labels y (N,). t and ε come from the global generator (seeded per step by
    the training loop)."""
    if y is None:
        raise ValueError("classifier_loss needs the labels: train(..., cond=labels)")
    t = model.process.sample_t(x0.shape[0], device=x0.device)
    xt = model.process.perturb(x0, t, torch.randn_like(x0))
    return nn.functional.cross_entropy(model(xt, t), y.long(), reduction="none")


def noise_quarters(process: NoiseProcess) -> list[tuple[float, float]]:
    """The four equal parts of [t_min, 1], from the least noisy (q1) to the noisiest (q4)."""
    lo = float(process.t_min)
    edges = [lo + (1 - lo) * i / 4 for i in range(5)]
    return list(zip(edges[:-1], edges[1:]))


@torch.no_grad()
def accuracy_by_noise_quarter(model, x0: Tensor, y: Tensor, n_per_quarter: int | None = None, *,
                              generator: torch.Generator | None = None, batch_size: int = 4096) -> dict[str, float]:
    """Accuracy of argmax_y p(y | x_t, t) with t ~ U(quarter) per example and x_t = α x₀ + σ ε,
    for each quarter of `noise_quarters` -> {"q1": acc, ..., "q4": acc} (q1 = least noise).

    model: anything with forward(x, t) -> logits (N, K) and `.process`; x0 (N, ...), y (N,).
    n_per_quarter: examples drawn (with replacement) from x0 per quarter; None: all of them.
    Deterministic given `generator` (t, ε and the draws come from it, on the CPU)."""
    if len(x0) != len(y) or len(x0) == 0:
        raise ValueError(f"accuracy_by_noise_quarter: {len(x0)} examples and {len(y)} labels")
    out = {}
    for q, (lo, hi) in enumerate(noise_quarters(model.process), start=1):
        idx = torch.arange(len(x0)) if n_per_quarter is None else torch.randint(0, len(x0), (n_per_quarter,),
                                                                                  generator=generator)
        t = lo + (hi - lo) * torch.rand(len(idx), generator=generator, dtype=torch.float64)
        eps = torch.randn((len(idx), *x0.shape[1:]), generator=generator, dtype=x0.dtype)
        correct = 0
        for i in range(0, len(idx), batch_size):
            sl = slice(i, i + batch_size)
            x = x0[idx[sl]]
            tt = t[sl].to(device=x.device, dtype=x.dtype)
            pred = model(model.process.perturb(x, tt, eps[sl].to(x.device)), tt).argmax(-1).cpu()
            correct += int((pred == y[idx[sl]].cpu().long()).sum())
        out[f"q{q}"] = correct / len(idx)
    return out


def classifier_from_config(cfg: dict) -> NoisyClassifier:
    """Rebuild an (untrained) NoisyClassifier from its `.config`."""
    cfg = dict(cfg)
    process = process_from_config(cfg.pop("process"))
    return NoisyClassifier(process=process, **cfg)


def save_classifier(path: str | Path, model: NoisyClassifier, extra: dict | None = None) -> None:
    """Weights (net.*) + config (JSON header) in one safetensors file (sbm.io); never pickle."""
    io.save_module(path, model, "noisy_classifier", {"classifier": model.config, **(extra or {})})


def load_classifier(path: str | Path) -> tuple[NoisyClassifier, dict]:
    """Rebuild a classifier written by `save_classifier` -> (classifier in eval mode, meta).
    Raises io.CheckpointError naming the file if it is missing, corrupt or another kind."""
    return io.load_module(path, "noisy_classifier", lambda meta: classifier_from_config(meta["classifier"]),
                          "noisy classifier")
