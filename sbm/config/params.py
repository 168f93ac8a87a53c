"""Typed, validated parameters: the only place where names in params.yaml become objects.

`load_params(path)` reads params.yaml into a `Params` tree of frozen dataclasses. Every
field declares its type and, where it matters, its allowed range or choices; a bad value
fails *before any work* with a `ConfigError` naming the dotted key, the value and what is
allowed, e.g.::

    params.yaml: train.steps = 0: must be >= 1

Unknown keys are errors too (a typo must not silently fall back to a default).

YAML booleans: PyYAML follows YAML 1.1, where ``no``/``yes``/``on``/``off`` are booleans,
so ``dvc exp run -S train.mixed_precision=no`` would turn a string into ``False``. The
loader here resolves only ``true``/``false`` as booleans (YAML 1.2, as DVC itself reads
params), so such values stay strings.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from sbm.config.prompts import DEFAULT_TEMPLATES, check_prompts, check_templates
from sbm.errors import ConfigError

# --------------------------------------------------------------------------- YAML loading


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader whose booleans are only true/false (YAML 1.2), so 'no' stays a string."""


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
# PyYAML reads 1e-3 (no dot) as a string; YAML 1.2 and DVC read it as a float.
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file with YAML 1.2 booleans (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file")
    try:
        return yaml.load(path.read_text(), Loader=_Yaml12Loader)  # noqa: S506 (safe subclass)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err


# --------------------------------------------------------------------------- field helpers


def _f(default: Any = dataclasses.MISSING, *, ge=None, gt=None, le=None, lt=None, doc: str = ""):
    """A dataclass field with range metadata checked by `_check_range`."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: __import__("copy").deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("sbm_params_key", default=None)


class Section:
    """Base of every params section: a section checks itself on construction — each field's
    range (`_f`'s ge/gt/le/lt) and the section's own rules (`validate`) — however it is built:
    from params.yaml by `parse_params` (errors name the dotted key) or directly in code, e.g.
    `dataclasses.replace(sampler, steps=0)` (errors name `KEY`, the section's params.yaml key)."""

    KEY = ""

    def __post_init__(self) -> None:
        key = _KEY.get()
        key = self.KEY if key is None else key
        for f in dataclasses.fields(self):
            _check_range(getattr(self, f.name), f.metadata, f"{key}.{f.name}" if key else f.name)
        self.validate(key)

    def validate(self, key: str) -> None:
        """The section's rules beyond single-field ranges (none by default)."""


LOSSES = ("dsm", "eps", "esm", "ssm", "ssm_vr")
#: objective.weighting: the per-level weight of the multi-level losses (`sbm.core.losses.relative_weight`)
LOSS_WEIGHTINGS = ("sigma2", "likelihood", "edm", "min_snr")
#: objective.t_sampling: how the multi-level losses draw their levels (`sbm.core.losses.sample_levels`)
T_SAMPLINGS = ("uniform", "lognormal", "importance")
#: model.prediction: what the network outputs (`sbm.core.model`, eqs. 1, 4, 5)
PREDICTIONS = ("eps", "score", "x0", "v", "edm")
DATASETS = ("gmm", "swiss_roll", "moons", "checkerboard", "digits", "hf")
PROCESSES = ("ncsn", "ve", "vp", "subvp", "ddpm")
SAMPLERS = (
    "langevin", "annealed_langevin", "euler_maruyama", "pc", "ddpm", "ddim", "ode_euler", "ode_heun", "ode_adaptive",
    "consistency", "dpmpp_2m", "dpmpp_3m", "unipc", "edm",
)
#: monitor.n_quality: the fewest samples whose small-n FID/KID the training monitor logs (0 = none)
MIN_QUALITY_SAMPLES = 16
#: sampler.schedule: the time grid of the grid-based samplers (`sbm.core.schedules.SCHEDULES`)
SCHEDULES = ("uniform", "karras", "logsnr")


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class GMMParams(Section):
    """A Gaussian mixture Σₖ wₖ N(μₖ, Σₖ); weights are normalised, covs must be SPD."""

    weights: list[float] = _f([0.6, 0.3, 0.1])
    means: list[list[float]] = _f([[-4.0, -4.0], [4.0, 4.0], [4.0, -4.0]])
    covs: list[list[list[float]]] = _f(
        [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.6], [0.6, 0.8]], [[0.5, 0.0], [0.0, 1.5]]]
    )

    def validate(self, key: str) -> None:
        k = len(self.weights)
        if k == 0:
            raise ConfigError(f"{key}.weights = []: need at least one component")
        if any(w <= 0 for w in self.weights):
            raise ConfigError(f"{key}.weights = {self.weights}: every weight must be > 0")
        if len(self.means) != k or len(self.covs) != k:
            raise ConfigError(
                f"{key}: {k} weights but {len(self.means)} means and {len(self.covs)} covs; "
                "need one mean and one covariance per weight"
            )
        dim = len(self.means[0])
        for i, (m, c) in enumerate(zip(self.means, self.covs)):
            if len(m) != dim:
                raise ConfigError(f"{key}.means[{i}] = {m}: every mean must have dimension {dim}")
            if len(c) != dim or any(len(row) != dim for row in c):
                raise ConfigError(f"{key}.covs[{i}]: must be a {dim}x{dim} matrix")
            import numpy as np

            a = np.asarray(c, dtype=float)
            if not np.allclose(a, a.T) or np.linalg.eigvalsh(a).min() <= 0:
                raise ConfigError(f"{key}.covs[{i}] = {c}: must be symmetric positive definite")


@dataclass(frozen=True)
class HFParams(Section):
    """A Hugging Face dataset by hub name or local path (load_from_disk)."""

    path: str = ""
    name: Optional[str] = None
    split: str = "train"
    column: str = "x"
    label_column: Optional[str] = None
    value_range: list[float] = _f([-1.0, 1.0])
    n_levels: Optional[int] = _f(None, ge=2)
    image_size: Optional[int] = _f(None, ge=1)
    channels: Optional[int] = None

    def validate(self, key: str) -> None:
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"{key}.channels = {self.channels}: must be 1 (grey), 3 (RGB) or null (keep)")
        if len(self.value_range) != 2 or self.value_range[0] >= self.value_range[1]:
            raise ConfigError(f"{key}.value_range = {self.value_range}: must be [low, high] with low < high")


