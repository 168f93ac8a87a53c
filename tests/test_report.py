"""The evaluate and report stages end to end on a tiny pipeline laid out in tmp dirs."""

import json
import math
import re
from pathlib import Path

import datasets
import matplotlib
import pytest
import torch

from sbm import io
from sbm.config.params import load_params
from sbm.core.gmm import GaussianMixture
from sbm.core.model import ScoreModel
from sbm.core.processes import NCSNLadder
from sbm.eval.degrade import LADDER, bar_failures
from sbm.eval.evaluator import NO_EVALUATOR_FILE
from sbm.latent.vae import write_space
from sbm.models.score import save_model
from sbm.nets.score import MLPNet
from sbm.pipeline.evaluation import evaluate, plot_classes
from sbm.pipeline.outputs.conditional import (
    CfgRow,
    DistillDetail,
    DistillRun,
    GuidanceDetail,
    GuidanceRow,
    SampleScores,
    TextDetail,
    UnseenRow,
)
from sbm.pipeline.outputs.evaluation import EvalDetail, EvalMetrics, EvaluatorScores
from sbm.pipeline.outputs.prepared import PreparedData
from sbm.pipeline.outputs.sampling import SamplerComparison, SampleSummary
from sbm.pipeline.outputs.seeds import OverSeeds, Quality, QualityFloor
from sbm.pipeline.outputs.skipped import SkippedTraining
from sbm.pipeline.outputs.training import (
    ClassifierTraining,
    DistillRound,
    DistillTraining,
    LadderRow,
    MetricCalibration,
    PixelSpace,
    ScoreTraining,
    TextTraining,
)
from sbm.pipeline.report import ReportInputs, build_report, inputs_from_argv, plot_loss
from sbm.pipeline.stage import run_stage

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]
GMM = GaussianMixture([0.6, 0.3, 0.1], [[-4.0, -4.0], [4.0, 4.0], [4.0, -4.0]],
                      [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.6], [0.6, 0.8]], [[0.5, 0.0], [0.0, 1.5]]])
N_LEVELS = 30  # > 20: evaluate uses process.grid(20)


def write_prepared(d: Path, x_train, y_train, x_test, y_test, gmm: dict | None, name: str) -> None:
    """The layout of sbm.pipeline.data.prepare: dataset/{train,test} (x flat float32, label int64) + meta.json."""
    dim = x_train.shape[1]
    features = datasets.Features({"x": datasets.List(datasets.Value("float32"), length=dim),
                                  "label": datasets.Value("int64")})
    datasets.DatasetDict({
        s: datasets.Dataset.from_dict({"x": x.numpy(), "label": y.numpy()}, features=features)
        for s, (x, y) in {"train": (x_train, y_train), "test": (x_test, y_test)}.items()
    }).save_to_disk(str(d / "dataset"))
    io.write_json(d / "meta.json", {
        "name": name, "shape": [dim], "dim": dim, "n_train": len(x_train), "n_test": len(x_test),
        "value_range": [float(x_train.min()), float(x_train.max())], "n_levels": None, "data_range": None,
        "sigma_max": 12.0, "gmm": gmm, "n_classes": 3 if gmm else None,
    })


@pytest.fixture
def pipeline(tmp_path):
    """params, prepared gmm data, an untrained model and samples, all under tmp_path."""
    g = torch.Generator().manual_seed(0)
    xtr, ytr = GMM.sample(600, generator=g)
    xte, yte = GMM.sample(300, generator=g)
    write_prepared(tmp_path / "prepared", xtr, ytr, xte, yte, GMM.to_dict(), "gmm")
    torch.manual_seed(0)  # the untrained network's initialisation only
    save_model(tmp_path / "score.safetensors", ScoreModel(MLPNet(2, hidden=16, depth=1), NCSNLadder(0.01, 12.0, N_LEVELS)))
    samples, _ = GMM.sample(400, generator=g)
    io.save_tensors(tmp_path / "samples.safetensors", {"x": samples + 2.0},
                    {"kind": "samples", "sampler": "annealed_langevin", "nfe": 10, "wall_time_s": 0.1})
    (tmp_path / "params.yaml").write_text("seed: 3\nscore:\n  space: pixel\n"
                                          "eval:\n  n_points: 250\n  n_projections: 64\n  n_score_points: 200\n")
    write_space(tmp_path / "space", [2])  # pixel space: no autoencoder
    io.write_json(tmp_path / "evaluator" / NO_EVALUATOR_FILE, {"reason": "no evaluator in these tests"})
    return tmp_path


def run_evaluate(p: Path, **over) -> dict:
    """What the evaluate stage does (sbm.pipeline.evaluation) on the fixture's files under p (`over`
    replaces some: params, data, model, samples, space, evaluator); -> the metrics.json it wrote."""
    f = {"params": p / "params.yaml", "data": p / "prepared", "model": p / "score.safetensors",
         "samples": p / "samples.safetensors", "space": p / "space", "evaluator": p / "evaluator", **over}
    result = evaluate(load_params(f["params"]), data_dir=f["data"], space_dir=f["space"], evaluator_dir=f["evaluator"],
                      model_path=f["model"], samples_path=f["samples"], progress=False)
    plot_classes(result, p / "reports" / "class_histogram.png")
    result.write(p / "reports" / "metrics.json", p / "reports" / "eval_detail.json")
    return result.metrics.to_json()


def _exact_mixture_metrics(p: Path) -> dict:
    """What evaluate must report for the fixture's mixture, written out independently of sbm.eval.truth:
    component assignment and log-densities from torch.distributions, and the score error per level
    drawn as the stage documents it (for each of the 20 grid times: x₀ ~ p, then ε, from one
    generator seeded with params.seed) and compared with the exact mixture score."""
    from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

    from sbm.config.params import load_params
    from sbm.models.score import load_model

    params = load_params(p / "params.yaml")
    samples = io.load_tensors(p / "samples.safetensors")[0]["x"].double()
    test = torch.tensor(datasets.load_from_disk(str(p / "prepared" / "dataset"))["test"]["x"], dtype=torch.float64)
    comps = MultivariateNormal(GMM.means, GMM.covs)
    mix = MixtureSameFamily(Categorical(probs=GMM.weights), comps)
    nearest = comps.log_prob(samples[:, None, :]).argmax(1)  # weights left out
    rec = torch.bincount(nearest, minlength=3).double() / len(samples)
    out = {"recovered": rec.tolist(), "weight_err_max": float((rec - GMM.weights).abs().max()),
           "weight_tv": float(0.5 * (rec - GMM.weights).abs().sum()),
           "logp_samples": float(mix.log_prob(samples).mean()), "logp_test": float(mix.log_prob(test).mean()),
           "nll_exact": -float(mix.log_prob(test[: params.likelihood.n_points]).mean())}
    model = load_model(p / "score.safetensors")[0]
    g = torch.Generator().manual_seed(params.seed)
    n = params.eval.n_score_points
    levels = []
    with torch.no_grad():
        for t in model.process.grid(20).tolist():
            x0, _ = GMM.sample(n, generator=g)
            eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
            tt = torch.full((n,), t)
            a, s = model.process.marginal(tt)
            x = a[:, None] * x0 + s[:, None] * eps
            alpha, sigma = float(a[0]), float(s[0])
            # exact score of Σₖ wₖ N(αμₖ, α²Σₖ + σ²I) by autograd of its log-density
            comp_t = MultivariateNormal(alpha * GMM.means,
                                        alpha**2 * GMM.covs + sigma**2 * torch.eye(2, dtype=torch.float64))
            with torch.enable_grad():
                xd = x.double().requires_grad_(True)
                logp = torch.logsumexp(torch.log(GMM.weights) + comp_t.log_prob(xd[:, None, :]), 1)
                (truth,) = torch.autograd.grad(logp.sum(), xd)
            pred = model.score(x, tt).double()
            mse, sq = float((pred - truth).pow(2).sum(1).mean()), float(truth.pow(2).sum(1).mean())
            levels.append({"t": t, "sigma": sigma, "mse": mse, "score_sq": sq, "rel_err": mse / sq})
    out["levels"] = levels
    return out


