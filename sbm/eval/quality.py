"""Sample quality on a feature map: FID, KID, and precision/recall, next to their real-data floor.

φ maps a batch (N, ...) to features (N, F): the evaluator classifier's calibrated features
(`sbm.eval.evaluator.Evaluator`, eq. (4) there; the default) or Inception-v3 pool features
(RGB data; needs torch-fidelity and its weights file on disk, nothing is downloaded). With
real features r₁…r_n and generated features g₁…g_m:

- FID (Heusel et al. 2017), (μ, Σ) the mean and covariance of each set::

      FID = ‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})                                 (1)

- KID (Bińkowski et al. 2018): the unbiased MMD² (Gretton et al. 2012) with the cubic kernel
  k(a, b) = (aᵀb / F + 1)³, averaged over `kid_subsets` random pairs of subsets of
  s = min(kid_subset_size, n, m) rows each::

      KID = mean over subsets of  1/(s(s−1)) Σ_{i≠j} [k(rᵢ,rⱼ) + k(gᵢ,gⱼ)] − 2/s² Σ_{i,j} k(rᵢ,gⱼ)   (2)

  Unbiased at any s, unlike (1), whose bias grows like F/n.
- Improved precision and recall (Kynkäänniemi et al. 2019). With NN_k(u, S) the distance from
  u to its k-th nearest neighbour in S \\ {u}, the manifold of a set S is ∪_{s∈S} B(s, NN_k(s, S)),
  and::

      precision = fraction of gⱼ inside the manifold of the real set   (fidelity)
      recall    = fraction of rᵢ inside the manifold of the generated set   (diversity)     (3)

  Both sets are first subsampled (seeded) to the same size min(n, m): ball radii shrink as a
  set grows, so unequal sizes would bias the two numbers against each other.

(1) and (2) are computed by torchmetrics (`FrechetInceptionDistance`, `KernelInceptionDistance`)
on features computed once here and handed to them through an identity feature module.
What torchmetrics 1.9 requires of a custom module: forward(batch) -> (N, F) and a
`num_features` attribute (without it FID probes the module with a (3, 299, 299) uint8 image);
the module becomes the metric's child, so it is never an evaluator that others still use.
FID accumulates float64 sums and evaluates (1) with eigvals(Σ_r Σ_g)^{1/2} in float64; KID
draws its subsets with torch.randperm from the global RNG, which is forked and seeded here.

The floor of each metric is its value for as many real *training* examples as there are
samples, against the same real set: what a perfect model scores at this n (`floor`).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from sbm.eval.evaluator import Evaluator, accuracy

#: the metrics a `QualityMeter` returns, in table order
METRICS = ("fid", "kid", "precision", "recall")
#: the file torch-fidelity's Inception-v3 feature extractor loads (its release asset)
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


class MissingInceptionWeights(FileNotFoundError):
    """Inception features were asked for but torch-fidelity or its weights are not available."""


# --------------------------------------------------------------------------- feature maps


class EvaluatorFeatures(nn.Module):
    """An evaluator's calibrated features φ (eq. (4) of sbm.eval.evaluator) as a feature module.

    forward: any float tensor holding (N, *evaluator shape) values -> (N, F) float64 on the CPU.
    Holds a copy of the evaluator, always in eval mode."""

    def __init__(self, evaluator: Evaluator):
        super().__init__()
        self.evaluator = copy.deepcopy(evaluator).eval()
        self.num_features = evaluator.num_features

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.evaluator.embed(x).double().cpu()

    def train(self, mode: bool = True):  # never leaves eval mode, like torchmetrics' Inception
        return super().train(False)


class InceptionFeatures(nn.Module):
    """Inception-v3 pool features (2048) of grey or RGB images (N, 1 | 3, H, W) in [-1, 1]:
    quantised to uint8 [0, 255] and grey repeated to 3 channels, as the network expects."""

    num_features = 2048

    def __init__(self, weights_path: str | Path | None = None):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                      feature_extractor_weights_path=find_inception_weights(weights_path))

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"inception features: images must be (N, 1 or 3, H, W); got {tuple(x.shape)}")
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.net(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).double().cpu()


class _Given(nn.Module):
    """The identity on precomputed (N, F) features: how they are handed to torchmetrics."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, f: Tensor) -> Tensor:
        return f


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
            "Inception features need " + " and ".join(missing) + ". Nothing is downloaded at run time: install the "
            "package and put the weights file there (or set evaluator.inception_weights to its path). The default "
            "pipeline does not need them: it measures quality on the evaluator classifier's features "
            "(evaluator.feature = evaluator).")
    return str(candidate)