@dataclass(frozen=True)
class DataParams(Section):
    name: Literal[DATASETS] = "digits"
    n_train: int = _f(20000, ge=2)
    n_test: int = _f(5000, ge=2)
    test_fraction: float = _f(0.2, gt=0.0, lt=1.0)
    noise: float = _f(0.05, ge=0.0)
    gmm: GMMParams = _f(None)
    hf: HFParams = _f(None)

    def validate(self, key: str) -> None:
        if self.name == "hf" and not self.hf.path:
            raise ConfigError(f"{key}.hf.path = '': data.name is 'hf', so a hub name or local path is required")


@dataclass(frozen=True)
class ObjectiveParams(Section):
    """The score-matching objectives (`sbm.core.losses`): ssm's projections, esm's dimension cap, and
    how the multi-level losses weigh (`weighting`, `snr_gamma` of min_snr) and draw (`t_sampling`;
    lognormal: ln σ̃ ~ N(p_mean, p_std²), Karras et al. 2022; importance: q(t) ∝ g²/σ², reweighted to
    the uniform objective, Song et al. 2021b) their levels."""

    projection: Literal["rademacher", "gaussian"] = "rademacher"
    n_projections: int = _f(1, ge=1)
    weighting: Literal[LOSS_WEIGHTINGS] = "sigma2"
    esm_max_dim: int = _f(256, ge=1)
    snr_gamma: float = _f(5.0, gt=0.0)
    t_sampling: Literal[T_SAMPLINGS] = "uniform"
    p_mean: float = -1.2
    p_std: float = _f(1.2, gt=0.0)


@dataclass(frozen=True)
class ProcessParams(Section):
    name: Literal[PROCESSES] = "ncsn"
    sigma_max: Optional[float] = _f(None, gt=0.0)
    sigma_min: float = _f(0.01, gt=0.0)
    n_levels: int = _f(20, ge=2)
    beta_min: float = _f(0.1, gt=0.0)
    beta_max: float = _f(20.0, gt=0.0)
    n_timesteps: int = _f(1000, ge=2)
    beta_schedule: Literal["linear", "cosine"] = "linear"
    t_min: float = _f(1e-3, ge=0.0, lt=1.0)

    def validate(self, key: str) -> None:
        if self.sigma_max is not None and self.sigma_min >= self.sigma_max:
            raise ConfigError(
                f"{key}.sigma_min = {self.sigma_min} >= {key}.sigma_max = {self.sigma_max}: "
                "need sigma_min < sigma_max"
            )
        if self.beta_min >= self.beta_max:
            raise ConfigError(
                f"{key}.beta_min = {self.beta_min} >= {key}.beta_max = {self.beta_max}: need beta_min < beta_max"
            )
        if self.name == "ddpm" and self.beta_max >= self.n_timesteps:
            raise ConfigError(
                f"{key}.beta_max = {self.beta_max} with n_timesteps = {self.n_timesteps}: DDPM's β_i = β/N "
                "must stay below 1"
            )


