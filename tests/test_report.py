"""The evaluate and report stages end to end on a tiny pipeline laid out in tmp dirs."""

import importlib.util
import json
import math
from pathlib import Path

import datasets
import matplotlib
import pytest
import torch

from sbm import io
from sbm.core.gmm import GaussianMixture
from sbm.core.model import ScoreModel
from sbm.core.processes import NCSNLadder
from sbm.eval.evaluator import NO_EVALUATOR_FILE
from sbm.latent.vae import write_space
from sbm.models.score import save_model
from sbm.nets.score import MLPNet
from sbm.pipeline.report import ReportInputs, build_report, plot_loss
from sbm.pipeline.stage import run_stage

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]
GMM = GaussianMixture([0.6, 0.3, 0.1], [[-4.0, -4.0], [4.0, 4.0], [4.0, -4.0]],
                      [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.6], [0.6, 0.8]], [[0.5, 0.0], [0.0, 1.5]]])
N_LEVELS = 30  # > 20: evaluate uses process.grid(20)


def load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"_stage_{name}", ROOT / "stages" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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


def eval_args(p: Path, **over) -> list[str]:
    args = {"params": p / "params.yaml", "data": p / "prepared", "model": p / "score.safetensors",
            "samples": p / "samples.safetensors", "metrics": p / "reports" / "metrics.json",
            "detail": p / "reports" / "eval_detail.json", "space": p / "space", "evaluator": p / "evaluator",
            "histogram": p / "reports" / "class_histogram.png", **over}
    return [a for k, v in args.items() for a in (f"--{k}", str(v))] + ["--no-progress"]


def test_evaluate_stage_writes_flat_finite_metrics(pipeline):
    evaluate = load_stage("evaluate")
    flat = evaluate.main(eval_args(pipeline))
    m = json.loads((pipeline / "reports" / "metrics.json").read_text())
    assert m == flat
    expected = {"n_samples", "n_eval", "swd", "swd_floor", "swd_ratio", "mmd", "mmd_floor",
                "score_rel_err_mean", "score_rel_err_max", "score_mse_mean", "weight_err_max", "weight_tv",
                "logp_samples", "logp_test", "logp_gap", "nll", "nll_nfe", "nll_exact", "nll_gap"} | {
                f"score_rel_err_l{i:02d}" for i in range(20)}
    assert set(m) == expected
    for k, v in m.items():  # flat scalars only, all finite
        assert isinstance(v, (int, float)) and math.isfinite(v), (k, v)
    assert m["n_samples"] == 400 and m["n_eval"] == 250
    # samples shifted by 2 in each coordinate: SW₂ ≈ ‖(2, 2)‖/√2 = 2, farther from test than real
    # data is (the floor at n = 250 is large, ≈ 0.8: the mode counts vary by ±8 points)
    assert m["swd"] > 2 * m["swd_floor"] and m["mmd"] > 10 * abs(m["mmd_floor"])
    assert m["logp_samples"] < m["logp_test"] - 1
    assert m["score_rel_err_mean"] > 0.1  # an untrained network does not know the score

    d = json.loads((pipeline / "reports" / "eval_detail.json").read_text())
    assert len(d["score_levels"]) == 20
    sigmas = [r["sigma"] for r in d["score_levels"]]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[0] == pytest.approx(12.0)
    assert d["weights"]["true"] == pytest.approx([0.6, 0.3, 0.1])
    assert sum(d["weights"]["recovered"]) == pytest.approx(1.0)
    assert d["samples"]["sampler"] == "annealed_langevin" and d["samples"]["nfe"] == 10
    # same params and seed: the same metrics
    assert evaluate.main(eval_args(pipeline)) == flat


def test_evaluate_without_mixture_has_no_analytic_metrics(pipeline, tmp_path):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 2, generator=g)
    no_label = torch.full((500,), -1, dtype=torch.int64)
    write_prepared(tmp_path / "moons", x[:300], no_label[:300], x[300:], no_label[300:], None, "moons")
    flat = load_stage("evaluate").main(eval_args(pipeline, data=tmp_path / "moons"))
    assert "swd" in flat and "nll" in flat
    assert not any(k.startswith(("score_", "weight_", "logp_", "nll_exact")) for k in flat)


def _run_cli(main, argv):
    with pytest.raises(SystemExit) as exc:
        run_stage("evaluate", lambda: main(argv))
    return exc.value.code