def test_evaluate_stage_writes_flat_finite_metrics(pipeline):
    flat = run_evaluate(pipeline)
    m = json.loads((pipeline / "reports" / "metrics.json").read_text())
    assert m == flat
    expected = {"n_samples", "n_eval", "swd", "swd_floor", "swd_ratio", "mmd", "mmd_floor",
                "score_rel_err_mean", "score_rel_err_max", "score_mse_mean", "weight_err_max", "weight_tv",
                "logp_samples", "logp_test", "logp_gap", "nll", "nll_nfe", "nll_exact", "nll_gap",
                "copies", "copies_floor", "nn_ratio"} | {
                f"score_rel_err_l{i:02d}" for i in range(20)}
    assert set(m) == expected
    for k, v in m.items():  # flat scalars only, all finite
        assert isinstance(v, (int, float)) and math.isfinite(v), (k, v)
    assert m["n_samples"] == 400 and m["n_eval"] == 250
    # samples shifted by 2 in each coordinate: SW₂ ≈ ‖(2, 2)‖/√2 = 2, farther from test than real
    # data is (the floor at n = 250 is large, ≈ 0.8: the mode counts vary by ±8 points)
    assert m["swd"] > 2 * m["swd_floor"] and m["mmd"] > 10 * abs(m["mmd_floor"])
    assert m["swd_ratio"] == pytest.approx(m["swd"] / m["swd_floor"], rel=1e-12)
    assert m["logp_samples"] < m["logp_test"] - 1
    # no sample is a training point, and the shifted samples lie farther from the training data than test points
    assert m["copies"] == m["copies_floor"] == 0.0 and m["nn_ratio"] > 1.5

    # the analytic metrics are exactly what the fixture implies (recomputed without sbm.eval.truth)
    exact = _exact_mixture_metrics(pipeline)
    for key in ("weight_err_max", "weight_tv", "logp_samples", "logp_test", "nll_exact"):
        assert m[key] == pytest.approx(exact[key], rel=1e-9, abs=1e-12), key
    assert m["logp_gap"] == pytest.approx(exact["logp_test"] - exact["logp_samples"], rel=1e-9)
    assert m["nll_gap"] == pytest.approx(m["nll"] - exact["nll_exact"], rel=1e-9)
    assert exact["weight_tv"] > 0 and exact["weight_err_max"] > 0  # 400 draws: not exactly the weights
    rel = [r["rel_err"] for r in exact["levels"]]
    for i, r in enumerate(rel):
        assert m[f"score_rel_err_l{i:02d}"] == pytest.approx(r, rel=1e-6), i
    assert m["score_rel_err_mean"] == pytest.approx(sum(rel) / 20, rel=1e-6)
    assert m["score_rel_err_max"] == pytest.approx(max(rel), rel=1e-6)
    assert m["score_mse_mean"] == pytest.approx(sum(r["mse"] for r in exact["levels"]) / 20, rel=1e-6)
    assert min(rel) > 1  # an untrained network does not know the score: worse than s = 0 at every level

    d = json.loads((pipeline / "reports" / "eval_detail.json").read_text())
    assert len(d["score_levels"]) == 20
    for got, want in zip(d["score_levels"], exact["levels"]):
        assert got["t"] == pytest.approx(want["t"]) and got["sigma"] == pytest.approx(want["sigma"], rel=1e-6)
        assert got["mse"] == pytest.approx(want["mse"], rel=1e-6)
        assert got["score_sq"] == pytest.approx(want["score_sq"], rel=1e-6)
    sigmas = [r["sigma"] for r in d["score_levels"]]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[0] == pytest.approx(12.0) and sigmas[-1] == pytest.approx(0.01)
    assert d["weights"]["true"] == pytest.approx([0.6, 0.3, 0.1])
    assert d["weights"]["recovered"] == pytest.approx(exact["recovered"], abs=1e-12)
    assert d["logp"] == pytest.approx({"samples": exact["logp_samples"], "test": exact["logp_test"]}, rel=1e-9)
    assert d["samples"]["sampler"] == "annealed_langevin" and d["samples"]["nfe"] == 10
    # same params and seed: the same metrics
    assert run_evaluate(pipeline) == flat


def test_evaluate_without_mixture_has_no_analytic_metrics(pipeline, tmp_path):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 2, generator=g)
    no_label = torch.full((500,), -1, dtype=torch.int64)
    write_prepared(tmp_path / "moons", x[:300], no_label[:300], x[300:], no_label[300:], None, "moons")
    flat = run_evaluate(pipeline, data=tmp_path / "moons")
    assert "swd" in flat and "nll" in flat
    assert not any(k.startswith(("score_", "weight_", "logp_", "nll_exact")) for k in flat)


def _run_cli(p: Path, **over):
    with pytest.raises(SystemExit) as exc:
        run_stage("evaluate", lambda: run_evaluate(p, **over))
    return exc.value.code


def test_evaluate_refuses_non_finite_samples(pipeline, capsys):
    x, _ = GMM.sample(50, generator=torch.Generator().manual_seed(2))
    x[[3, 7, 9], 0] = float("nan")
    x[11, 1] = float("inf")
    io.save_tensors(pipeline / "bad.safetensors", {"x": x}, {"kind": "samples", "sampler": "langevin"})
    code = _run_cli(pipeline, samples=pipeline / "bad.safetensors")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "bad.safetensors" in err and "4 of 50 samples are not finite" in err
    assert not (pipeline / "reports" / "metrics.json").exists()