@dataclass(frozen=True)
class UNetParams(Section):
    """The U-Net (`sbm.nets.score.UNetNet`, a diffusers UNet2DModel) used for (C, H, W) data.

    One level per entry of `channels` (len − 1 down-samplings by 2); `attention` flags
    self-attention per level and must have the same length."""

    channels: list[int] = _f([64, 128])
    layers_per_block: int = _f(2, ge=1)
    attention: list[bool] = _f([False, True])
    mid_attention: bool = True
    norm_groups: int = _f(16, ge=1)

    def validate(self, key: str) -> None:
        _check_levels(self.channels, self.attention, self.norm_groups, key)
        if self.mid_attention and self.channels[-1] % 8:
            raise ConfigError(f"{key}.channels = {self.channels}: mid_attention needs the last level's channels "
                              "divisible by 8 (the attention head size)")


def _check_levels(channels: list[int], attention: list[bool] | None, groups: int, key: str) -> None:
    if not channels:
        raise ConfigError(f"{key}.channels = []: need at least one level")
    for c in channels:
        if c < 1 or c % groups:
            raise ConfigError(f"{key}.channels = {channels}: every entry must be a positive multiple of "
                              f"{key}.norm_groups = {groups}")
    if attention is not None:
        if len(attention) != len(channels):
            raise ConfigError(f"{key}.attention = {attention}: needs one true/false per level "
                              f"({len(channels)} levels in {key}.channels)")
        for c, a in zip(channels, attention):
            if a and c % 8:
                raise ConfigError(f"{key}.channels = {channels}: a level with attention needs channels divisible "
                                  "by 8 (the attention head size)")


@dataclass(frozen=True)
class ModelParams(Section):
    prediction: Literal[PREDICTIONS] = "eps"
    hidden: int = _f(128, ge=1)
    depth: int = _f(3, ge=1)
    embedding_dim: int = _f(64, ge=2)
    unet: UNetParams = _f(None)


