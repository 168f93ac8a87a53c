"""The outputs of stage evaluate: reports/metrics.json (flat DVC metrics) and reports/eval_detail.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sbm.pipeline.records import LEVEL, KeyFamily, Record, family, inline, key, opt

#: metrics.json: the relative score error at level i of the grid (0 = the noisiest), "score_rel_err_l07"
SCORE_LEVEL_KEY = KeyFamily("score_rel_err_l{}", (LEVEL,))


@dataclass(frozen=True, kw_only=True)
class EvaluatorScores(Record):
    """FID, KID and precision/recall next to their floors, the evaluator's test accuracy and the class
    TV (sbm.eval.quality.evaluator_metrics)."""

    fid: float
    fid_floor: float
    fid_ratio: float | None  # None when the floor is 0
    kid: float
    kid_floor: float
    precision: float
    precision_floor: float
    recall: float
    recall_floor: float
    evaluator_acc: float
    class_tv: float


@dataclass(frozen=True, kw_only=True)
class MixtureScores(Record):
    """The analytic-truth metrics of Gaussian-mixture data (sbm.eval.truth.gmm_metrics)."""

    score_rel_err_mean: float
    score_rel_err_max: float
    score_mse_mean: float
    weight_err_max: float
    weight_tv: float
    logp_samples: float
    logp_test: float
    logp_gap: float
    score_rel_err_levels: tuple[float, ...] = family(SCORE_LEVEL_KEY)


@dataclass(frozen=True, kw_only=True)
class OdeLikelihood(Record):
    """The probability-flow ODE NLL (sbm.eval.likelihood.nll_metrics): nll (nats) or, for quantised
    data, bpd (uniform dequantisation, the Jensen bound of sbm.core.units eq. 5; averaged over the K
    draws under importance dequantisation) and with importance dequantisation bpd_iw (the
    importance-weighted bound, units eq. 7, same draws: ≤ bpd); with the mixture's exact NLL where
    the density is known."""

    _MARKERS = ("nll", "bpd")
    nll: float | None = opt()
    bpd: float | None = opt()
    bpd_iw: float | None = opt()
    nll_nfe: float
    nll_exact: float | None = opt()
    nll_gap: float | None = opt()


@dataclass(frozen=True, kw_only=True)
class LatentBound(Record):
    """A latent model's upper bound on −log p(x) (sbm.eval.likelihood.latent_nll_metrics): the ELBO and
    the IWAE over z (averaged over the K dequantisations), and with importance dequantisation
    bpd_bound_iw / nll_bound_iw, importance-weighted over the K dequantisations and the latent draws
    together (≤ bpd_bound_iwae)."""

    bpd_bound: float
    bpd_bound_iwae: float
    bpd_bound_iw: float | None = opt()
    nll_bound: float
    nll_bound_iw: float | None = opt()
    bound_rec: float
    bound_kl: float
    nll_nfe: float


@dataclass(frozen=True, kw_only=True)
class VariationalBound(Record):
    """The variational bound on −log p(x) of a pixel-space ddpm or vp model (sbm.eval.likelihood.vlb_metrics,
    sbm.core.vlb): nats per example, its Monte Carlo standard error, and the prior / reconstruction /
    diffusion terms (nats); bits/dim for quantised data, of the discrete data itself (a discretised
    decoder: no dequantisation). vlb_nfe: model evaluations per batch."""

    _MARKERS = ("vlb_nll",)
    vlb_nll: float
    vlb_nll_se: float
    vlb_bpd: float | None = opt()
    vlb_bpd_se: float | None = opt()
    vlb_prior: float
    vlb_recon: float
    vlb_diffusion: float
    vlb_nfe: float


@dataclass(frozen=True, kw_only=True)
class Memorisation(Record):
    """Copies of the training data (sbm.eval.distances.memorisation, eq. 3): the fraction of samples
    equal to a training example next to the test split's, and the ratio of median distances to the
    nearest training example, samples over test (≈ 1: no closer to the training data than new data)."""

    copies: float
    copies_floor: float
    nn_ratio: float


@dataclass(frozen=True, kw_only=True)
class EvalMetrics(Record):
    """reports/metrics.json (stage evaluate): flat scalars for `dvc metrics show` / `dvc exp show`."""

    n_samples: int
    n_eval: int
    swd: float
    swd_floor: float
    swd_ratio: float | None
    mmd: float
    mmd_floor: float
    evaluator: EvaluatorScores | None = inline(optional=True)  # labelled data
    mixture: MixtureScores | None = inline(optional=True)  # Gaussian-mixture data
    likelihood: OdeLikelihood | None = inline(optional=True)  # pixel-space models
    bound: LatentBound | None = inline(optional=True)  # latent models
    vlb: VariationalBound | None = inline(optional=True)  # pixel-space ddpm / vp models
    # absent when the test split is no reference (its median point is a training example)
    memorisation: Memorisation | None = inline(optional=True)

    def __post_init__(self):
        if (self.likelihood is None) == (self.bound is None):
            raise ValueError("expected the likelihood keys (nll or bpd, nll_nfe) or the latent bound's "
                             "(bpd_bound, ...), exactly one of them")


@dataclass(frozen=True, kw_only=True)
class DataInfo(Record):
    name: str | None
    shape: tuple[int, ...] | None
    n_train: int
    n_test: int


@dataclass(frozen=True, kw_only=True)
class SamplesInfo(Record):
    file: str
    n: int
    sampler: str | None  # from the samples file's metadata
    nfe: int | None
    wall_time_s: float | None


@dataclass(frozen=True, kw_only=True)
class DistanceDetail(Record):
    """sbm.eval.distances.distance_report: SW₂ and MMD² of samples vs test next to the real-data floor."""

    n: int
    swd: float
    swd_floor: float
    swd_ratio: float | None
    mmd: float
    mmd_floor: float
    mmd_bandwidths: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class EvaluatorDetail(Record):
    n_fid: int
    n_test: int
    class_counts: tuple[int, ...]
    train_class_freq: tuple[float, ...]
    scores: EvaluatorScores = inline()


@dataclass(frozen=True, kw_only=True)
class ScoreLevel(Record):
    """The learned score against the exact one at one noise level (sbm.eval.truth.score_error_per_level)."""

    t: float
    alpha: float
    sigma: float
    mse: float
    score_sq: float
    rel_err: float


@dataclass(frozen=True, kw_only=True)
class MixtureWeights(Record):
    true: tuple[float, ...]
    recovered: tuple[float, ...]
    means: tuple[tuple[float, ...], ...]


@dataclass(frozen=True, kw_only=True)
class LogDensity(Record):
    samples: float
    test: float


@dataclass(frozen=True, kw_only=True)
class MixtureDetail(Record):
    _MARKERS = ("score_levels",)
    score_levels: tuple[ScoreLevel, ...]
    weights: MixtureWeights
    logp: LogDensity


@dataclass(frozen=True, kw_only=True)
class VlbDetail(Record):
    """How the variational bound was computed (sbm.core.vlb): bound "ddpm" (Ho et al. 2020 eq. 5) or
    "continuous" (Song et al. 2021 Thm 1); variance: the ddpm reverse variance (posterior | beta);
    t_samples: draws of t per example (0: every t, two passes); decoder: discretised_gaussian
    (quantised data) | gaussian; dequantization: "none" where bits/dim are given (the decoder is
    discrete), absent for continuous data."""

    bound: Literal["ddpm", "continuous"]
    variance: str | None = opt()
    t_samples: int
    decoder: Literal["discretised_gaussian", "gaussian"]
    dequantization: str | None = opt()
    n: int
    batches: int
    figures: VariationalBound = inline()


@dataclass(frozen=True, kw_only=True)
class LikelihoodDetail(Record):
    """The likelihood settings and results (ODE: `ode`, with `batches`; latent bound: `bound`,
    with `bound_samples`); dequantization: how the bits/dim above were made ("uniform": u ~ U[0, Δ)^D,
    sbm.core.units eqs. 4–5; "importance (K = …)": K such draws per point, eqs. 6–7 next to 4–5, with
    dequant_samples = K; absent for continuous data); vlb: the variational bound of a ddpm / vp
    model."""

    divergence: str
    probe: str
    n_probes: int
    rtol: float
    atol: float
    batch_size: int
    n: int
    batches: int | None = opt()  # ODE
    is_bound: bool | None = key("bound", omit=True)  # latent bound: true
    bound_samples: int | None = opt()  # latent bound: K
    dequantized: bool
    bin_width: float | None
    dequantization: str | None = opt()
    dequant_samples: int | None = opt()  # importance dequantisation: K
    ode: OdeLikelihood | None = inline(optional=True)
    bound: LatentBound | None = inline(optional=True)
    vlb: VlbDetail | None = opt()


@dataclass(frozen=True, kw_only=True)
class EvalDetail(Record):
    """reports/eval_detail.json (stage evaluate): the tables behind metrics.json."""

    data: DataInfo
    samples: SamplesInfo
    distances: DistanceDetail
    evaluator: EvaluatorDetail | None = opt()
    mixture: MixtureDetail | None = inline(optional=True)
    likelihood: LikelihoodDetail


def evaluator_part(flat: Mapping, detail: Mapping) -> tuple[EvaluatorScores, EvaluatorDetail]:
    """The typed (flat, detail) of sbm.eval.quality.evaluator_metrics."""
    return (EvaluatorScores.from_json(dict(flat), file="evaluator_metrics"),
            EvaluatorDetail.from_json(detail["evaluator"], file="evaluator_metrics detail"))


def mixture_part(flat: Mapping, detail: Mapping) -> tuple[MixtureScores, MixtureDetail]:
    """The typed (flat, detail) of sbm.eval.truth.gmm_metrics."""
    return (MixtureScores.from_json(dict(flat), file="gmm_metrics"),
            MixtureDetail.from_json(dict(detail), file="gmm_metrics detail"))


def vlb_part(flat: Mapping) -> VariationalBound:
    """The typed flat scalars of sbm.eval.likelihood.vlb_metrics."""
    return VariationalBound.from_json(dict(flat), file="vlb metrics")


def likelihood_part(flat: Mapping, detail: Mapping) -> tuple[OdeLikelihood | LatentBound, LikelihoodDetail]:
    """The typed (flat, detail) of sbm.eval.likelihood.nll_metrics / latent_nll_metrics."""
    cls = LatentBound if LatentBound._present(flat) else OdeLikelihood
    return (cls.from_json(dict(flat), file="likelihood metrics"),
            LikelihoodDetail.from_json(detail["likelihood"], file="likelihood detail"))
