"""The evaluate and report stages end to end on a tiny pipeline laid out in tmp dirs."""

import importlib.util
import json
import math
from pathlib import Path

import datasets
import matplotlib
import pytest
import torch

from sbm import models, io
from sbm.gmm import GaussianMixture
from sbm.models import ScoreModel
from sbm.nets import MLPNet
from sbm.processes import NCSNLadder
from sbm.report import ReportInputs, build_report, plot_loss
from sbm.stage import run_stage

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
    """The layout of sbm.data.prepare: dataset/{train,test} (x flat float32, label int64) + meta.json."""
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
    models.save_model(tmp_path / "score.safetensors", ScoreModel(MLPNet(2, hidden=16, depth=1), NCSNLadder(0.01, 12.0, N_LEVELS)))
    samples, _ = GMM.sample(400, generator=g)
    io.save_tensors(tmp_path / "samples.safetensors", {"x": samples + 2.0},
                    {"kind": "samples", "sampler": "annealed_langevin", "nfe": 10, "wall_time_s": 0.1})
    (tmp_path / "params.yaml").write_text("seed: 3\neval:\n  n_points: 250\n  n_projections: 64\n  n_score_points: 200\n")
    return tmp_path


def eval_args(p: Path, **over) -> list[str]:
    args = {"params": p / "params.yaml", "data": p / "prepared", "model": p / "score.safetensors",
            "samples": p / "samples.safetensors", "metrics": p / "reports" / "metrics.json",
            "detail": p / "reports" / "eval_detail.json", **over}
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


def _write_training_outputs(r: Path) -> None:
    tsv = r / "live" / "train_score" / "plots" / "metrics" / "loss.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("timestamp\tstep\tloss\n" + "".join(f"{1700000000 + s}\t{s}\t{2.0 / (1 + s)}\n" for s in range(0, 100, 5)))
    io.write_json(r / "train_score.json", {"loss": "dsm", "final_loss": 0.021, "steps": 100, "train_seconds": 1.5,
                                           "resumed_from": None, "n_params": 1234})
    io.write_json(r / "prepare.json", {"name": "gmm", "shape": [2], "n_train": 600, "n_test": 300, "sigma_max": 12.0})
    io.write_json(r / "sample.json", {"sampler": "annealed_langevin", "n": 400, "nfe": 10, "wall_time_s": 0.1})
    io.write_json(r / "samplers.json", {"n": 400, "rows": [
        {"sampler": "ddim", "steps": 10, "nfe": 10, "seconds_per_sample": 1e-4, "swd": 0.31, "swd_floor": 0.12,
         "mmd": 0.01, "mmd_floor": 0.0, "non_finite": 0},
        {"sampler": "ode_heun", "steps": 10, "nfe": 19, "seconds_per_sample": 2e-4, "swd": 0.25, "swd_floor": 0.12,
         "mmd": 0.005, "mmd_floor": 0.0, "non_finite": 0}]})
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    fig.savefig(r / "samples.png")
    plt.close(fig)


def test_report_stage_end_to_end(pipeline):
    r = pipeline / "reports"
    m = load_stage("evaluate").main(eval_args(pipeline))
    _write_training_outputs(r)
    files = {"metrics": "metrics.json", "detail": "eval_detail.json", "train": "train_score.json",
             "prepare": "prepare.json", "sample": "sample.json", "loss-tsv": "live/train_score/plots/metrics/loss.tsv",
             "samples-png": "samples.png", "out": "report.md", "loss-png": "loss.png", "samplers": "samplers.json",
             "samplers-png": "samplers.png"}
    text = load_stage("report").main([a for k, f in files.items() for a in (f"--{k}", str(r / f))])
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


def test_report_skips_absent_inputs_with_notes(tmp_path):
    inp = ReportInputs(out=tmp_path / "r" / "report.md", loss_png=tmp_path / "r" / "loss.png",
                       **{k: tmp_path / "absent" / k for k in ("metrics", "detail", "train", "prepare", "sample",
                                                                 "loss_tsv", "samples_png", "samplers")})
    text = build_report(inp)
    notes = [ln for ln in text.splitlines() if ln.startswith("_Skipped")]
    assert len(notes) == 8 and all("not found" in n for n in notes)
    assert "evaluate" in text and "train_score" in text
    assert not (tmp_path / "r" / "loss.png").exists()
    assert "|" not in text  # no tables without inputs


def test_report_non_gmm_metrics_has_no_mixture_section(tmp_path):
    io.write_json(tmp_path / "metrics.json", {"n_eval": 10, "swd": 0.5, "swd_floor": 0.1, "swd_ratio": None,
                                              "mmd": 0.01, "mmd_floor": 0.0})
    io.write_json(tmp_path / "eval_detail.json", {"distances": {}})
    text = build_report(ReportInputs(out=tmp_path / "report.md", loss_png=tmp_path / "loss.png",
                                     metrics=tmp_path / "metrics.json", detail=tmp_path / "eval_detail.json",
                                     train=tmp_path / "x", prepare=tmp_path / "x", sample=tmp_path / "x",
                                     loss_tsv=tmp_path / "x", samples_png=tmp_path / "x"))
    assert "Gaussian mixture" not in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| sliced Wasserstein SW₂"))
    assert [c.strip() for c in row.strip("|").split("|")] == ["sliced Wasserstein SW₂", "0.5", "0.1", "–"]


def test_plot_loss_rejects_tsv_without_loss_column(tmp_path):
    (tmp_path / "l.tsv").write_text("step\tlr\n0\t0.1\n")
    with pytest.raises(ValueError, match="loss"):
        plot_loss(tmp_path / "l.tsv", tmp_path / "l.png")
    (tmp_path / "n.tsv").write_text("step\tloss\n0\t-1.5\n10\t-2.0\n")  # negative losses (ssm): linear axis
    assert plot_loss(tmp_path / "n.tsv", tmp_path / "n.png").is_file()