def feature_map(cfg, evaluator: Evaluator | None) -> nn.Module:
    """The feature module params `evaluator.feature` names: evaluator (needs one) | inception."""
    if cfg.feature == "inception":
        return InceptionFeatures(cfg.inception_weights)
    if evaluator is None:
        raise ValueError("evaluator.feature = 'evaluator' needs a trained evaluator")
    return EvaluatorFeatures(evaluator)


def embed(feature: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """feature(x) in batches: (N, ...) -> (N, F) float64 on the CPU."""
    if not hasattr(feature, "num_features"):
        raise TypeError("a feature module needs a `num_features` attribute (torchmetrics would otherwise probe it "
                        "with a (3, 299, 299) uint8 image)")
    with torch.no_grad():
        return torch.cat([feature(x[i : i + batch_size]).double().cpu() for i in range(0, len(x), batch_size)])


# --------------------------------------------------------------------------- the metrics on features


def _check_pair(real: Tensor, fake: Tensor, what: str, least: int = 2) -> None:
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"{what}: features must be (N, F) with the same F; got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    if len(real) < least or len(fake) < least:
        raise ValueError(f"{what} needs at least {least} examples per set; got {len(real)} real and {len(fake)} "
                         "generated")


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """FID, eq. (1), between feature sets real (n, F) and fake (m, F) (torchmetrics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_pair(real, fake, "FID")
    # sync_on_compute=False: the sets given are the whole sets; inside a process group (a training
    # stage's monitor runs on the main process only) a synchronised compute would wait for the others
    metric = FrechetInceptionDistance(feature=_Given(real.shape[1]), reset_real_features=True, sync_on_compute=False)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_distance(real: Tensor, fake: Tensor, *, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> float:
    """KID, eq. (2), between feature sets real (n, F) and fake (m, F): the mean over `subsets`
    subset pairs of size min(subset_size, n, m) (torchmetrics; subsets drawn from `seed`)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_pair(real, fake, "KID")
    size = min(int(subset_size), len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": that is what it is given
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=_Given(real.shape[1]), subsets=int(subsets), subset_size=size,
                                         reset_real_features=True, sync_on_compute=False)  # as FID's
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return float(metric.compute()[0])


def _kth_neighbour_radius(f: Tensor, k: int) -> Tensor:
    """NN_k(fᵢ, f \\ {fᵢ}) for every row of f (n, F) -> (n,)."""
    return torch.cdist(f, f).topk(k + 1, dim=1, largest=False).values[:, k]


def precision_recall(real: Tensor, fake: Tensor, *, k: int = 3, seed: int = 0) -> tuple[float, float]:
    """Improved precision and recall, eq. (3), of fake (m, F) against real (n, F), both
    subsampled (seeded) to min(n, m) rows; needs more than k rows per set. -> (precision, recall)."""
    _check_pair(real, fake, "precision/recall", least=k + 1)
    n = min(len(real), len(fake))
    g = torch.Generator().manual_seed(int(seed))
    real = real[torch.randperm(len(real), generator=g)[:n]].double()
    fake = fake[torch.randperm(len(fake), generator=g)[:n]].double()
    d = torch.cdist(fake, real)  # (n fake, n real)
    inside_real = d <= _kth_neighbour_radius(real, k)[None, :]
    inside_fake = d <= _kth_neighbour_radius(fake, k)[:, None]
    return float(inside_real.any(1).double().mean()), float(inside_fake.any(0).double().mean())


# --------------------------------------------------------------------------- the meter


@dataclass
class QualityMeter:
    """FID, KID, precision and recall, eqs. (1)–(3), of generated sets against one real set.

    The real set's features are computed once (`real`: (n, F)); `meter(fake)` embeds fake
    (m, ...) and returns {metric: float} for `METRICS`. Deterministic given `seed`."""

    feature: nn.Module
    real: Tensor
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_k: int = 3
    seed: int = 0
    batch_size: int = 1000
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_params(cls, cfg, real: Tensor, evaluator: Evaluator | None = None, *, seed: int = 0) -> "QualityMeter":
        """The meter of params `evaluator` (cfg: feature map, kid_subsets, kid_subset_size, pr_k)
        against the real examples `real` (n, ...), usually the test split."""
        feature = feature_map(cfg, evaluator)
        return cls(feature, embed(feature, real), kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size,
                   pr_k=cfg.pr_k, seed=seed)

    @classmethod
    def for_evaluator(cls, evaluator: Evaluator, real: Tensor, cfg, *, seed: int = 0) -> "QualityMeter":
        """The meter on `evaluator`'s features (cfg.feature aside; cfg: the KID and precision/recall
        settings of params `evaluator`), real: (n, ...)."""
        feature = EvaluatorFeatures(evaluator)
        return cls(feature, embed(feature, real),
                   kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size, pr_k=cfg.pr_k, seed=seed)

    def features(self, x: Tensor) -> Tensor:
        """φ(x), (m, ...) -> (m, F) float64."""
        return embed(self.feature, x, self.batch_size)

    def of_features(self, fake: Tensor) -> dict[str, float]:
        """The metrics of precomputed generated features fake (m, F)."""
        precision, recall = precision_recall(self.real, fake, k=self.pr_k, seed=self.seed)
        return {"fid": frechet_distance(self.real, fake),
                "kid": kernel_distance(self.real, fake, subsets=self.kid_subsets, subset_size=self.kid_subset_size,
                                       seed=self.seed),
                "precision": precision, "recall": recall}

    def __call__(self, fake: Tensor) -> dict[str, float]:
        """The metrics of generated examples fake (m, ...) in data space."""
        return self.of_features(self.features(fake))

    def floor(self, train: Tensor, n: int) -> dict[str, float]:
        """The metrics of n real training examples (a subset seeded by `seed`): what a perfect
        model scores with n samples. Cached per n."""
        if n not in self._cache:
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))[:n]
            self._cache[n] = self(train[pick])
        return self._cache[n]