def test_evaluate_refuses_non_finite_samples(pipeline, capsys):
    x, _ = GMM.sample(50, generator=torch.Generator().manual_seed(2))
    x[[3, 7, 9], 0] = float("nan")
    x[11, 1] = float("inf")
    io.save_tensors(pipeline / "bad.safetensors", {"x": x}, {"kind": "samples", "sampler": "langevin"})
    code = _run_cli(load_stage("evaluate").main, eval_args(pipeline, samples=pipeline / "bad.safetensors"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "bad.safetensors" in err and "4 of 50 samples are not finite" in err
    assert not (pipeline / "reports" / "metrics.json").exists()


@pytest.mark.parametrize("what", ["model", "data", "samples"])
def test_evaluate_missing_input_is_a_one_line_error(pipeline, capsys, what):
    code = _run_cli(load_stage("evaluate").main, eval_args(pipeline, **{what: pipeline / "nowhere"}))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nowhere" in err


def test_evaluate_bad_params_is_a_one_line_error(pipeline, capsys):
    (pipeline / "params.yaml").write_text("eval:\n  n_points: 1\n")
    code = _run_cli(load_stage("evaluate").main, eval_args(pipeline))
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
    io.write_json(r / "train_score.json", {"loss": "dsm", "final_loss": 0.021, "steps": 100, "train_seconds": 1.5,
                                           "resumed_from": None, "n_params": 1234})
    io.write_json(r / "prepare.json", {"name": "gmm", "shape": [2], "n_train": 600, "n_test": 300, "sigma_max": 12.0})
    io.write_json(r / "sample.json", {"sampler": "annealed_langevin", "n": 400, "nfe": 10, "wall_time_s": 0.1})
    io.write_json(r / "samplers.json", {"n": 400, "rows": [
        {"sampler": "ddim", "steps": 10, "nfe": 10, "seconds_per_sample": 1e-4, "swd": 0.31, "swd_floor": 0.12,
         "mmd": 0.01, "mmd_floor": 0.0, "non_finite": 0},
        {"sampler": "ode_heun", "steps": 10, "nfe": 19, "seconds_per_sample": 2e-4, "swd": 0.25, "swd_floor": 0.12,
         "mmd": 0.005, "mmd_floor": 0.0, "non_finite": 0}]})
    io.write_json(r / "train_evaluator.json", {"trained": False})
    io.write_json(r / "train_vae.json", {"space": "pixel"})
    _png(r / "samples.png")
    _png(r / "reconstructions.png")
    _write_guidance(r)


# every ReportInputs field -> its file name under reports/
REPORT_FILES = {"metrics": "metrics.json", "detail": "eval_detail.json", "train": "train_score.json",
                "prepare": "prepare.json", "sample": "sample.json", "loss_tsv": "live/train_score/plots/metrics/loss.tsv",
                "samples_png": "samples.png", "out": "report.md", "loss_png": "loss.png", "samplers": "samplers.json",
                "samplers_png": "samplers.png", "train_evaluator": "train_evaluator.json", "train_vae": "train_vae.json",
                "reconstructions_png": "reconstructions.png", "class_histogram_png": "class_histogram.png",
                "vae_loss_tsv": "live/train_vae/plots/metrics/loss.tsv", "vae_loss_png": "vae_loss.png",
                "train_classifier": "train_classifier.json", "guidance_detail": "guidance_detail.json",
                "guidance_png": "guidance.png", "train_text": "train_text.json", "text_detail": "text_detail.json",
                "prompt_samples_png": "prompt_samples.png", "conditional_png": "conditional.png",
                "distill": "distill.json", "distill_detail": "distill_detail.json", "distill_png": "distill.png"}


def _write_guidance(r: Path) -> None:
    """Fake outputs of train_classifier and evaluate_guidance (two scales, 10 classes)."""
    io.write_json(r / "train_classifier.json", {"acc_q1": 0.97, "acc_q2": 0.81, "acc_q3": 0.42, "acc_q4": 0.13})
    rows = [{"method": "classifier", "scale": s, "accuracy": a, "per_class": [a] * 9 + [0.5], "fid": f,
             "fid_floor": 2.0, "nfe": 100, "seconds_per_sample": 0.01} for s, a, f in ((0.0, 0.11, 4.5), (4.0, 0.93, 6.25))]
    io.write_json(r / "guidance_detail.json", {"n_per_class": 100, "sampler": "euler_maruyama", "rows": rows})
    _png(r / "guidance.png")
    _write_text(r)


def _write_text(r: Path) -> None:
    """Fake outputs of train_text, evaluate_text and the prompt grid of sample."""
    io.write_json(r / "train_text.json", {"encoder": "minilm", "loss": "dsm", "final_loss": 19.5, "steps": 4000,
                                          "n_params": 1234567, "trainable_encoder": False, "encoder_dim": 384,
                                          "scratch_vocabulary": None})
    rows = [{"method": "cfg", "scale": w, "accuracy": a, "per_class": [a] * 10, "fid": f, "fid_floor": 2.0, "nfe": 100,
             "seconds_per_sample": 0.02} for w, a, f in ((0.0, 0.1, 4.75), (3.0, 0.97, 3.5))]
    unseen = [{"method": "cfg", "scale": 3.0, "template": "the number {name} written by hand", "accuracy": 0.66,
               "fid": 5.5, "per_class": [0.66] * 10}]
    io.write_json(r / "text_detail.json", {"n_per_class": 100, "sampler": "euler_maruyama", "encoder": "minilm",
                                           "weight": 3.0, "rows": rows, "unseen": unseen})
    _png(r / "prompt_samples.png")
    _write_distill(r)


def _write_distill(r: Path) -> None:
    """Fake outputs of distill and evaluate_distill (a 4-step progressive student)."""
    io.write_json(r / "distill.json", {"method": "progressive", "steps": 4, "teacher_steps": 16,
                                       "distill": {"steps_per_round": 600},
                                       "rounds": [{"student_steps": n, "teacher_steps": 2 * n, "final_loss": 0.5,
                                                   "seconds": 30.0, "trained": True} for n in (8, 4)]})
    rows = [{"sampler": "teacher euler_maruyama (full)", "steps": 99, "nfe": 100, "fid": 4.0, "fid_floor": 2.0,
             "seconds_per_1000": 10.0}]
    rows += [{"sampler": name, "steps": 4, "nfe": nfe, "fid": f, "fid_floor": 2.0, "seconds_per_1000": sec}
             for name, nfe, f, sec in (("teacher ddim", 5, 12.0, 0.5), ("teacher ode_heun", 9, 20.0, 0.9),
                                       ("student (progressive)", 5, 5.0, 0.5))]
    io.write_json(r / "distill_detail.json", {"n": 1000, "method": "progressive", "student_steps": 4,
                                              "teacher_sampler": "euler_maruyama", "teacher_steps": 100, "rows": rows})
    _png(r / "distill.png")


def report_argv(r: Path) -> list[str]:
    return [a for k, f in REPORT_FILES.items() for a in (f"--{k.replace('_', '-')}", str(r / f))]


def report_inputs(r: Path, **over) -> ReportInputs:
    """All inputs under r (absent unless the test writes them), never the working directory's reports/."""
    return ReportInputs(**{**{k: r / f for k, f in REPORT_FILES.items()}, **over})


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


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
    m = load_stage("evaluate").main(eval_args(pipeline))
    _write_training_outputs(r)
    _loss_tsv(r / "live" / "train_vae" / "plots" / "metrics" / "loss.tsv")  # stale: pixel space has no VAE
    text = load_stage("report").main(report_argv(r))
    assert (r / "report.md").read_text() == text
    assert "_Skipped" not in text
    # metrics table: sample-to-test distance next to the floor, with the numbers of metrics.json
    assert "| distance to test points" in text and "real train points (floor)" in text
    assert f"{m['swd']:.4g}" in text and f"{m['swd_floor']:.4g}" in text
    # mixture tables
    score_part = text[text.index("### Score error per noise level"):text.index("### Mixture weights")]
    rows = [ln for ln in score_part.splitlines() if ln.startswith("|")]
    assert len(rows) == 2 + 20 and "σ" in rows[0] and "MSE" in rows[0] and "relative" in rows[0]
    assert "### Mixture weights" in text and "true weight" in text and "recovered" in text
    assert "mean true log-density" in text and f"{m['logp_test']:.4g}" in text
    # training and images
    assert "final_loss" in text and "![training loss](loss.png)" in text and "![samples](samples.png)" in text
    assert (r / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # sampler comparison: one row per (sampler, steps) with its NFE and distance
    part = text[text.index("## Sampler comparison"):]
    assert "| ddim " in part and "| ode_heun " in part and "0.31" in part and "19" in part
    header = next(_cells(ln) for ln in part.splitlines() if ln.startswith("| sampler"))
    assert "fid" not in header and "swd" in header and "The plot shows" not in part  # no FID, no plot
    # 2-D data without an evaluator or autoencoder: no headline, no image quality, no VAE curve
    assert "## Headline" not in text and "## Image quality" not in text
    assert "No evaluator: the data has no class labels, so no FID." in section(text, "Evaluator")
    assert "Score model in pixel space: no autoencoder." in section(text, "Autoencoder")
    assert "![test data (pixel space)](reconstructions.png)" in text
    assert "vae_loss" not in text  # pixel space: the declared picture is a placeholder, not linked
    assert (r / "vae_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write_image_run(r: Path, *, space: str, labelled: bool = True) -> dict:
    """Fake outputs of every stage for digits (1 × 8 × 8) in `space`; -> metrics.json's dict."""
    io.write_json(r / "prepare.json", {"name": "digits", "shape": [1, 8, 8], "n_train": 1437, "n_test": 360,
                                       "n_classes": 10 if labelled else None, "value_range": [-1.0, 1.0]})
    m = {"n_samples": 1000, "n_eval": 360, "swd": 0.125, "swd_floor": 0.0625, "swd_ratio": 2.0, "mmd": 0.003,
         "mmd_floor": 0.0001}
    detail = {"distances": {}}
    if labelled:
        io.write_json(r / "train_evaluator.json", {"trained": True, "test_accuracy": 0.9722, "train_accuracy": 0.9986,
                                                   "n_classes": 10, "train_seconds": 3.25,
                                                   "evaluator": {"hidden": 64, "epochs": 20}})
        m.update(fid=12.34, fid_floor=2.468, fid_ratio=5.0, evaluator_acc=0.9722, class_tv=0.0815)
        counts = [120, 80, 100, 100, 100, 100, 100, 100, 100, 100]
        freq = [0.1] * 9 + [0.1]
        freq[0], freq[1] = 0.11, 0.09
        detail["evaluator"] = {"n_fid": 1000, "n_test": 360, "class_counts": counts, "train_class_freq": freq,
                               **{k: m[k] for k in ("fid", "fid_floor", "fid_ratio", "evaluator_acc", "class_tv")}}
        _png(r / "class_histogram.png")
    else:
        io.write_json(r / "train_evaluator.json", {"trained": False})
    if space == "latent":
        io.write_json(r / "train_vae.json", {
            "space": "latent", "recon_mse": 0.01234, "recon_psnr": 25.13, "kl": 8.765, "scale": 0.8125,
            "latent_shape": [2, 4, 4], "final_loss": 0.0456, "steps": 2000, "train_seconds": 40.5,
            "resumed_from": None, "n_params": 54321, "vae": {"latent_channels": 2}})
        _loss_tsv(r / "live" / "train_vae" / "plots" / "metrics" / "loss.tsv", scale=5.0)
        m.update(bpd_bound=1.875, bpd_bound_iwae=1.75, nll_bound=83.75, bound_rec=60.25, bound_kl=23.5, nll_nfe=128.0)
        detail["likelihood"] = {"n": 64, "bound": True, "bound_samples": 4,
                                **{k: m[k] for k in ("bpd_bound", "bpd_bound_iwae", "nll_bound", "nll_nfe")}}
    else:
        io.write_json(r / "train_vae.json", {"space": "pixel"})
        m.update(bpd=1.234, nll_nfe=96.0)
        detail["likelihood"] = {"n": 64, "bpd": 1.234}
    _png(r / "reconstructions.png")
    io.write_json(r / "metrics.json", m)
    io.write_json(r / "eval_detail.json", detail)
    io.write_json(r / "train_score.json", {"loss": "eps", "space": space, "final_loss": 0.031, "steps": 500,
                                           "train_seconds": 12.0, "resumed_from": None, "n_params": 99999})
    _loss_tsv(r / "live" / "train_score" / "plots" / "metrics" / "loss.tsv")
    io.write_json(r / "sample.json", {"sampler": "ddim", "space": space, "n": 1000, "nfe": 50, "wall_time_s": 2.5})
    _png(r / "samples.png")
    fid_rows = {"fid": 15.5, "fid_floor": 2.468} if labelled else {}
    io.write_json(r / "samplers.json", {"n": 1000, "metric": "fid" if labelled else "swd", "rows": [
        {"sampler": "ddim", "budget": 10, "steps": 10, "nfe": 10, "seconds_per_sample": 1e-3, **fid_rows,
         "swd": 0.21, "swd_floor": 0.0625, "mmd": 0.004, "mmd_floor": 0.0001, "non_finite": 0}]})
    _png(r / "samplers.png")
    _write_guidance(r)
    return m


def test_report_latent_image_run(tmp_path):
    r = tmp_path / "reports"
    _write_image_run(r, space="latent")
    text = load_stage("report").main(report_argv(r))
    assert "_Skipped" not in text
    # classifier guidance: accuracy per noise quarter, one row per scale, per-class accuracy at the largest
    g = section(text, "Classifier guidance")
    assert "0.97" in g and "0.13" in g and "| classifier |" in g and "0.93" in g and "6.25" in g
    assert "Per-class accuracy at s = 4:" in g and "![accuracy and FID against guidance strength](guidance.png)" in g
    # text: the model, both guidance methods in one table and one plot, the unseen phrasing, the prompt grid
    t = section(text, "Text conditioning and classifier-free guidance")
    assert "1,234,567 trainable parameters" in t and "`minilm` (frozen), 384-dimensional" in t
    assert "| classifier guidance (s) " in t and "| classifier-free guidance (w) |" in t and "0.97" in t
    assert "| the number {name} written by hand |" in t and "0.66" in t
    assert "](conditional.png)" in t and "![samples from prompts](prompt_samples.png)" in t
    assert (r / "conditional.png").read_bytes()[:4] == b"\x89PNG"
    # distillation: the 4-step student against the teacher at full steps and at 4 DDIM / Heun steps
    d = section(text, "Distillation: a few-step student")
    assert "student's FID is **5**" in d and "teacher's **4** at its full 99 steps" in d and "ratio 1.25" in d
    assert "4-step DDIM 12 / Heun 20" in d and "**20× faster**" in d and "![FID against NFE](distill.png)" in d
    # the headline: first section, FID next to its floor and ratio, accuracy, class TV, the bound on bits/dim
    assert text.index("## Headline") < text.index("## Data")
    head = table_dict(section(text, "Headline"))
    assert head["FID, samples vs test (evaluator features)"] == "12.34"
    assert head["FID floor, train vs test (what a perfect model scores)"] == "2.468"
    assert head["FID / floor (1 = perfect)"] == "5"
    assert head["evaluator accuracy on the real test split"] == "0.9722"
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
    assert (r / "vae_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # samplers with FID columns; the plot's metric named; the space in training and samples
    sm = section(text, "Sampler comparison")
    header = next(_cells(ln) for ln in sm.splitlines() if ln.startswith("| sampler"))
    row = dict(zip(header, table_rows(sm, "sampler")[0]))
    assert row["sampler"] == "ddim" and row["fid"] == "15.5" and row["fid_floor"] == "2.468" and row["swd"] == "0.21"
    assert "The plot shows FID against NFE." in sm and "FID on the evaluator's features" in sm
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
        row["accuracy"] = acc
    io.write_json(r / "distill_detail.json", {**dd, "teacher": "text", "guidance": 2.0})
    d = section(build_report(report_inputs(r)), "Distillation: a few-step student")
    assert "student of the text-conditional model under CFG w = 2 (folded into the student)" in d
    assert "evaluator accuracy): student **0.97**, teacher 0.99 at full steps" in d
    assert "accuracy |" in d and "drawn from prompts" in d


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
    assert (r / "vae_loss.png").stat().st_size > 0 and "vae_loss" not in text  # an unlinked placeholder
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
    assert table_dict(headline) == {
        "bits/dim, upper bound (importance-weighted, K = 4)": "≤ 1.75"}
    assert "## Image quality" not in text and "class_histogram" not in text
    sm = section(text, "Sampler comparison")
    assert "The plot shows SW₂ against NFE." in sm and "fid" not in sm
    assert (r / "vae_loss.png").is_file()


def test_report_skips_absent_inputs_with_notes(tmp_path):
    text = build_report(report_inputs(tmp_path / "absent", out=tmp_path / "r" / "report.md",
                                      loss_png=tmp_path / "r" / "loss.png", vae_loss_png=tmp_path / "r" / "vae_loss.png"))
    notes = [ln for ln in text.splitlines() if ln.startswith("_Skipped")]
    # data, evaluator, autoencoder (summary, reconstructions, curve), metrics, sampler, mixture,
    # sampler comparison, training (summary, curve), samples
    # + the text-conditional results and the student's evaluation
    assert len(notes) == 16 and all("not found" in n for n in notes)
    for stage in ("prepare", "train_evaluator", "train_vae", "evaluate", "sample", "compare_samplers", "train_score"):
        assert f"`{stage}` stage" in text
    for png in ("loss.png", "vae_loss.png"):  # declared outputs: placeholders that say why there is no curve
        assert (tmp_path / "r" / png).read_bytes()[:4] == b"\x89PNG"
    assert "|" not in text  # no tables without inputs
    assert "## Headline" not in text


def test_report_non_gmm_metrics_has_no_mixture_section(tmp_path):
    io.write_json(tmp_path / "metrics.json", {"n_eval": 10, "swd": 0.5, "swd_floor": 0.1, "swd_ratio": None,
                                              "mmd": 0.01, "mmd_floor": 0.0})
    io.write_json(tmp_path / "eval_detail.json", {"distances": {}})
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
    assert plot_loss(tmp_path / "n.tsv", tmp_path / "n.png").is_file()
