"""The evaluator classifier, and FID on its features (or on Inception features when available).

FID (Heusel et al. 2017) between real and generated sets, with (μ_r, Σ_r), (μ_g, Σ_g) the
mean and covariance of their features φ(x) ∈ R^F::

    FID = ‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})                                   (1)

The default feature map φ is the penultimate layer of an evaluator classifier trained on
the *real training split only* (never on samples): a small CNN for (C, H, W) images, an
MLP for vectors. Inception-v3 features (the usual FID) are for RGB data and need the
torch-fidelity package and its weights file on disk; nothing is downloaded here.

FID is computed by torchmetrics' `FrechetInceptionDistance(feature=<nn.Module>)`. What its
source (torchmetrics 1.9, image/fid.py) requires of a custom feature module:

- forward(imgs) must return (N, F). F is read from a `num_features` attribute (int or
  0-d tensor); without it torchmetrics probes the module with a dummy batch of
  `input_img_size` = (3, 299, 299), uint8 in [0, 255] (float32 in [0, 1] if normalize=True),
  which would not fit our data. `EvaluatorFeatures` therefore sets `num_features`.
- `update(imgs, real)` hands `imgs` to the module unchanged for a custom module (the
  `normalize` rescale to uint8 applies only to the built-in Inception), so float data in
  [-1, 1] of any shape is fine as long as the module accepts it: `EvaluatorFeatures`
  reshapes to the evaluator's input shape and casts to its dtype.
- Features are accumulated as float64 sums (Σφ, ΣφφT) and (1) is evaluated with
  eigvals(Σ_r Σ_g)^{1/2} in float64; the result is cast back to the features' dtype.
- The module becomes a child of the metric (`.to`, `.set_dtype` would move it), so `fid`
  wraps a copy of the evaluator.

`evaluator_metrics` (labelled data)::

      fid       = FID(samples, test),  fid_floor = FID(train, test)                          (2)
      class_tv  = ½ Σ_k |q_k − p_k|,  q = evaluator's class frequencies on the samples,
                  p = class frequencies of the training split                                (3)

Both FIDs use the same number m = min(N_samples, N_train) of generated / training
examples against the whole test split, so their finite-sample biases match and the floor
is what a perfect model scores at this m.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from sbm import io
from sbm.nets.classifier import norm_groups

#: the file torch-fidelity's Inception-v3 feature extractor loads (its release asset)
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


class MissingInceptionWeights(FileNotFoundError):
    """Inception FID was asked for but torch-fidelity or its weights are not available."""


class Evaluator(nn.Module):
    """Classifier p(y|x) whose penultimate activations are the FID features, (N, ...) -> logits (N, K).

    Images (C, H, W): per entry cᵢ of `channels` a stage [conv3×3 (stride 2 for i > 0) →
    GroupNorm → SiLU → conv3×3 → GroupNorm → SiLU], then global average pooling and
    Linear(c_last, hidden) → SiLU = the features (N, hidden); vectors (D,): Linear(D, hidden)
    → SiLU → Linear(hidden, hidden) → SiLU = the features. Head: Linear(hidden, n_classes)."""

    def __init__(self, shape: Sequence[int], n_classes: int, channels: Sequence[int] = (32, 64), hidden: int = 128):
        super().__init__()
        shape = [int(s) for s in shape]
        if len(shape) not in (1, 3):
            raise ValueError(f"evaluator: examples of shape {shape}; supported are (D,) vectors and (C, H, W) images")
        if n_classes < 2:
            raise ValueError(f"evaluator: {n_classes} classes; a classifier needs at least 2")
        self.config = {"shape": shape, "n_classes": int(n_classes), "channels": [int(c) for c in channels],
                       "hidden": int(hidden)}
        self.num_features = int(hidden)
        if len(shape) == 3:
            layers: list[nn.Module] = []
            c_prev = shape[0]
            for i, c in enumerate(self.config["channels"]):
                layers += [nn.Conv2d(c_prev, c, 3, stride=1 if i == 0 else 2, padding=1), nn.GroupNorm(norm_groups(c), c),
                           nn.SiLU(), nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(norm_groups(c), c), nn.SiLU()]
                c_prev = c
            self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_prev, hidden),
                                      nn.SiLU())
        else:
            self.body = nn.Sequential(nn.Linear(shape[0], hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.head = nn.Linear(hidden, n_classes)

    def _in(self, x: Tensor) -> Tensor:
        p = self.head.weight
        return x.reshape(x.shape[0], *self.config["shape"]).to(p.device, p.dtype)

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate activations (differentiable), (N, ...) -> (N, hidden)."""
        return self.body(self._in(x))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, n_classes)."""
        return self.head(self.embed(x))

    @torch.no_grad()
    def features(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """FID features φ(x), (N, ...) -> (N, hidden) float32 on the CPU (eval mode, batched)."""
        self.eval()
        return torch.cat([self.embed(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """argmax_y p(y|x), (N,) int64 on the CPU."""
        self.eval()
        return torch.cat([self(x[i : i + batch_size]).argmax(1).cpu() for i in range(0, len(x), batch_size)])


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
    seeded per-epoch permutation. Deterministic given `seed`; the global RNG is left untouched.
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
    return model.cpu().eval()


def save_evaluator(path: str | Path, evaluator: Evaluator, extra: dict | None = None) -> None:
    """Weights + JSON config in one safetensors file (sbm.io.save_module); never pickle."""
    io.save_module(path, evaluator, "evaluator", {"evaluator": evaluator.config, **(extra or {})})


def load_evaluator(path: str | Path) -> tuple[Evaluator, dict]:
    """Rebuild an evaluator written by `save_evaluator`. -> (evaluator in eval mode, meta)."""
    return io.load_module(path, "evaluator", lambda meta: Evaluator(**meta["evaluator"]))


# --------------------------------------------------------------------------- FID


class EvaluatorFeatures(nn.Module):
    """An evaluator's penultimate layer as a torchmetrics FID feature module (module docstring).

    forward: any float tensor holding (N, *evaluator shape) values -> (N, F) float32."""

    def __init__(self, evaluator: Evaluator):
        super().__init__()
        self.evaluator = copy.deepcopy(evaluator).eval()
        self.num_features = evaluator.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.evaluator.embed(x).float().cpu()  # the metric's states live on the CPU

    def train(self, mode: bool = True):  # never leaves eval mode, like torchmetrics' Inception
        return super().train(False)


def _fid_metric(feature: nn.Module, real: Tensor, fake: Tensor, batch_size: int, prep=lambda t: t) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 examples per set; got {len(real)} real and {len(fake)} generated")
    metric = FrechetInceptionDistance(feature=feature, reset_real_features=True)
    with torch.no_grad():
        for i in range(0, len(real), batch_size):
            metric.update(prep(real[i : i + batch_size]), real=True)
        for i in range(0, len(fake), batch_size):
            metric.update(prep(fake[i : i + batch_size]), real=False)
        return float(metric.compute())


def fid(real: Tensor, fake: Tensor, evaluator: Evaluator | nn.Module, *, batch_size: int = 1000) -> float:
    """FID, eq. (1), between `real` and `fake` (N, ...) in the evaluator's feature space.

    evaluator: an `Evaluator` (its penultimate features), or any nn.Module mapping a batch
    to (N, F) that has a `num_features` attribute. Data as stored: float, [-1, 1], any shape
    the evaluator accepts."""
    feature = EvaluatorFeatures(evaluator) if isinstance(evaluator, Evaluator) else evaluator
    if not hasattr(feature, "num_features"):
        raise TypeError("fid: a custom feature module needs a `num_features` attribute (torchmetrics would "
                        "otherwise probe it with a (3, 299, 299) uint8 image)")
    return _fid_metric(feature, real, fake, batch_size)


def _torch_fidelity_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch_fidelity") is not None


def find_inception_weights(weights_path: str | Path | None = None) -> str:
    """Path of torch-fidelity's Inception-v3 weights, or MissingInceptionWeights naming what is missing.

    Looks at `weights_path` (params evaluator.inception_weights), else at
    `<torch hub dir>/checkpoints/weights-inception-2015-12-05-6726825d.pth` (where
    torch-fidelity caches its download). Never downloads."""
    missing = []
    if not _torch_fidelity_available():
        missing.append("the torch-fidelity package (pip install torch-fidelity)")
    candidate = Path(weights_path).expanduser() if weights_path else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    if not candidate.is_file():
        missing.append(f"its Inception-v3 weights file {INCEPTION_WEIGHTS_FILE} (looked for {candidate})")
    if missing:
        raise MissingInceptionWeights(
            "Inception FID needs " + " and ".join(missing) + ". Nothing is downloaded at run time: install the "
            "package and put the weights file there (or set evaluator.inception_weights to its path). The default "
            "pipeline does not need them: it computes FID on the evaluator classifier's features "
            "(evaluator.feature = evaluator).")
    return str(candidate)


def inception_fid(real: Tensor, fake: Tensor, *, weights_path: str | Path | None = None,
                  batch_size: int = 100) -> float:
    """FID, eq. (1), on Inception-v3 pool features (2048) of RGB (or grey, repeated) images in [-1, 1]."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    path = find_inception_weights(weights_path)
    for name, t in (("real", real), ("fake", fake)):
        if t.dim() != 4 or t.shape[1] not in (1, 3):
            raise ValueError(f"inception FID: {name} images must be (N, 1 or 3, H, W); got {tuple(t.shape)}")
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=path)
    net.num_features = 2048

    def prep(t: Tensor) -> Tensor:  # [-1, 1] float -> uint8 [0, 255], 3 channels (what the Inception expects)
        t = ((t.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t

    return _fid_metric(net, real, fake, batch_size, prep)


def fid_from_params(cfg, real: Tensor, fake: Tensor, evaluator: Evaluator | None) -> float:
    """FID with the feature map params `evaluator.feature` names (evaluator | inception)."""
    if cfg.feature == "inception":
        return inception_fid(real, fake, weights_path=cfg.inception_weights)
    if evaluator is None:
        raise ValueError("evaluator.feature = 'evaluator' needs a trained evaluator")
    return fid(real, fake, evaluator)


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


def evaluator_metrics(samples: Tensor, train: Tensor, train_y: Tensor, test: Tensor, test_y: Tensor, evaluator,
                      seed: int, fid_fn=None) -> tuple[dict, dict]:
    """FID against its floor, eq. (2), the evaluator's test accuracy and the samples' class
    histogram against the training frequencies, eq. (3). samples/train/test (N, ...) in data
    space; labels (N,). fid_fn(real, fake) -> float: the FID to use (default: on the
    evaluator's features, `sbm.eval.evaluator.fid`). -> (flat scalars, detail)."""
    fid_fn = fid_fn or (lambda real, fake: fid(real, fake, evaluator))

    m = min(len(samples), len(train))
    g = torch.Generator().manual_seed(int(seed))
    pick_s = torch.randperm(len(samples), generator=g)[:m]
    pick_r = torch.randperm(len(train), generator=g)[:m]
    fid_s, fid_r = fid_fn(test, samples[pick_s]), fid_fn(test, train[pick_r])
    k = evaluator.config["n_classes"]
    counts = torch.bincount(evaluator.predict(samples), minlength=k)
    ref = torch.bincount(train_y.long(), minlength=k).double() / len(train_y)
    q = counts.double() / counts.sum()
    flat = {"fid": fid_s, "fid_floor": fid_r, "fid_ratio": fid_s / fid_r if fid_r > 0 else None,
            "evaluator_acc": accuracy(evaluator, test, test_y), "class_tv": float(0.5 * (q - ref).abs().sum())}
    detail = {"evaluator": {"n_fid": m, "n_test": len(test), "class_counts": counts.tolist(),
                            "train_class_freq": ref.tolist(), **flat}}
    return flat, detail