@dataclass(frozen=True)
class TrainParams(Section):
    steps: int = _f(4000, ge=1)
    batch_size: int = _f(512, ge=1)
    lr: float = _f(2e-3, gt=0.0)
    weight_decay: float = _f(0.0, ge=0.0)
    warmup_steps: int = _f(100, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_min_ratio: float = _f(0.0, ge=0.0, le=1.0)
    grad_clip: float = _f(1.0, ge=0.0)
    ema_decay: float = _f(0.999, ge=0.0, lt=1.0)
    checkpoint_every: int = _f(1000, ge=1)
    log_every: int = _f(25, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_accumulation: int = _f(1, ge=1)
    launcher: str = "python"


@dataclass(frozen=True)
class MonitorParams(Section):
    """What the training stages show at each checkpoint (`sbm.train.monitor`, through dvclive): samples
    of the EMA model drawn with `sampler` at about `nfe` network evaluations, a picture of `n_grid` of
    them, and the small-n FID, KID, precision and recall of `n_quality` of them on the evaluator's
    features (data without labels has no evaluator: pictures only). A separate section, not `train`
    keys: what is shown never changes what is trained (nor a checkpoint's fingerprint)."""

    enabled: bool = True
    sampler: Literal[SAMPLERS] = "dpmpp_2m"
    nfe: int = _f(10, ge=1)
    n_grid: int = _f(64, ge=0)
    n_quality: int = _f(128, ge=0)

    def validate(self, key: str) -> None:
        if self.sampler == "consistency":
            raise ConfigError(f"{key}.sampler = 'consistency': samples only a consistency model (a distill "
                              "student); the training stages' models need a score sampler, e.g. dpmpp_2m")
        if 0 < self.n_quality < MIN_QUALITY_SAMPLES:
            raise ConfigError(f"{key}.n_quality = {self.n_quality}: must be 0 (no FID) or >= "
                              f"{MIN_QUALITY_SAMPLES} (FID, KID and precision/recall of fewer samples say nothing)")


@dataclass(frozen=True)
class SamplerParams(Section):
    name: Literal[SAMPLERS] = "annealed_langevin"
    n_samples: int = _f(5000, ge=1)
    batch_size: int = _f(5000, ge=1)
    steps: Optional[int] = _f(None, ge=1)
    steps_per_level: int = _f(100, ge=1)
    step_size: float = _f(2e-5, gt=0.0)
    langevin_steps: int = _f(2000, ge=1)
    predictor: Literal["euler_maruyama", "reverse_diffusion", "none"] = "reverse_diffusion"
    corrector: Literal["langevin", "annealed_langevin", "none"] = "langevin"
    corrector_steps: int = _f(1, ge=1)
    snr: float = _f(0.16, gt=0.0)
    eta: float = _f(0.0, ge=0.0, le=1.0)
    rtol: float = _f(1e-5, gt=0.0)
    atol: float = _f(1e-5, gt=0.0)
    init: Literal["prior", "uniform"] = "prior"
    denoise: bool = True
    quantize: bool = True
    schedule: Literal[SCHEDULES] = "uniform"
    order: int = _f(2, ge=1, le=3)
    churn: float = _f(0.0, ge=0.0)
    s_noise: float = _f(1.0, ge=0.0)
    s_tmin: float = _f(0.0, ge=0.0)
    s_tmax: Optional[float] = _f(None, ge=0.0)

    def validate(self, key: str) -> None:
        if self.name == "pc" and self.predictor == "none" and self.corrector == "none":
            raise ConfigError(f"{key}.predictor = {key}.corrector = 'none': the pc sampler needs at least one")
        if self.s_tmax is not None and self.s_tmax < self.s_tmin:
            raise ConfigError(f"{key}.s_tmax = {self.s_tmax} < {key}.s_tmin = {self.s_tmin}: the churn window "
                              "[s_tmin, s_tmax] is empty")


#: likelihood.dequant_samples null under dequantization = importance: this many draws per point
DEFAULT_DEQUANT_SAMPLES = 4


@dataclass(frozen=True)
class LikelihoodParams(Section):
    """The probability-flow ODE likelihood, and for pixel-space ddpm / vp models the variational
    bound (sbm.core.vlb): vlb_t_samples draws of t per example (0: every t of ddpm, two passes),
    vlb_variance the ddpm reverse variance (posterior β̃_t, the ddpm sampler's; or beta β_t).

    Quantised data are dequantised before the ODE (sbm.core.units): `dequantization` uniform, one
    draw u ~ U[0, Δ)^D per point (the Jensen bound, eqs. 4–5); importance, `dequant_samples` = K
    draws per point (null: 4) and also the importance-weighted bound (eqs. 6–7), at K ODE solves
    per point. Uniform takes one draw: dequant_samples must then be null (or 1). Continuous data
    are not dequantised and ignore both."""

    divergence: Literal["exact", "hutchinson"] = "exact"
    probe: Literal["rademacher", "gaussian"] = "rademacher"
    n_probes: int = _f(1, ge=1)
    rtol: float = _f(1e-5, gt=0.0)
    atol: float = _f(1e-5, gt=0.0)
    n_points: int = _f(1000, ge=1)
    batch_size: int = _f(1000, ge=1)
    vlb_t_samples: int = _f(100, ge=0)
    vlb_variance: Literal["posterior", "beta"] = "posterior"
    dequantization: Literal["uniform", "importance"] = "uniform"
    dequant_samples: Optional[int] = _f(None, ge=1)

    @property
    def dequant_k(self) -> int:
        """K, the dequantisation draws per quantised test point: 1 for uniform, else dequant_samples (null: 4)."""
        if self.dequantization == "uniform":
            return 1
        return DEFAULT_DEQUANT_SAMPLES if self.dequant_samples is None else self.dequant_samples

    def validate(self, key: str) -> None:
        if self.vlb_t_samples == 1:
            raise ConfigError(f"{key}.vlb_t_samples = 1: need 0 (every t) or >= 2 (its standard error needs "
                              "two draws per example)")
        if self.dequantization == "uniform" and self.dequant_samples not in (None, 1):
            raise ConfigError(f"{key}.dequant_samples = {self.dequant_samples} with {key}.dequantization = "
                              f"'uniform': uniform dequantisation takes one draw per point; set {key}."
                              f"dequantization = importance for K = {self.dequant_samples} draws, or "
                              f"{key}.dequant_samples = null")


@dataclass(frozen=True)
class EvalParams(Section):
    """Sample-quality settings: distances of stage evaluate, the sampler comparison, and `seeds`, the
    number of sampling seeds (seed, seed + 1, …) every run of the comparison tables is drawn with
    (compare_samplers, evaluate_guidance, evaluate_text, evaluate_distill: mean ± sd over them).
    conditional_sampler/conditional_nfe: the sampler of evaluate_guidance and evaluate_text, at about
    that many network evaluations per sample (`conditional_sampler_params`; null: params `sampler` as
    it is: with a 50-step Euler–Maruyama there, five times the cost of DPM-Solver++(2M) at 10)."""

    n_points: int = _f(2000, ge=2)
    n_projections: int = _f(256, ge=1)
    n_score_points: int = _f(2000, ge=1)
    compare_samplers: list[str] = _f(["annealed_langevin", "euler_maruyama", "pc", "ddim", "ode_heun"])
    compare_nfe: list[int] = _f([10, 20, 50, 100])
    compare_points: int = _f(2000, ge=2)
    seeds: int = _f(3, ge=1)
    conditional_sampler: Optional[Literal[SAMPLERS]] = None
    conditional_nfe: int = _f(10, ge=1)

    def validate(self, key: str) -> None:
        if self.conditional_sampler == "consistency":
            raise ConfigError(f"{key}.conditional_sampler = 'consistency': samples only a consistency model (a "
                              "distill student); guidance samples a score model, e.g. dpmpp_2m (null: params sampler)")
        for i, name in enumerate(self.compare_samplers):
            if name not in SAMPLERS:
                raise ConfigError(f"{key}.compare_samplers[{i}] = {name!r}: unknown sampler; allowed: "
                                  + ", ".join(SAMPLERS))
        for i, n in enumerate(self.compare_nfe):
            if n < 1:
                raise ConfigError(f"{key}.compare_nfe[{i}] = {n}: must be >= 1")


@dataclass(frozen=True)
class VAEParams(Section):
    """The KL autoencoder of latent models (`sbm.latent.vae`, a diffusers AutoencoderKL).

    Down-sampling factor f = 2^(len(channels) − 1); latents are (latent_channels, H/f, W/f).
    decoder_std: σ of the Gaussian decoder p(x|z) = N(x̂(z), σ² I); null = learned (one σ
    per image channel). steps/batch_size/lr override `train` for this model."""

    channels: list[int] = _f([32, 64, 64])
    layers_per_block: int = _f(1, ge=1)
    latent_channels: int = _f(4, ge=1)
    norm_groups: int = _f(16, ge=1)
    kl_weight: float = _f(1.0, ge=0.0)
    decoder_std: Optional[float] = _f(None, gt=0.0)
    steps: int = _f(3000, ge=1)
    batch_size: int = _f(128, ge=1)
    lr: float = _f(1e-3, gt=0.0)
    bound_samples: int = _f(1, ge=1)

    def validate(self, key: str) -> None:
        _check_levels(self.channels, None, self.norm_groups, key)


@dataclass(frozen=True)
class EvaluatorParams(Section):
    """The evaluator classifier (`sbm.eval.evaluator`) whose calibrated features every quality
    metric reads, and the settings of KID and precision/recall (`sbm.eval.quality`)."""

    channels: list[int] = _f([32, 64])
    hidden: int = _f(128, ge=2)
    steps: int = _f(1500, ge=1)
    batch_size: int = _f(128, ge=1)
    lr: float = _f(2e-3, gt=0.0)
    weight_decay: float = _f(1e-4, ge=0.0)
    feature: Literal["evaluator", "inception"] = "evaluator"
    inception_weights: Optional[str] = None
    kid_subsets: int = _f(100, ge=1)
    kid_subset_size: int = _f(1000, ge=2)
    pr_k: int = _f(3, ge=1)

    def validate(self, key: str) -> None:
        if not self.channels or any(c < 1 for c in self.channels):
            raise ConfigError(f"{key}.channels = {self.channels}: need at least one positive channel count")


@dataclass(frozen=True)
class ClassifierParams(Section):
    """The noise-conditional classifier p(y | x_t, t) of classifier guidance (`sbm.models.classifier`),
    trained in the score model's space on inputs noised by its process at every t."""

    channels: list[int] = _f([32, 64])
    hidden: int = _f(128, ge=2)
    embedding_dim: int = _f(64, ge=2)
    depth: int = _f(2, ge=1)
    steps: int = _f(2000, ge=1)
    batch_size: int = _f(128, ge=1)
    lr: float = _f(1e-3, gt=0.0)

    def validate(self, key: str) -> None:
        if not self.channels or any(c < 1 for c in self.channels):
            raise ConfigError(f"{key}.channels = {self.channels}: need at least one positive channel count")


@dataclass(frozen=True)
class GuidanceParams(Section):
    """Class-conditional sampling by classifier guidance (`sbm.core.guidance`), stage evaluate_guidance."""

    classifier_scales: list[float] = _f([0.0, 1.0, 2.0, 4.0])
    n_per_class: int = _f(100, ge=1)

    def validate(self, key: str) -> None:
        for i, s in enumerate(self.classifier_scales):
            if s < 0:
                raise ConfigError(f"{key}.classifier_scales[{i}] = {s}: must be >= 0 (0 = unguided)")
        if not self.classifier_scales:
            raise ConfigError(f"{key}.classifier_scales = []: need at least one scale")


@dataclass(frozen=True)
class ScratchTextParams(Section):
    """text.encoder = scratch: the small transformer trained jointly with the score model."""

    dim: int = _f(64, ge=1)
    layers: int = _f(2, ge=1)
    heads: int = _f(4, ge=1)

    def validate(self, key: str) -> None:
        if self.dim % self.heads:
            raise ConfigError(f"{key}.dim = {self.dim}: must be divisible by {key}.heads = {self.heads}")


@dataclass(frozen=True)
class TextParams(Section):
    """The text-conditional score model (stage train_text, `sbm.text.conditioning`), classifier-free
    guidance and sampling from prompts (stages sample, evaluate_text)."""

    encoder: str = "minilm"
    max_length: int = _f(16, ge=2)
    templates: list[str] = _f(list(DEFAULT_TEMPLATES))
    p_uncond: float = _f(0.1, ge=0.0, le=1.0)
    steps: int = _f(3000, ge=1)
    batch_size: int = _f(128, ge=1)
    lr: float = _f(1e-3, gt=0.0)
    scratch: ScratchTextParams = _f(None)
    weight: float = _f(2.0, ge=0.0)
    guidance_weights: list[float] = _f([0.0, 1.0, 2.0, 4.0])
    n_per_class: int = _f(100, ge=1)
    unseen_templates: list[str] = _f(["the number {name} written by hand"])
    prompts: list[str] = _f(["a handwritten seven"])
    n_per_prompt: int = _f(8, ge=1)

    def validate(self, key: str) -> None:
        if not self.encoder.strip():
            raise ConfigError(f"{key}.encoder = {self.encoder!r}: give minilm, scratch, a local model directory "
                              "or a hub name")
        for name in ("templates", "unseen_templates"):
            try:
                check_templates(getattr(self, name))
            except ValueError as err:
                raise ConfigError(f"{key}.{name}: {err}") from None
        seen = [t for t in self.unseen_templates if t in self.templates]
        if seen:
            raise ConfigError(f"{key}.unseen_templates: {seen[0]!r} is also a training template; the unseen "
                              "phrasings measure generalisation, so they must differ from text.templates")
        if not self.p_uncond > 0:
            raise ConfigError(f"{key}.p_uncond = {self.p_uncond}: must be > 0, or the model never learns the "
                              "unconditional score that classifier-free guidance needs")
        if not self.guidance_weights or any(w < 0 for w in self.guidance_weights):
            raise ConfigError(f"{key}.guidance_weights = {self.guidance_weights}: need at least one weight, "
                              "each >= 0 (0 = unconditional, 1 = conditional)")
        try:  # word-level check here; the encoder's own token count is checked by train_text before training
            check_prompts(self.prompts, self.max_length)
        except ValueError as err:
            raise ConfigError(f"{key}.prompts: {err}") from None


METHODS = ("progressive", "consistency")
WEIGHTINGS = ("snr_plus_one", "truncated_snr")
TEACHER_SOLVERS = ("ddim", "heun")
TEACHERS = ("score", "text")


@dataclass(frozen=True)
class DistillParams(Section):
    """Distillation of the score model into a few-step student (`sbm.distill.students`, stage distill).

    method: "progressive" (Salimans & Ho 2022) or "consistency" (Song et al. 2023).
    teacher: "score" (the unconditional model of train_score) or "text" (the text-conditional
        model of train_text under classifier-free guidance of weight text.weight, folded into
        the student: it learns the guided sampler, reads a prompt's ids and samples at w = 1).
    steps: network evaluations of the final student's sampler, ≥ 1. progressive: its DDIM
        steps, over `distillation_grid(process, steps, teacher_steps)` (steps + 1 points), plus
        the final denoise if `denoise`. consistency: the consistency sampler's steps
        (`sbm.core.samplers.consistency_sample` over process.grid(steps + 1)).
    teacher_steps: progressive: the original teacher's DDIM steps, steps · 2^R for R ≥ 1
        rounds, each of which halves the steps. consistency: N, the intervals of the grid
        process.grid(N + 1) whose neighbours one teacher ODE step joins.
    weighting: progressive's λ(t) of eq. (4): "snr_plus_one" (1 + α²/σ²) or "truncated_snr"
        (max(α²/σ², 1)).
    teacher_solver: the score model's ODE step as a teacher: "ddim" (eq. 1, one evaluation) or
        "heun" (eq. 2, two). consistency: between grid neighbours; progressive: in round 1 only
        (later rounds' teachers are students, trained to take DDIM steps).
    denoise: progressive: also distil the sampler's final Tweedie denoise at t_min (for
        samplers run with denoise = true; see the module docstring).
    steps_per_round: optimizer steps of each progressive round, or of the consistency run.
    lr, batch_size: the training loop's learning rate and batch size for these runs.
    lr_schedule: the learning rate after the warm-up within each run (round): "constant" or "cosine"
        (`sbm.train.loop` eq. 2, down to train.lr_min_ratio · lr at its last step); the
        distillation's own, like lr (train.lr_schedule is the other models').
    ema_decay: the training loop's EMA of the weights (the returned student holds it).
    target_decay: consistency's μ of the target network θ⁻ ← μ θ⁻ + (1 − μ) θ (0.95 in the
        paper's CD experiments).
    eval_steps: stage evaluate_distill: the step counts at which student and teacher are compared.
    """

    method: Literal[METHODS] = "progressive"
    teacher: Literal[TEACHERS] = "score"
    steps: int = 4
    teacher_steps: int = 64
    weighting: Literal[WEIGHTINGS] = "snr_plus_one"
    teacher_solver: Literal[TEACHER_SOLVERS] = "heun"
    denoise: bool = True
    steps_per_round: int = 2000
    lr: float = 1e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
    batch_size: int = 256
    ema_decay: float = 0.999
    target_decay: float = 0.95
    eval_steps: list[int] = _f([1, 2, 4, 8])

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, key: str = "distill") -> None:
        """Raise ConfigError (a ValueError) naming the first bad field, its value and what is allowed."""
        choices = {"method": METHODS, "teacher": TEACHERS, "weighting": WEIGHTINGS, "teacher_solver": TEACHER_SOLVERS,
                   "lr_schedule": ("constant", "cosine")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{key}.{name} = {getattr(self, name)!r}: allowed {', '.join(allowed)}")
        for name in ("steps", "teacher_steps", "steps_per_round", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key}.{name} = {value!r}: must be an integer >= 1")
        if not self.lr > 0:
            raise ConfigError(f"{key}.lr = {self.lr}: must be > 0")
        for name in ("ema_decay", "target_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name} = {getattr(self, name)}: must be in [0, 1)")
        if not self.eval_steps or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.eval_steps):
            raise ConfigError(f"{key}.eval_steps = {self.eval_steps}: need at least one step count, each an integer >= 1")
        ratio = self.teacher_steps // self.steps
        if self.method == "progressive" and (self.teacher_steps % self.steps or ratio < 2 or ratio & (ratio - 1)):
            raise ConfigError(f"{key}.teacher_steps = {self.teacher_steps}: must be {key}.steps = {self.steps} "
                              f"times a power of two >= 2 ({2 * self.steps}, {4 * self.steps}, "
                              f"{8 * self.steps}, ...): every progressive round halves the steps")

    @property
    def rounds(self) -> list[int]:
        """progressive: the student steps of each round, teacher_steps/2, teacher_steps/4, …, steps."""
        out, n = [], self.teacher_steps
        while n > self.steps:
            n //= 2
            out.append(n)
        return out


#: data.name values whose examples are vectors (no latent model for them)
VECTOR_DATASETS = ("gmm", "swiss_roll", "moons", "checkerboard")


@dataclass(frozen=True)
class ScoreParams(Section):
    """Where the score model lives: latent (on the VAE's scaled latents) | pixel (on the data)."""

    space: Literal["latent", "pixel"] = "latent"


@dataclass(frozen=True)
class Params(Section):
    seed: int = _f(0, ge=0)
    loss: Literal[LOSSES] = "dsm"
    score: ScoreParams = _f(None)
    objective: ObjectiveParams = _f(None)
    data: DataParams = _f(None)
    process: ProcessParams = _f(None)
    model: ModelParams = _f(None)
    train: TrainParams = _f(None)
    monitor: MonitorParams = _f(None)
    sampler: SamplerParams = _f(None)
    likelihood: LikelihoodParams = _f(None)
    eval: EvalParams = _f(None)
    vae: VAEParams = _f(None)
    evaluator: EvaluatorParams = _f(None)
    classifier: ClassifierParams = _f(None)
    guidance: GuidanceParams = _f(None)
    text: TextParams = _f(None)
    distill: DistillParams = _f(None)

    def validate(self, key: str) -> None:
        if self.process.name == "vp" and self.likelihood.vlb_t_samples == 0:
            raise ConfigError("likelihood.vlb_t_samples = 0 (every t) is for the discrete process ddpm; "
                              "process.name = 'vp' is continuous: set likelihood.vlb_t_samples >= 2")
        if self.score.space == "latent" and self.data.name in VECTOR_DATASETS:
            raise ConfigError(f"score.space = 'latent': data.name = {self.data.name!r} gives vectors, and the "
                              "autoencoder needs images (C, H, W); set score.space=pixel for the 2-D data sets")


# --------------------------------------------------------------------------- generic parser


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted (int→float only)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool):
            raise ConfigError(
                f"{key} = {value!r}: unknown value; allowed: {', '.join(map(str, allowed))}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} = {value!r}: expected {_type_name(tp)}")
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} = {value!r}: expected a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{key} = {value!r}: expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r}: expected a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # programming error


