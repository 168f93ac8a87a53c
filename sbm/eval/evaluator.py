"""The evaluator classifier: trained on the real training split only (never on samples), its
activations are the features every quality metric reads (`sbm.eval.quality`).

Why not just its penultimate layer, as FID usually does: a classifier is trained to ignore
whatever does not change the class, so its last layers barely move for noise, lost contrast or
mild blur, exactly the defects a person sees first in generated digits. Measured on real
training images degraded on purpose (FID against the test split, relative to the undegraded
floor; n = 1438 vs 359, default evaluator): the penultimate layer scored Gaussian noise σ = 0.2
at 0.97×, contrast × 0.8 at 1.05× and blur σ = 0.5 px at 1.38×. Early layers see those
defects (their mean-pooled pre-activations respond 10–100× to blur and contrast) but not the
class. So the features concatenate every layer's pre-activations, each standardised on the
real training split and weighted to carry equal total variance (eq. (4) of `Evaluator`): the
same degradations then score 2.7×, 20× and 19× the floor, while a 1-px shift (a semantic
change) still scores 14×. The degradation ladder (`sbm.eval.degrade`) measures this on every
trained evaluator; nothing is fitted to it.

Architecture: a small CNN for (C, H, W) images, an MLP for vectors (`Evaluator`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from sbm import io
from sbm.errors import CheckpointError
from sbm.nets.classifier import norm_groups


class Evaluator(nn.Module):
    """Classifier p(y|x) whose activations, read at several depths, are the quality features.

    Images (C, H, W): per entry cᵢ of `channels` a stage [conv3×3 (stride 2 for i > 0) →
    GroupNorm → SiLU → conv3×3 → GroupNorm → SiLU], then global average pooling and
    Linear(c_last, hidden) → SiLU; vectors (D,): Linear(D, hidden) → SiLU → Linear(hidden,
    hidden) → SiLU. Head: Linear(hidden, n_classes) on the last SiLU.

    Features φ(x) ∈ R^F, eq. (4): the taps are the output of every GroupNorm
    (images; spatially mean-pooled) or every Linear of the body (vectors), i.e. each layer's
    pre-activation, and the penultimate Linear; tap b has d_b values, F = Σ_b d_b. Each value
    is standardised on the real training split (`calibrate`) and weighted so that every tap
    carries the same total variance F/B:

        φ_b(x) = √(F / (B d_b)) · (a_b(x) − m_b) / (s_b + ε mean(s_b)),   ε = 0.01           (4)

    with m_b, s_b the per-value mean and sd of tap b over the training split (buffers, saved
    with the weights). Before `calibrate`, φ is the unscaled concatenation of the taps."""

    #: ε of eq. (4): keeps a value that barely varies on real data from dominating its tap
    FEATURE_EPS = 0.01

    def __init__(self, shape: Sequence[int], n_classes: int, channels: Sequence[int] = (32, 64), hidden: int = 128):
        super().__init__()
        shape = [int(s) for s in shape]
        if len(shape) not in (1, 3):
            raise ValueError(f"evaluator: examples of shape {shape}; supported are (D,) vectors and (C, H, W) images")
        if n_classes < 2:
            raise ValueError(f"evaluator: {n_classes} classes; a classifier needs at least 2")
        self.config = {"shape": shape, "n_classes": int(n_classes), "channels": [int(c) for c in channels],
                       "hidden": int(hidden)}
        if len(shape) == 3:
            layers: list[nn.Module] = []
            c_prev = shape[0]
            for i, c in enumerate(self.config["channels"]):
                layers += [nn.Conv2d(c_prev, c, 3, stride=1 if i == 0 else 2, padding=1), nn.GroupNorm(norm_groups(c), c),
                           nn.SiLU(), nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(norm_groups(c), c), nn.SiLU()]
                c_prev = c
            self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_prev, hidden),
                                      nn.SiLU())
            tap_types: tuple[type, ...] = (nn.GroupNorm,)
        else:
            self.body = nn.Sequential(nn.Linear(shape[0], hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
            tap_types = ()
        #: indices into body whose outputs are tapped (eq. (4)), and each tap's width d_b
        self.taps = [i for i, m in enumerate(self.body) if isinstance(m, tap_types) or isinstance(m, nn.Linear)]
        self.tap_widths = [_width(self.body[i]) for i in self.taps]
        self.num_features = sum(self.tap_widths)
        self.register_buffer("feature_shift", torch.zeros(self.num_features))
        self.register_buffer("feature_scale", torch.ones(self.num_features))
        self.head = nn.Linear(hidden, n_classes)

    def _in(self, x: Tensor) -> Tensor:
        p = self.head.weight
        return x.reshape(x.shape[0], *self.config["shape"]).to(p.device, p.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, n_classes)."""
        return self.head(self.body(self._in(x)))

    def tapped(self, x: Tensor) -> Tensor:
        """The taps a_b(x) of eq. (4), concatenated (uncalibrated): (N, ...) -> (N, F)."""
        h, taps = self._in(x), []
        for i, layer in enumerate(self.body):
            h = layer(h)
            if i in self.taps:
                taps.append(h.mean((2, 3)) if h.dim() == 4 else h)
        return torch.cat(taps, 1)

    def embed(self, x: Tensor) -> Tensor:
        """Quality features φ(x) of eq. (4) (differentiable), (N, ...) -> (N, F)."""
        return (self.tapped(x) - self.feature_shift) * self.feature_scale

    @torch.no_grad()
    def calibrate(self, x: Tensor, batch_size: int = 1024) -> None:
        """Set m_b, s_b of eq. (4) from real training examples x (N, ...), N >= 2."""
        if len(x) < 2:
            raise ValueError(f"evaluator: calibrating the features needs at least 2 examples; got {len(x)}")
        self.eval()
        a = torch.cat([self.tapped(x[i : i + batch_size]).double() for i in range(0, len(x), batch_size)])
        mean, sd = a.mean(0), a.std(0)
        scale, start, n_taps = torch.empty_like(sd), 0, len(self.tap_widths)
        for width in self.tap_widths:
            s = sd[start : start + width]
            weight = math.sqrt(self.num_features / (n_taps * width))
            scale[start : start + width] = weight / (s + self.FEATURE_EPS * s.mean()).clamp_min(1e-12)
            start += width
        self.feature_shift.copy_(mean.to(self.feature_shift))
        self.feature_scale.copy_(scale.to(self.feature_scale))

    @torch.no_grad()
    def features(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """Quality features φ(x), (N, ...) -> (N, F) float32 on the CPU (eval mode, batched)."""
        self.eval()
        return torch.cat([self.embed(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """argmax_y p(y|x), (N,) int64 on the CPU."""
        self.eval()
        return torch.cat([self(x[i : i + batch_size]).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def _width(layer: nn.Module) -> int:
    """Number of values a tapped layer contributes (channels of a GroupNorm, outputs of a Linear)."""
    return layer.num_channels if isinstance(layer, nn.GroupNorm) else layer.out_features


def accuracy(evaluator: Evaluator, x: Tensor, y: Tensor) -> float:
    """Fraction of examples whose predicted class equals y (N,)."""
    if len(x) == 0:
        raise ValueError("accuracy of an empty set")
    return float((evaluator.predict(x) == y.cpu().long()).double().mean())


def train_evaluator(x: Tensor, y: Tensor, cfg, seed: int, *, shape: Sequence[int] | None = None,
                    device: str | torch.device | None = None, progress: bool = False) -> Evaluator:
    """Train an `Evaluator` on real training data x (N, ...) with labels y (N,) in 0..K−1.

    cfg: params `evaluator` (channels, hidden, steps, batch_size, lr, weight_decay). Cross-
    entropy, AdamW with cosine decay of lr to 0, gradient norm clipped at 1; batches are a
    seeded per-epoch permutation. Then the features are calibrated on x (`Evaluator.calibrate`).
    Deterministic given `seed`; the global RNG is left untouched.
    shape: view examples as this shape (e.g. [1, 8, 8] for flat 64-vectors) to get the CNN.
    Returns the evaluator on the CPU, in eval mode."""
    from tqdm.auto import tqdm

    y = y.long()
    if len(x) != len(y):
        raise ValueError(f"evaluator: {len(x)} examples but {len(y)} labels")
    if len(y) == 0 or int(y.min()) < 0:
        raise ValueError("evaluator: needs a class label >= 0 for every training example; this data set has none "
                         "(label -1), so FID needs another feature map")
    shape = list(x.shape[1:]) if shape is None else [int(s) for s in shape]
    if math.prod(shape) != x[0].numel():
        raise ValueError(f"evaluator: shape {shape} does not hold examples of {x[0].numel()} values")
    n_classes = max(int(y.max()) + 1, 2)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch = min(cfg.batch_size, len(x))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Evaluator(shape, n_classes, cfg.channels, cfg.hidden).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    per_epoch = max(len(x) // batch, 1)
    perm = None
    model.train()
    for step in tqdm(range(cfg.steps), desc="evaluator", disable=not progress):
        if step % per_epoch == 0:
            perm = torch.randperm(len(x), generator=gen)
        idx = perm[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
        lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = nn.functional.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model = model.cpu().eval()
    model.calibrate(x)
    return model


def save_evaluator(path: str | Path, evaluator: Evaluator, extra: dict | None = None) -> None:
    """Weights + JSON config in one safetensors file (sbm.io.save_module); never pickle."""
    io.save_module(path, evaluator, "evaluator", {"evaluator": evaluator.config, **(extra or {})})


def load_evaluator(path: str | Path) -> tuple[Evaluator, dict]:
    """Rebuild an evaluator written by `save_evaluator`. -> (evaluator in eval mode, meta).
    CheckpointError for one written before its features were calibrated (no feature_shift /
    feature_scale), saying to retrain it."""
    try:
        return io.load_module(path, "evaluator", lambda meta: Evaluator(**meta["evaluator"]))
    except CheckpointError as err:
        if "feature_shift" not in str(err):
            raise
        raise CheckpointError(f"{path}: an evaluator written before its features were calibrated (no feature_shift/"
                              "feature_scale); retrain it: dvc repro train_evaluator") from err


# --------------------------------------------------------------------------- the stage's directory

#: file names inside the train_evaluator stage's output directory
EVALUATOR_FILE = "evaluator.safetensors"
NO_EVALUATOR_FILE = "none.json"


def load_evaluator_dir(out_dir: str | Path) -> Evaluator | None:
    """The evaluator in a train_evaluator directory, or None when the data had no labels
    (the directory then holds none.json); FileNotFoundError when it holds neither."""
    d = Path(out_dir)
    if (d / EVALUATOR_FILE).is_file():
        return load_evaluator(d / EVALUATOR_FILE)[0]
    if (d / NO_EVALUATOR_FILE).is_file():
        return None
    raise FileNotFoundError(f"{d}: no {EVALUATOR_FILE} (run the train_evaluator stage)")