@pytest.mark.parametrize("what", ["model", "data", "samples"])
def test_evaluate_missing_input_is_a_one_line_error(pipeline, capsys, what):
    code = _run_cli(pipeline, **{what: pipeline / "nowhere"})
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nowhere" in err


def test_evaluate_bad_params_is_a_one_line_error(pipeline, capsys):
    (pipeline / "params.yaml").write_text("eval:\n  n_points: 1\n")
    code = _run_cli(pipeline)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "eval.n_points = 1" in err


# --------------------------------------------------------------------------- report


def _png(path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    fig.savefig(path)
    plt.close(fig)
    return path


def _loss_tsv(path: Path, scale: float = 2.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("timestamp\tstep\tloss\n" + "".join(f"{1700000000 + s}\t{s}\t{scale / (1 + s)}\n"
                                                         for s in range(0, 100, 5)))
    return path


def _write_training_outputs(r: Path) -> None:
    _loss_tsv(r / "live" / "train_score" / "plots" / "metrics" / "loss.tsv")
    ScoreTraining(loss="dsm", space="pixel", final_loss=0.021, steps=100, train_seconds=1.5, resumed_from=None,
                  n_params=1234, world_size=1).write(r / "train_score.json")
    PreparedData(name="gmm", shape=(2,), dim=2, n_train=600, n_test=300, value_range=(-7.5, 7.5), n_levels=None,
                 data_range=None, sigma_max=12.0, n_classes=3, seed=3).write(r / "prepare.json")
    SampleSummary(sampler="annealed_langevin", space="pixel", n=400, nfe=10, wall_time_s=0.1,
                  seconds_per_sample=2.5e-4).write(r / "sample.json")
    one = lambda v: {"mean": v, "values": [v]}  # noqa: E731  (one seed: no sd)
    io.write_json(r / "samplers.json", {"n": 400, "metric": "swd", "seeds": [0], "rows": [
        {"sampler": "ddim", "budget": 10, "nfe": 10, "steps": 10, "seconds_per_sample": 1e-4, "non_finite": 0,
         "swd": one(0.31), "swd_floor": 0.12, "mmd": one(0.01), "mmd_floor": 0.0},
        {"sampler": "ode_heun", "budget": 20, "nfe": 19, "steps": 10, "seconds_per_sample": 2e-4, "non_finite": 0,
         "swd": one(0.25), "swd_floor": 0.12, "mmd": one(0.005), "mmd_floor": 0.0}]})
    SkippedTraining().write(r / "train_evaluator.json")
    PixelSpace().write(r / "train_vae.json")
    _png(r / "samples.png")
    _png(r / "reconstructions.png")
    _write_guidance(r)


# every ReportInputs field -> its file name under reports/
REPORT_FILES = {"metrics": "metrics.json", "detail": "eval_detail.json", "train": "train_score.json",
                "prepare": "prepare.json", "sample": "sample.json", "loss_tsv": "live/train_score/plots/metrics/loss.tsv",
                "samples_png": "samples.png", "out": "report.md", "loss_png": "loss.png", "samplers": "samplers.json",
                "samplers_png": "samplers.png", "train_evaluator": "train_evaluator.json", "calibration": "calibration.json", "train_vae": "train_vae.json",
                "reconstructions_png": "reconstructions.png", "class_histogram_png": "class_histogram.png",
                "vae_loss_tsv": "live/train_vae/plots/metrics/loss.tsv", "vae_loss_png": "vae_loss.png",
                "train_classifier": "train_classifier.json", "guidance_detail": "guidance_detail.json",
                "guidance_png": "guidance.png", "train_text": "train_text.json", "text_detail": "text_detail.json",
                "prompt_samples_png": "prompt_samples.png", "conditional_png": "conditional.png",
                "distill": "distill.json", "distill_detail": "distill_detail.json", "distill_png": "distill.png"}


def _write_calibration(path: Path, blur_half: float = 6.0) -> None:
    """A fake degradation ladder: FID ratios rising in every family; blur σ 0.5 at `blur_half`×."""
    ratio = {"blur": (1.05, blur_half, 20.0), "noise": (1.1, 1.5, 2.5), "contrast": (2.0, 5.0), "shift": (10.0,),
             "s&p": (1.5, 3.0, 8.0)}
    seen: dict = {}
    rows = [LadderRow(family="none", severity=0.0, label="none (the floor)", fid=2.0, kid=0.01, precision=0.875,
                      recall=0.875, fid_ratio=1.0)]
    for step in LADDER:
        k = seen[step.family] = seen.get(step.family, -1) + 1
        f = ratio[step.family][k]
        rows.append(LadderRow(family=step.family, severity=step.severity, label=step.label, fid=2.0 * f, kid=0.01 * f,
                              precision=0.5, recall=0.5, fid_ratio=f))
    rows_json = [r.to_json() for r in rows]
    MetricCalibration(feature="evaluator", n=1000, n_test=360, rows=tuple(rows),
                      bar_failures=tuple(bar_failures(rows_json))).write(path)


#: the sampling seeds of the fake comparison tables, and a score's three values around a mean: m − d, m, m + d
SEEDS = (0, 1, 2)


def _over(mean: float, d: float) -> OverSeeds:
    """A score over SEEDS with values mean − d, mean, mean + d: its mean is `mean`, its sd (n − 1) d."""
    return OverSeeds.of([mean - d, mean, mean + d])


def _scores(acc: tuple[float, float] | None, fid: tuple[float, float], *, per_class=None, nfe: int = 100,
            seconds_per_sample: float = 0.01) -> SampleScores:
    """SampleScores over SEEDS: accuracy and FID (mean, d) as `_over`; KID = FID / 100; precision 0.625 ± 0.125,
    recall 0.75 (sd 0); floors FID 2, KID 0.0125, precision 0.875, recall 0.8125."""
    return SampleScores(accuracy=None if acc is None else _over(*acc),
                        per_class=None if acc is None else (per_class or (acc[0],) * 10),
                        quality=Quality(fid=_over(*fid), kid=_over(fid[0] / 100, fid[1] / 100),
                                        precision=_over(0.625, 0.125), recall=_over(0.75, 0.0),
                                        floor=QualityFloor(fid=2.0, kid=0.0125, precision=0.875, recall=0.8125)),
                        nfe=nfe, seconds_per_sample=seconds_per_sample)


def _write_guidance(r: Path) -> None:
    """Fake outputs of train_classifier and evaluate_guidance (two scales, 10 classes, three seeds)."""
    ClassifierTraining(accuracy_by_quarter=(0.97, 0.81, 0.42, 0.13), space="latent", final_loss=0.79, steps=2000,
                       train_seconds=12.5, classifier={"hidden": 128}).write(r / "train_classifier.json")
    rows = [GuidanceRow(scale=s, scores=_scores(a, f, per_class=(a[0],) * 9 + (0.5,)))
            for s, a, f in ((0.0, (0.11, 0.01), (4.5, 0.5)), (4.0, (0.93, 0.01), (6.25, 0.25)))]
    GuidanceDetail(n_per_class=100, sampler="euler_maruyama", seeds=SEEDS,
                   rows=tuple(rows)).write(r / "guidance_detail.json")
    _png(r / "guidance.png")
    _write_text(r)


def _write_text(r: Path) -> None:
    """Fake outputs of train_text, evaluate_text and the prompt grid of sample."""
    TextTraining(encoder="minilm", loss="dsm", space="latent", final_loss=19.5, steps=4000, train_seconds=200.0,
                 resumed_from=None, n_params=1234567, trainable_encoder=False, encoder_dim=384,
                 scratch_vocabulary=None).write(r / "train_text.json")
    rows = [CfgRow(scale=w, scores=_scores(a, f, seconds_per_sample=0.02), network_evals_per_call=1 if w == 0 else 2)
            for w, a, f in ((0.0, (0.1, 0.01), (4.75, 0.25)), (3.0, (0.97, 0.01), (3.5, 0.5)))]
    unseen = [UnseenRow(scale=3.0, template="the number {name} written by hand",
                        scores=_scores((0.66, 0.1), (5.5, 0.5), seconds_per_sample=0.02))]
    TextDetail(n_per_class=100, sampler="euler_maruyama", encoder="minilm", weight=3.0, seeds=SEEDS, rows=tuple(rows),
               unseen=tuple(unseen)).write(r / "text_detail.json")
    _png(r / "prompt_samples.png")
    _write_distill(r)


def _write_distill(r: Path) -> None:
    """Fake outputs of distill and evaluate_distill (a 4-step progressive student)."""
    DistillTraining(method="progressive", teacher="score", guidance=None, steps=4, teacher_steps=16,
                    train_seconds=60.0, final_loss=0.5, distill={"steps_per_round": 600},
                    rounds=tuple(DistillRound(student_steps=n, teacher_steps=2 * n, final_loss=0.5, seconds=30.0,
                                              trained=True) for n in (8, 4))).write(r / "distill.json")
    rows = [DistillRun(label="teacher euler_maruyama (full)", steps=99,
                       scores=_scores(None, (4.0, 0.5), nfe=100, seconds_per_sample=0.01), kind="teacher",
                       solver="euler_maruyama", full=True)]
    rows += [DistillRun(label=label, steps=4, scores=_scores(None, f, nfe=nfe, seconds_per_sample=sec / 1000),
                        kind=kind, solver=solver, full=False)
             for label, kind, solver, nfe, f, sec in (("teacher ddim", "teacher", "ddim", 5, (12.0, 1.0), 0.5),
                                                      ("teacher ode_heun", "teacher", "ode_heun", 9, (20.0, 1.0), 0.9),
                                                      ("student (progressive)", "student", "ddim", 5, (5.0, 0.5), 0.5))]
    DistillDetail(n=1000, method="progressive", teacher="score", guidance=None, student_steps=4,
                  teacher_sampler="euler_maruyama", teacher_steps=100, seeds=SEEDS,
                  rows=tuple(rows)).write(r / "distill_detail.json")
    _png(r / "distill.png")


def report_argv(r: Path) -> list[str]:
    return [a for k, f in REPORT_FILES.items() for a in (f"--{k.replace('_', '-')}", str(r / f))]


def report_inputs(r: Path, **over) -> ReportInputs:
    """All inputs under r (absent unless the test writes them), never the working directory's reports/."""
    return ReportInputs(**{**{k: r / f for k, f in REPORT_FILES.items()}, **over})


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row; an escaped "\\|" inside a cell is a literal "|"."""
    inner = line.strip()[1:-1] if line.strip().startswith("|") else line.strip()
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def table_rows(text: str, first: str | None = None) -> list[list[str]]:
    """Cells of the body rows of the first markdown table in `text` whose first header cell is
    `first` (None: the first table)."""
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("|") and (first is None or _cells(ln)[0] == first))
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(_cells(ln))
    return rows


def table_records(text: str, first: str | None = None) -> list[dict[str, str]]:
    """The body rows of the table `table_rows` finds, each as {header cell: cell}."""
    lines = text.splitlines()
    header = next(_cells(ln) for ln in lines if ln.startswith("|") and (first is None or _cells(ln)[0] == first))
    rows = table_rows(text, first)
    assert all(len(r) == len(header) for r in rows), (header, rows)
    return [dict(zip(header, r)) for r in rows]


def _g(v: float) -> str:
    """A number as the report renders it in a table (4 significant digits)."""
    return f"{v:.4g}"


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG that decodes completely."""
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG", path
        im.load()
        return im.size


LOSS_PNG_SIZE = (600, 350)  # a loss curve: 6 × 3.5 in at 100 dpi
GUIDANCE_PNG_SIZE = (900, 350)  # accuracy and FID panels: 9 × 3.5 in at 100 dpi
PLACEHOLDER_SIZE = (400, 120)  # sbm.pipeline.plots.placeholder: 4 × 1.2 in at 100 dpi


def table_dict(text: str, first: str | None = None) -> dict[str, str]:
    """A two-column table (label, value) of `text` as a dict."""
    return {row[0]: row[1] for row in table_rows(text, first)}


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_report_fields_all_have_cli_flags():
    assert set(REPORT_FILES) == set(ReportInputs.__dataclass_fields__)


def test_report_stage_end_to_end(pipeline):
    r = pipeline / "reports"
    m = run_evaluate(pipeline)
    _write_training_outputs(r)
    _loss_tsv(r / "live" / "train_vae" / "plots" / "metrics" / "loss.tsv")  # stale: pixel space has no VAE
    text = build_report(inputs_from_argv(report_argv(r)))
    assert (r / "report.md").read_text() == text
    assert "_Skipped" not in text
    d = json.loads((r / "eval_detail.json").read_text())
    assert table_dict(section(text, "Data")) == {"name": "gmm", "shape": "[2]", "n_train": "600", "n_test": "300",
                                                 "n_classes": "3", "value_range": "[-7.5, 7.5]", "sigma_max": "12"}
    # metrics table: sample-to-test distance next to the floor, with the numbers of metrics.json
    quality = section(text, "Sample quality")
    assert table_records(quality, "distance to test points") == [
        {"distance to test points": "sliced Wasserstein SW₂", "samples": _g(m["swd"]),
         "real train points (floor)": _g(m["swd_floor"]), "samples / floor": _g(m["swd_ratio"])},
        {"distance to test points": "MMD² (unbiased, RBF)", "samples": _g(m["mmd"]),
         "real train points (floor)": _g(m["mmd_floor"]), "samples / floor": "–"}]
    assert table_dict(quality, "") == {"sampler": "annealed_langevin", "space": "pixel", "n": "400", "nfe": "10",
                                       "wall_time_s": "0.1", "seconds_per_sample": "0.00025"}
    assert table_dict(section(text, "Likelihood"), "test likelihood") == {
        "model NLL (nats / example)": _g(m["nll"]), "exact NLL under the true density": _g(m["nll_exact"]),
        "gap to the exact NLL": _g(m["nll_gap"]), "NFE per ODE solve": _g(m["nll_nfe"])}
    # mixture tables: one row per level with the numbers of eval_detail.json, the relative error of metrics.json
    score_part = text[text.index("### Score error per noise level"):text.index("### Mixture weights")]
    levels = table_records(score_part, "level")
    assert len(levels) == 20
    for i, (row, lv) in enumerate(zip(levels, d["score_levels"])):
        assert row == {"level": str(i), "t": _g(lv["t"]), "σ": _g(lv["sigma"]), "MSE": _g(lv["mse"]),
                       "E‖∇log p‖²": _g(lv["score_sq"]), "relative": _g(m[f"score_rel_err_l{i:02d}"])}, i
    weights = table_records(section(text, "Gaussian mixture: analytic truth"), "component")
    rec = d["weights"]["recovered"]
    assert weights == [{"component": str(k), "mean": mean, "true weight": w, "recovered": _g(rec[k]),
                        "|difference|": _g(abs(rec[k] - float(w)))}
                       for k, (mean, w) in enumerate((("(-4, -4)", "0.6"), ("(4, 4)", "0.3"), ("(4, -4)", "0.1")))]
    assert table_dict(text, "points") == {"samples": _g(m["logp_samples"]), "test points": _g(m["logp_test"])}
    # training and images
    assert table_dict(section(text, "Training")) == {"loss": "dsm", "space": "pixel", "final_loss": "0.021",
                                                     "steps": "100", "train_seconds": "1.5", "n_params": "1234",
                                                     "resumed_from": "–"}
    assert "![training loss](loss.png)" in text and "![samples](samples.png)" in text
    assert _png_size(r / "loss.png") == LOSS_PNG_SIZE
    # sampler comparison: one row per (sampler, steps) with its NFE and distance, as samplers.json has them
    part = text[text.index("## Sampler comparison"):]
    rows = table_records(part, "sampler")
    want = [{"sampler": "ddim", "steps": "10", "NFE": "10", "s / sample": "0.0001", "SW₂": "0.31",
             "SW₂ floor": "0.12", "MMD²": "0.01", "non-finite": "0"},
            {"sampler": "ode_heun", "steps": "10", "NFE": "19", "s / sample": "0.0002", "SW₂": "0.25",
             "SW₂ floor": "0.12", "MMD²": "0.005", "non-finite": "0"}]
    assert [{k: row[k] for k in w} for row, w in zip(rows, want)] == want and len(rows) == 2
    header = list(rows[0])
    assert "FID" not in header and "SW₂" in header and "The plot shows" not in part  # no FID, no plot
    # one seed: single values (no "±") and the table says so
    sm = section(text, "Sampler comparison")
    assert "±" not in sm and "One sampling seed (0; eval.seeds = 1): each score is a single value, no spread." in sm
    # 2-D data without an evaluator or autoencoder: no headline, no image quality, no VAE curve
    assert "## Headline" not in text and "## Image quality" not in text
    assert "No evaluator: the data has no class labels, so no FID." in section(text, "Evaluator")
    assert "Score model in pixel space: no autoencoder." in section(text, "Autoencoder")
    assert "![test data (pixel space)](reconstructions.png)" in text
    assert "vae_loss" not in text  # pixel space: the declared picture is a placeholder, not linked
    assert _png_size(r / "vae_loss.png") == PLACEHOLDER_SIZE


def _write_image_run(r: Path, *, space: str, labelled: bool = True) -> dict:
    """Fake outputs of every stage for digits (1 × 8 × 8) in `space`; -> metrics.json's dict."""
    io.write_json(r / "prepare.json", {"name": "digits", "shape": [1, 8, 8], "dim": 64, "n_train": 1437, "n_test": 360,
                                       "value_range": [-1.0, 1.0], "n_levels": 17, "data_range": [-1.0, 1.0],
                                       "sigma_max": 9.5, "n_classes": 10 if labelled else None, "seed": 0})
    m = {"n_samples": 1000, "n_eval": 360, "swd": 0.125, "swd_floor": 0.0625, "swd_ratio": 2.0, "mmd": 0.003,
         "mmd_floor": 0.0001}
    detail = {"data": {"name": "digits", "shape": [1, 8, 8], "n_train": 1437, "n_test": 360},
              "samples": {"file": "data/samples/samples.safetensors", "n": 1000, "sampler": "ddim", "nfe": 50,
                          "wall_time_s": 2.5},
              "distances": {"n": 360, **{k: m[k] for k in ("swd", "swd_floor", "swd_ratio", "mmd", "mmd_floor")},
                            "mmd_bandwidths": [2.0, 4.0, 8.0]}}
    settings = {"divergence": "hutchinson", "probe": "rademacher", "n_probes": 1, "rtol": 1e-5, "atol": 1e-5,
                "batch_size": 500}
    if labelled:
        io.write_json(r / "train_evaluator.json", {"trained": True, "test_accuracy": 0.9722, "train_accuracy": 0.9986,
                                                   "n_classes": 10, "train_seconds": 3.25,
                                                   "evaluator": {"hidden": 64, "epochs": 20}})
        m.update(fid=12.34, fid_floor=2.468, fid_ratio=5.0, kid=0.125, kid_floor=0.0125, precision=0.625,
                 precision_floor=0.875, recall=0.75, recall_floor=0.8125, evaluator_acc=0.9722, class_tv=0.0815)
        counts = [120, 80, 100, 100, 100, 100, 100, 100, 100, 100]
        freq = [0.1] * 9 + [0.1]
        freq[0], freq[1] = 0.11, 0.09
        detail["evaluator"] = {"n_fid": 1000, "n_test": 360, "class_counts": counts, "train_class_freq": freq,
                               **{k: v for k, v in m.items() if k in EvaluatorScores.__dataclass_fields__}}
        _png(r / "class_histogram.png")
        _write_calibration(r / "calibration.json")
    else:
        io.write_json(r / "train_evaluator.json", {"trained": False})
        SkippedTraining().write(r / "calibration.json")
    if space == "latent":
        io.write_json(r / "train_vae.json", {
            "space": "latent", "recon_mse": 0.01234, "recon_psnr": 25.13, "kl": 8.765, "scale": 0.8125,
            "latent_shape": [2, 4, 4], "final_loss": 0.0456, "steps": 2000, "train_seconds": 40.5,
            "resumed_from": None, "n_params": 54321, "vae": {"latent_channels": 2}})
        _loss_tsv(r / "live" / "train_vae" / "plots" / "metrics" / "loss.tsv", scale=5.0)
        m.update(bpd_bound=1.875, bpd_bound_iwae=1.75, nll_bound=83.75, bound_rec=60.25, bound_kl=23.5, nll_nfe=128.0)
        detail["likelihood"] = {**settings, "n": 64, "bound": True, "bound_samples": 4, "dequantized": True,
                                "bin_width": 0.125, **{k: m[k] for k in ("bpd_bound", "bpd_bound_iwae", "nll_bound",
                                                                         "bound_rec", "bound_kl", "nll_nfe")}}
    else:
        PixelSpace().write(r / "train_vae.json")
        m.update(bpd=1.234, nll_nfe=96.0)
        detail["likelihood"] = {**settings, "n": 64, "batches": 1, "dequantized": True, "bin_width": 0.125,
                                "bpd": 1.234, "nll_nfe": 96.0}
    _png(r / "reconstructions.png")
    EvalMetrics.from_json(m).write(r / "metrics.json")  # checked against the schema on the way
    EvalDetail.from_json(detail).write(r / "eval_detail.json")
    ScoreTraining(loss="eps", space=space, final_loss=0.031, steps=500, train_seconds=12.0, resumed_from=None,
                  n_params=99999, world_size=1).write(r / "train_score.json")
    _loss_tsv(r / "live" / "train_score" / "plots" / "metrics" / "loss.tsv")
    SampleSummary(sampler="ddim", space=space, n=1000, nfe=50, wall_time_s=2.5,
                  seconds_per_sample=2.5e-3).write(r / "sample.json")
    _png(r / "samples.png")
    fid_rows = {**_scores(None, (15.5, 0.5)).quality.to_json(), "fid_floor": 2.468} if labelled else {}
    SamplerComparison.from_json({"n": 1000, "metric": "fid" if labelled else "swd", "seeds": list(SEEDS), "rows": [
        {"sampler": "ddim", "budget": 10, "steps": 10, "nfe": 10, "seconds_per_sample": 1e-3, **fid_rows,
         "swd": _over(0.21, 0.01).to_json(), "swd_floor": 0.0625, "mmd": _over(0.004, 0.001).to_json(),
         "mmd_floor": 0.0001, "non_finite": 0}]}).write(r / "samplers.json")
    _png(r / "samplers.png")
    _write_guidance(r)
    return m


def test_report_latent_image_run(tmp_path):
    r = tmp_path / "reports"
    _write_image_run(r, space="latent")
    text = build_report(inputs_from_argv(report_argv(r)))
    assert "_Skipped" not in text
    # classifier guidance: accuracy per noise quarter, one row per scale, per-class accuracy at the largest
    g = section(text, "Classifier guidance")
    quarters = table_rows(g, "noise quarter")
    assert [q[0][:3] for q in quarters] == ["q1:", "q2:", "q3:", "q4:"]
    assert [q[1] for q in quarters] == ["0.97", "0.81", "0.42", "0.13"]
    # every score "mean ± sd" over the three seeds (sd to 2 significant digits), KID / precision / recall next to FID
    assert table_records(g, "method") == [
        {"method": "classifier", "scale": s, "accuracy": a, "FID": f, "KID": k, "precision": "0.625 ± 0.12",
         "recall": "0.75 ± 0", "FID floor": "2", "NFE": "100", "s / sample": "0.01"}
        for s, a, f, k in (("0", "0.11 ± 0.01", "4.5 ± 0.5", "0.045 ± 0.005"),
                           ("4", "0.93 ± 0.01", "6.25 ± 0.25", "0.0625 ± 0.0025"))]
    assert "mean ± sd over 3 sampling seeds (0, 1, 2; sd with n − 1)" in g
    assert "FID 2, KID 0.0125, precision 0.875, recall 0.8125." in g  # the floors, once
    assert table_rows(g, "class") == [[str(k), "0.93"] for k in range(9)] + [["9", "0.5"]]
    assert "Per-class accuracy at s = 4 (mean over the seeds):" in g
    assert "![accuracy and FID against guidance strength](guidance.png)" in g
    # text: the model, both guidance methods in one table and one plot, the unseen phrasing, the prompt grid
    t = section(text, "Text conditioning and classifier-free guidance")
    assert "1,234,567 trainable parameters" in t and "`minilm` (frozen), 384-dimensional" in t
    both = table_records(t, "method")
    assert [(row["method"], row["strength"], row["accuracy"], row["FID"], row["KID"], row["NFE"]) for row in both] == [
        ("classifier guidance (s)", "0", "0.11 ± 0.01", "4.5 ± 0.5", "0.045 ± 0.005", "100"),
        ("classifier guidance (s)", "4", "0.93 ± 0.01", "6.25 ± 0.25", "0.0625 ± 0.0025", "100"),
        ("classifier-free guidance (w)", "0", "0.1 ± 0.01", "4.75 ± 0.25", "0.0475 ± 0.0025", "100"),
        ("classifier-free guidance (w)", "3", "0.97 ± 0.01", "3.5 ± 0.5", "0.035 ± 0.005", "100")]
    assert "mean ± sd over 3 sampling seeds" in t and "Classifier guidance rows" not in t  # the same seeds
    assert table_rows(t, "phrasing (unseen in training)") == [
        ["the number {name} written by hand", "3", "0.66 ± 0.1", "5.5 ± 0.5", "0.055 ± 0.005", "0.625 ± 0.12",
         "0.75 ± 0"]]
    assert "](conditional.png)" in t and "![samples from prompts](prompt_samples.png)" in t
    assert _png_size(r / "conditional.png") == GUIDANCE_PNG_SIZE  # the plot, not a placeholder
    # distillation: the 4-step student against the teacher at full steps and at 4 DDIM / Heun steps
    d = section(text, "Distillation: a few-step student")
    assert "student's FID is **5 ± 0.5**" in d and "teacher's **4 ± 0.5** at its full 99 steps" in d
    assert "ratio of the means 1.25" in d and "4-step DDIM 12 ± 1 / Heun 20 ± 1" in d
    assert "**20× faster**" in d and "![FID against NFE](distill.png)" in d and "mean ± sd over 3 sampling seeds" in d
    assert table_records(d, "model / sampler") == [
        {"model / sampler": label, "steps": steps, "NFE": nfe, "FID": fid, "KID": kid, "precision": "0.625 ± 0.12",
         "recall": "0.75 ± 0", "s / 1000 samples": sec}
        for label, steps, nfe, fid, kid, sec in (
            ("teacher euler_maruyama (full)", "99", "100", "4 ± 0.5", "0.04 ± 0.005", "10"),
            ("teacher ddim", "4", "5", "12 ± 1", "0.12 ± 0.01", "0.5"),
            ("teacher ode_heun", "4", "9", "20 ± 1", "0.2 ± 0.01", "0.9"),
            ("student (progressive)", "4", "5", "5 ± 0.5", "0.05 ± 0.005", "0.5"))]
    assert table_rows(d, "student steps") == [["8", "16", "0.5", "30"], ["4", "8", "0.5", "30"]]
    # the headline: first section, FID next to its floor and ratio, accuracy, class TV, the bound on bits/dim
    assert text.index("## Headline") < text.index("## Data")
    head = table_dict(section(text, "Headline"))
    assert head["FID, samples vs test (evaluator features)"] == "12.34"
    assert head["FID floor, train vs test (what a perfect model scores)"] == "2.468"
    assert head["FID / floor (1 = perfect)"] == "5"
    assert head["KID, samples vs test (floor)"] == "0.125 (0.0125)"
    assert head["precision: fidelity (floor)"] == "0.625 (0.875)"
    assert head["recall: diversity (floor)"] == "0.75 (0.8125)"
    assert head["evaluator accuracy on the real test split"] == "0.9722"
    # right after it: what this FID can see, the ladder with its verdict
    assert text.index("## Headline") < text.index("## What this FID can see") < text.index("## Data")
    cal = section(text, "What this FID can see")
    assert "**The bar is met**" in cal and "n = 1000" in cal
    ladder = table_records(cal, "real training images")
    assert [row["real training images"] for row in ladder] == ["none (the floor)"] + [s.label for s in LADDER]
    assert ladder[2] == {"real training images": "blur σ = 0.5 px", "FID / floor": "6", "FID": "12", "KID": "0.06",
                         "precision": "0.5", "recall": "0.5"}
    assert head["class TV, samples vs training frequencies (0 = identical)"] == "0.0815"
    assert head["bits/dim, upper bound (importance-weighted, K = 4)"] == "≤ 1.75"
    # likelihood: stated as an upper bound, both bounds and the reconstruction / KL split
    lik = section(text, "Likelihood")
    assert ("−log p(x) ≤ E_q[−log p(x|z) − log p(z) + log q(z|x)], log p(z) from the probability-flow ODE "
            "on the scaled latents") in lik
    assert "upper bound, not an estimate" in lik and "64 test points with K = 4 latent draws" in lik
    rows = table_dict(lik, "test likelihood (upper bound)")
    assert rows["bits/dim, upper bound (ELBO)"] == "1.875"
    assert rows["bits/dim, upper bound (importance-weighted, K = 4)"] == "1.75"
    assert rows["reconstruction term E_q[−log p(x∣z)] (nats)"] == "60.25"
    assert rows["KL term E_q[log q(z∣x) − log p(z)] (nats)"] == "23.5"
    assert rows["NLL upper bound (nats / example)"] == "83.75"
    assert "model NLL (bits / dim, dequantised)" not in text
    # image quality: FID table, class counts next to expected counts, the histogram
    iq = section(text, "Image quality")
    assert "FID between 1000 samples and 360 test examples" in iq
    assert "One sample set" in iq and "the sampler comparison below shows that spread" in iq
    assert table_dict(iq)["recall (fraction of test data on the samples' manifold)"] == "0.75"
    classes = table_rows(iq, "class")
    assert len(classes) == 10
    assert classes[0] == ["0", "120", "110"] and classes[1] == ["1", "80", "90"] and classes[9] == ["9", "100", "100"]
    assert "![class histogram of the samples](class_histogram.png)" in iq
    # evaluator and autoencoder sections
    ev = table_dict(section(text, "Evaluator"))
    assert ev["accuracy, test split"] == "0.9722" and ev["accuracy, training split"] == "0.9986"
    assert ev["evaluator.hidden"] == "64"
    ae = section(text, "Autoencoder")
    vae = table_dict(ae)
    assert vae["reconstruction PSNR (dB)"] == "25.13" and vae["reconstruction MSE, test, decode(μ(x))"] == "0.01234"
    assert vae["KL(q(z∣x) ‖ N(0, I)) (nats / test example)"] == "8.765"
    assert vae["latent scale s = 1/std"] == "0.8125" and vae["latent shape (C × H × W)"] == "2 × 4 × 4"
    assert "![test images above their reconstructions](reconstructions.png)" in ae
    assert "![VAE loss curve](vae_loss.png)" in ae and "no autoencoder" not in text
    assert _png_size(r / "vae_loss.png") == LOSS_PNG_SIZE  # the curve of the VAE's loss.tsv
    # samplers with FID columns; the plot's metric named; the space in training and samples
    sm = section(text, "Sampler comparison")
    (row,) = table_records(sm, "sampler")
    assert row == {"sampler": "ddim", "budget": "10", "steps": "10", "NFE": "10", "s / sample": "0.001",
                   "FID": "15.5 ± 0.5", "KID": "0.155 ± 0.005", "precision": "0.625 ± 0.12", "recall": "0.75 ± 0",
                   "FID floor": "2.468", "SW₂": "0.21 ± 0.01", "SW₂ floor": "0.0625", "MMD²": "0.004 ± 0.001",
                   "non-finite": "0"}
    assert "mean ± sd over 3 sampling seeds (0, 1, 2; sd with n − 1)" in sm
    assert "FID 2.468, KID 0.0125, precision 0.875, recall 0.8125." in sm
    assert "The plot shows FID against NFE (the mean over the seeds, with ±sd error bars)." in sm
    assert "FID, KID and precision/recall on the evaluator's features" in sm
    assert "Score model trained in latent space" in section(text, "Training")
    assert "Drawn in latent space and decoded by the VAE." in section(text, "Samples")


def test_report_text_student_shows_its_guidance_and_prompt_accuracy(tmp_path):
    """distill.teacher = text: the section names the folded-in guidance and reports the
    evaluator's accuracy on the prompts for the student and the teacher."""
    r = tmp_path / "reports"
    _write_image_run(r, space="latent")
    dj = io.read_json(r / "distill.json")
    io.write_json(r / "distill.json", {**dj, "teacher": "text", "guidance": 2.0})
    dd = io.read_json(r / "distill_detail.json")
    for row, acc in zip(dd["rows"], (0.99, 0.9, 0.8, 0.97)):
        row.update(accuracy=_over(acc, 0.01).to_json(), per_class=[acc] * 10)
    io.write_json(r / "distill_detail.json", {**dd, "teacher": "text", "guidance": 2.0})
    d = section(build_report(report_inputs(r)), "Distillation: a few-step student")
    assert "student of the text-conditional model under CFG w = 2 (folded into the student)" in d
    assert "evaluator accuracy): student **0.97 ± 0.01**, teacher 0.99 ± 0.01 at full steps" in d
    assert [row["accuracy"] for row in table_records(d, "model / sampler")] == [
        "0.99 ± 0.01", "0.9 ± 0.01", "0.8 ± 0.01", "0.97 ± 0.01"] and "drawn from prompts" in d


def test_report_pixel_image_run(tmp_path):
    r = tmp_path / "reports"
    _write_image_run(r, space="pixel")
    _loss_tsv(r / "live" / "train_vae" / "plots" / "metrics" / "loss.tsv")  # stale curve: not this run's
    text = build_report(report_inputs(r))
    assert "_Skipped" not in text
    head = table_dict(section(text, "Headline"))
    assert head["bits/dim on dequantised test data (probability-flow ODE)"] == "1.234"
    assert head["FID, samples vs test (evaluator features)"] == "12.34"
    assert not any("upper bound" in k for k in head) and "≤" not in section(text, "Headline")
    lik = section(text, "Likelihood")
    assert table_dict(lik, "test likelihood")["model NLL (bits / dim, dequantised)"] == "1.234"
    assert "upper bound" not in lik and "dequantised by uniform noise" in lik
    ae = section(text, "Autoencoder")
    assert "Score model in pixel space: no autoencoder." in ae and "|" not in ae
    assert "![test data (pixel space)](reconstructions.png)" in ae and "VAE loss" not in ae
    assert _png_size(r / "vae_loss.png") == PLACEHOLDER_SIZE and "vae_loss" not in text  # an unlinked placeholder
    assert "Score model trained in pixel space" in section(text, "Training")
    assert "Drawn in pixel space." in section(text, "Samples")
    assert table_dict(section(text, "Sample quality"), "")["space"] == "pixel"


def test_report_unlabelled_image_data_has_no_fid(tmp_path):
    r = tmp_path / "reports"
    _write_image_run(r, space="latent", labelled=False)
    text = build_report(report_inputs(r))
    assert "_Skipped" not in text
    note = "No evaluator: the data has no class labels, so no FID."
    assert note in section(text, "Evaluator") and "|" not in section(text, "Evaluator")
    headline = section(text, "Headline")
    assert note in headline and "FID" not in headline.replace(note, "") and "evaluator accuracy" not in headline
    assert "No degradation ladder" in section(text, "What this FID can see")
    assert table_dict(headline) == {
        "bits/dim, upper bound (importance-weighted, K = 4)": "≤ 1.75"}
    assert "## Image quality" not in text and "class_histogram" not in text
    sm = section(text, "Sampler comparison")
    assert "The plot shows SW₂ against NFE (the mean over the seeds, with ±sd error bars)." in sm
    assert "FID" not in sm and "fid" not in sm and table_records(sm, "sampler")[0]["SW₂"] == "0.21 ± 0.01"
    assert _png_size(r / "vae_loss.png") == LOSS_PNG_SIZE  # latent space: the VAE's curve is drawn


def test_report_says_when_the_metric_misses_the_bar(tmp_path):
    r = tmp_path / "reports"
    _write_image_run(r, space="latent")
    _write_calibration(r / "calibration.json", blur_half=2.5)
    cal = section(build_report(report_inputs(r)), "What this FID can see")
    assert ("**The bar is NOT met**: blur σ = 0.5 px: FID 5 = 2.50× the floor, needs 3×. Read every FID below with "
            "that in mind.") in cal


def test_report_skips_absent_inputs_with_notes(tmp_path):
    text = build_report(report_inputs(tmp_path / "absent", out=tmp_path / "r" / "report.md",
                                      loss_png=tmp_path / "r" / "loss.png", vae_loss_png=tmp_path / "r" / "vae_loss.png"))
    notes = [ln for ln in text.splitlines() if ln.startswith("_Skipped")]
    # data, evaluator, autoencoder (summary, reconstructions, curve), metrics, sampler, mixture,
    # sampler comparison, training (summary, curve), samples
    # + the text-conditional results and the student's evaluation
    assert len(notes) == 17 and all("not found" in n for n in notes)
    for stage in ("prepare", "train_evaluator", "train_vae", "evaluate", "sample", "compare_samplers", "train_score"):
        assert f"`{stage}` stage" in text
    for png in ("loss.png", "vae_loss.png"):  # declared outputs: placeholders that say why there is no curve
        assert (tmp_path / "r" / png).read_bytes()[:4] == b"\x89PNG"
    assert "|" not in text  # no tables without inputs
    assert "## Headline" not in text


def test_report_non_gmm_metrics_has_no_mixture_section(tmp_path):
    io.write_json(tmp_path / "metrics.json", {"n_samples": 10, "n_eval": 10, "swd": 0.5, "swd_floor": 0.1,
                                              "swd_ratio": None, "mmd": 0.01, "mmd_floor": 0.0, "nll": 3.5,
                                              "nll_nfe": 50.0})
    io.write_json(tmp_path / "eval_detail.json", {
        "data": {"name": "moons", "shape": [2], "n_train": 20, "n_test": 10},
        "samples": {"file": "samples.safetensors", "n": 10, "sampler": "ddim", "nfe": 10, "wall_time_s": 0.1},
        "distances": {"n": 10, "swd": 0.5, "swd_floor": 0.1, "swd_ratio": None, "mmd": 0.01, "mmd_floor": 0.0,
                      "mmd_bandwidths": [1.0]},
        "likelihood": {"divergence": "exact", "probe": "rademacher", "n_probes": 1, "rtol": 1e-5, "atol": 1e-5,
                       "batch_size": 10, "n": 10, "batches": 1, "dequantized": False, "bin_width": None, "nll": 3.5,
                       "nll_nfe": 50.0}})
    text = build_report(report_inputs(tmp_path / "absent", out=tmp_path / "report.md",
                                      metrics=tmp_path / "metrics.json", detail=tmp_path / "eval_detail.json"))
    assert "Gaussian mixture" not in text and "## Headline" not in text and "## Image quality" not in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| sliced Wasserstein SW₂"))
    assert [c.strip() for c in row.strip("|").split("|")] == ["sliced Wasserstein SW₂", "0.5", "0.1", "–"]


def test_plot_loss_rejects_tsv_without_loss_column(tmp_path):
    (tmp_path / "l.tsv").write_text("step\tlr\n0\t0.1\n")
    with pytest.raises(ValueError, match="loss"):
        plot_loss(tmp_path / "l.tsv", tmp_path / "l.png")
    (tmp_path / "n.tsv").write_text("step\tloss\n0\t-1.5\n10\t-2.0\n")  # negative losses (ssm): linear axis
    assert plot_loss(tmp_path / "n.tsv", tmp_path / "n.png") == tmp_path / "n.png"
    assert _png_size(tmp_path / "n.png") == LOSS_PNG_SIZE