def fid(real: Tensor, fake: Tensor, evaluator: Evaluator | nn.Module, *, batch_size: int = 1000) -> float:
    """FID, eq. (1), between `real` and `fake` (N, ...) in data space, on an `Evaluator`'s features
    or on any feature module (N, ...) -> (N, F) that has a `num_features` attribute."""
    feature = EvaluatorFeatures(evaluator) if isinstance(evaluator, Evaluator) else evaluator
    return frechet_distance(embed(feature, real, batch_size), embed(feature, fake, batch_size))


# --------------------------------------------------------------------------- the evaluate stage's scores


def evaluator_metrics(samples: Tensor, train: Tensor, train_y: Tensor, test: Tensor, test_y: Tensor,
                      evaluator: Evaluator, meter: QualityMeter, seed: int) -> tuple[dict, dict]:
    """Quality of `samples` against the test split next to its floor, the evaluator's test
    accuracy and the samples' class histogram against the training frequencies::

        <metric> = metric(samples, test),  <metric>_floor = metric(train, test)   (eqs. (1)–(3))
        class_tv = ½ Σ_k |q_k − p_k|,  q = the evaluator's class frequencies on the samples,
                   p = class frequencies of the training split

    Both sides use the same number m = min(N_samples, N_train) of generated / training
    examples (seeded subsets) against the whole test split, so their finite-sample biases
    match. samples/train/test (N, ...) in data space; labels (N,); meter: against `test`.
    -> (flat scalars, detail)."""
    m = min(len(samples), len(train))
    pick = torch.randperm(len(samples), generator=torch.Generator().manual_seed(int(seed)))[:m]
    scores, floor = meter(samples[pick]), meter.floor(train, m)
    k = evaluator.config["n_classes"]
    counts = torch.bincount(evaluator.predict(samples), minlength=k)
    ref = torch.bincount(train_y.long(), minlength=k).double() / len(train_y)
    q = counts.double() / counts.sum()
    flat = {"fid": scores["fid"], "fid_floor": floor["fid"],
            "fid_ratio": scores["fid"] / floor["fid"] if floor["fid"] > 0 else None,
            **{k: v for name in METRICS[1:] for k, v in ((name, scores[name]), (f"{name}_floor", floor[name]))},
            "evaluator_acc": accuracy(evaluator, test, test_y), "class_tv": float(0.5 * (q - ref).abs().sum())}
    detail = {"evaluator": {"n_fid": m, "n_test": len(test), "class_counts": counts.tolist(),
                            "train_class_freq": ref.tolist(), **flat}}
    return flat, detail