def _check_range(value: Any, meta: dict, key: str) -> None:
    if value is None or isinstance(value, (list, str, bool)):
        return
    for op, bound, ok in (
        (">=", meta.get("ge"), lambda v, b: v >= b),
        (">", meta.get("gt"), lambda v, b: v > b),
        ("<=", meta.get("le"), lambda v, b: v <= b),
        ("<", meta.get("lt"), lambda v, b: v < b),
    ):
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key} = {value!r}: must be {op} {bound}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, validating every field (recursively)."""
    label = prefix or "params"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label} = {data!r}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{label}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]}; allowed keys{' in ' + prefix if prefix else ''}: "
            + ", ".join(fields)
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if name in data:
            value = _coerce(data[name], tp, key)
        elif dataclasses.is_dataclass(tp):
            value = _build(tp, {}, key)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        else:
            raise ConfigError(f"{key} is missing")
        kwargs[name] = value
    token = _KEY.set(prefix)  # the section checks itself (`Section`), naming keys from here
    try:
        return cls(**kwargs)
    finally:
        _KEY.reset(token)


def parse_params(data: dict, source: str = "params.yaml") -> Params:
    """Validate a params mapping into `Params`; errors are prefixed with `source`."""
    try:
        return _build(Params, data, "")
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (see module docstring for the error format)."""
    return parse_params(read_yaml(path), str(path))


def to_dict(obj: Any) -> dict:
    """A plain (JSON-able) dict of a params dataclass."""
    return dataclasses.asdict(obj)


def _name_sections(cls: type, prefix: str = "") -> None:
    """Give every section class its params.yaml key (`Section.KEY`), for errors of sections
    built directly in code."""
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):  # an optional section
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if dataclasses.is_dataclass(tp):
            tp.KEY = f"{prefix}{f.name}"
            _name_sections(tp, f"{tp.KEY}.")


_name_sections(Params)
