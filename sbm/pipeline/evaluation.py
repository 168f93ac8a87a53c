"""The evaluate stage's work: how close the samples are to the data, how likely the test data is
under the model, and (for the Gaussian mixture) how close the learned score is to the exact one,
as the typed outputs of sbm.pipeline.outputs (`EvalMetrics` for reports/metrics.json,
`EvalDetail` for reports/eval_detail.json).

Evaluator (labelled data; sbm.eval.quality.evaluator_metrics): FID, KID and precision/recall of
samples vs test on the evaluator's calibrated features (or Inception's, params evaluator.feature),
each next to its floor (train vs test), the evaluator's test accuracy and the class TV of the
samples against the training frequencies. Distances (sbm.eval.distances.distance_report):
SW₂ and MMD² of samples vs test next to the real-data floor. Copies (sbm.eval.distances.memorisation):
the fraction of samples equal to a training example and their median distance to the nearest one,
next to the test split's. Likelihood
(sbm.eval.likelihood): the probability-flow ODE NLL (bits/dim for quantised data, uniformly
dequantised) of a pixel model, the upper bound through the autoencoder of a latent model; for a
pixel-space ddpm or vp model also its variational bound (sbm.core.vlb) ± its standard error. Gaussian mixture
(sbm.eval.truth.gmm_metrics): score error per level, recovered weights, true log-densities and
the exact NLL.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from sbm import io
from sbm.config.params import Params
from sbm.core.gmm import GaussianMixture
from sbm.eval.distances import distance_report, memorisation
from sbm.eval.evaluator import load_evaluator_dir
from sbm.eval.likelihood import has_vlb, latent_nll_metrics, nll_metrics, vlb_metrics
from sbm.eval.quality import QualityMeter, evaluator_metrics
from sbm.eval.truth import gmm_metrics
from sbm.latent.space import check_space
from sbm.latent.vae import load_space_vae
from sbm.models.score import load_model
from sbm.pipeline.outputs.evaluation import (
    DataInfo,
    DistanceDetail,
    Memorisation,
    EvalDetail,
    EvalMetrics,
    LatentBound,
    SamplesInfo,
    evaluator_part,
    likelihood_part,
    mixture_part,
    vlb_part,
)
from sbm.pipeline.plots import placeholder, plot_class_histogram
from sbm.pipeline.prepared import load_meta, load_split


def load_samples(path) -> tuple[torch.Tensor, dict]:
    """x (N, ...) of a samples file and its metadata; ValueError naming the file if any sample is
    not finite or there are fewer than 2."""
    tensors, meta = io.load_tensors(path)
    if "x" not in tensors:
        raise ValueError(f"{path}: no tensor 'x' (holds {', '.join(tensors) or 'nothing'}); not a samples file")
    x = tensors["x"]
    bad = int((~torch.isfinite(x.reshape(len(x), -1))).any(1).sum()) if len(x) else 0
    if bad:
        raise ValueError(f"{path}: {bad} of {len(x)} samples are not finite (NaN/inf); "
                         "the sampler diverged: lower sampler.step_size or check the model")
    if len(x) < 2:
        raise ValueError(f"{path}: {len(x)} samples; need at least 2 to evaluate")
    return x, meta


def copy_check(samples: torch.Tensor, train: torch.Tensor, test: torch.Tensor) -> Memorisation | None:
    """sbm.eval.distances.memorisation (eq. 3) of samples (n, ...) against the training split, the
    test split (k, ...) as the reference; None, with a warning, when the test split is no reference
    (its median point is a training example: a data set with many duplicates)."""
    try:
        return Memorisation.from_json(memorisation(samples, train, test), file="memorisation")
    except ValueError as err:
        warnings.warn(f"evaluate: no copy check: {err}", stacklevel=2)
        return None


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate stage writes: reports/metrics.json and reports/eval_detail.json."""

    metrics: EvalMetrics
    detail: EvalDetail

    def write(self, metrics: str | Path, detail: str | Path) -> None:
        self.metrics.write(metrics)
        self.detail.write(detail)


def evaluate(params: Params, *, data_dir, space_dir, evaluator_dir, model_path, samples_path,
             progress: bool = True) -> Evaluation:
    """Measure the samples in `samples_path` and the model in `model_path` against the prepared data
    in `data_dir` (params: seed, eval, likelihood, vae.bound_samples, score.space, evaluator); the
    space directory says how the model's samples map to data (a latent model's VAE); the evaluator
    directory holds the FID classifier, or says why there is none. Every input is checked before
    the work (ValueError / FileNotFoundError / CheckpointError naming the file)."""
    cfg = params.eval
    meta = load_meta(data_dir)
    samples, sample_meta = load_samples(samples_path)
    if list(samples.shape[1:]) != list(meta["shape"]) and samples[0].numel() != meta["dim"]:
        raise ValueError(f"{samples_path}: samples of shape {list(samples.shape[1:])}, "
                         f"but the data in {data_dir} has shape {meta['shape']}")
    gmm = GaussianMixture.from_dict(meta["gmm"]) if meta.get("gmm") else None
    if gmm is not None and gmm.dim != samples[0].numel():
        raise ValueError(f"{data_dir}/meta.json: the mixture has dimension {gmm.dim}, "
                         f"the samples {samples[0].numel()}")
    check_space(space_dir, params.score.space)
    vae = load_space_vae(space_dir)  # fail before the work
    evaluator = load_evaluator_dir(evaluator_dir)
    model = load_model(model_path)[0]
    train_x, train_y = load_split(data_dir, "train")
    test_x, test_y = load_split(data_dir, "test")

    dist = DistanceDetail.from_json(
        distance_report(samples, test_x, train_x, cfg.n_points, cfg.n_projections, params.seed),
        file="distance_report")
    copies = copy_check(samples, train_x, test_x)
    scores = ev_detail = None
    if evaluator is not None:
        meter = QualityMeter.from_params(params.evaluator, test_x, evaluator, seed=params.seed)
        scores, ev_detail = evaluator_part(*evaluator_metrics(
            samples, train_x, train_y, test_x, test_y, evaluator, meter, params.seed))
    mixture = mix_detail = None
    if gmm is not None:
        mixture, mix_detail = mixture_part(*gmm_metrics(model, gmm, samples, test_x, cfg.n_score_points,
                                                        params.seed, progress=progress))
    if vae is not None:
        lik = latent_nll_metrics(model, vae, test_x, meta, params.likelihood, params.seed, params.vae.bound_samples,
                                 progress=progress)
    else:
        lik = nll_metrics(model, test_x, meta, params.likelihood, params.seed, gmm, progress=progress)
    vlb = None
    if vae is None and has_vlb(model):  # a pixel-space ddpm / vp model: its variational bound too
        vlb_flat, vlb_detail = vlb_metrics(model, test_x, meta, params.likelihood, params.seed, progress=progress)
        vlb = vlb_part(vlb_flat)
        lik = (lik[0], {**lik[1], "likelihood": {**lik[1]["likelihood"], "vlb": vlb_detail}})
    likelihood, lik_detail = likelihood_part(*lik)
    bound = likelihood if isinstance(likelihood, LatentBound) else None
    metrics = EvalMetrics(n_samples=len(samples), n_eval=dist.n, swd=dist.swd, swd_floor=dist.swd_floor,
                          swd_ratio=dist.swd_ratio, mmd=dist.mmd, mmd_floor=dist.mmd_floor, evaluator=scores,
                          mixture=mixture, likelihood=None if bound else likelihood, bound=bound, vlb=vlb,
                          memorisation=copies)
    shape = meta.get("shape")
    detail = EvalDetail(
        data=DataInfo(name=meta.get("name"), shape=tuple(shape) if shape is not None else None,
                      n_train=len(train_x), n_test=len(test_x)),
        samples=SamplesInfo(file=str(samples_path), n=len(samples), sampler=sample_meta.get("sampler"),
                            nfe=sample_meta.get("nfe"), wall_time_s=sample_meta.get("wall_time_s")),
        distances=dist, evaluator=ev_detail, mixture=mix_detail, likelihood=lik_detail)
    return Evaluation(metrics, detail)


def plot_classes(evaluation: Evaluation, png: str | Path) -> None:
    """The evaluator's classes of the samples next to the training frequencies (reports/class_histogram.png),
    or a placeholder saying there is no evaluator."""
    ev, scores = evaluation.detail.evaluator, evaluation.metrics.evaluator
    if ev is None or scores is None:
        placeholder(png, "no class labels in this data set: no evaluator, no class histogram")
        return
    plot_class_histogram(list(ev.class_counts), png, reference=list(ev.train_class_freq),
                         title=f"evaluator classes of {evaluation.metrics.n_samples} samples "
                               f"(TV {scores.class_tv:.3f})")


def summary_line(m: EvalMetrics) -> str:
    """One line of the numbers that matter, for the stage's output."""
    msg = f"evaluate: SW₂ {m.swd:.4f} (floor {m.swd_floor:.4f}), MMD² {m.mmd:.2e} (floor {m.mmd_floor:.2e})"
    if m.evaluator is not None:
        e = m.evaluator
        msg += (f", FID {e.fid:.3f} (floor {e.fid_floor:.3f}), KID {e.kid:.4f} (floor {e.kid_floor:.4f}), "
                f"precision {e.precision:.3f} / recall {e.recall:.3f} (floor {e.precision_floor:.3f} / "
                f"{e.recall_floor:.3f}), evaluator acc. {e.evaluator_acc:.3f}, class TV {e.class_tv:.3f}")
    if m.mixture is not None:
        msg += f", score rel. err. {m.mixture.score_rel_err_mean:.3f}, weight err. {m.mixture.weight_err_max:.3f}"
    if m.bound is not None:
        msg += f", ≤ {m.bound.bpd_bound:.3f} bits/dim (latent bound)"
        nfe = m.bound.nll_nfe
    else:
        ode = m.likelihood
        if ode.bpd is not None:
            msg += f", {ode.bpd:.3f} bits/dim"
        else:
            msg += f", NLL {ode.nll:.3f} nats" + (f" (exact {ode.nll_exact:.3f})" if ode.nll_exact is not None else "")
        nfe = ode.nll_nfe
    msg += f" ({nfe:.0f} NFE)"
    if m.memorisation is not None:
        c = m.memorisation
        msg += (f", copies of training examples {c.copies:.3f} (test split {c.copies_floor:.3f}), "
                f"nearest-training distance samples/test {c.nn_ratio:.2f}")
    if m.vlb is not None:
        v = m.vlb
        msg += (f", variational bound ≤ {v.vlb_bpd:.3f} ± {v.vlb_bpd_se:.3f} bits/dim" if v.vlb_bpd is not None
                else f", variational bound ≤ {v.vlb_nll:.3f} ± {v.vlb_nll_se:.3f} nats")
    return msg
