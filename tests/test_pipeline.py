"""The DVC pipeline end to end, in a temporary copy of the repository, on a tiny profile."""

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sbm.config.params import parse_params, read_yaml
from sbm.io import load_tensors

ROOT = Path(__file__).resolve().parents[1]

# The default digits in latent space (the default is pixel: the test switches to it at the end) at a few
# steps per stage.
TINY = {
    "score": {"space": "latent"},
    "model": {"unet": {"channels": [16, 32], "layers_per_block": 1, "attention": [False, True]}},
    "train": {"steps": 30, "batch_size": 64, "checkpoint_every": 15, "log_every": 10},
    "vae": {"channels": [16, 32], "steps": 20, "batch_size": 64},
    "evaluator": {"channels": [8, 16], "hidden": 16, "steps": 30},
    "classifier": {"channels": [8, 16], "hidden": 16, "steps": 20, "batch_size": 64},
    "guidance": {"classifier_scales": [0.0, 2.0], "n_per_class": 4},
    "text": {"steps": 20, "batch_size": 64, "guidance_weights": [0.0, 2.0], "n_per_class": 4, "n_per_prompt": 2},
    "distill": {"steps": 2, "teacher_steps": 8, "steps_per_round": 10, "batch_size": 64, "eval_steps": [2]},
    "sampler": {"n_samples": 200, "batch_size": 200, "steps": 5},
    "likelihood": {"n_points": 8, "batch_size": 8, "rtol": 1e-2, "atol": 1e-2},
    "eval": {"n_points": 200, "n_projections": 16, "compare_samplers": ["ddim"], "compare_nfe": [4],
             "compare_points": 100},
}
# The 2-D Gaussian mixture in pixel space: the analytic metrics.
TINY_GMM = {
    "score": {"space": "pixel"},
    "data": {"name": "gmm", "n_train": 1000, "n_test": 500},
    "process": {"name": "ve", "n_levels": 8},
    "train": {"steps": 60, "batch_size": 128, "checkpoint_every": 30, "log_every": 10},
    "sampler": {"name": "annealed_langevin", "n_samples": 300, "batch_size": 300, "steps": 8,
                "steps_per_level": 5, "step_size": 2e-5},
    "likelihood": {"divergence": "exact", "n_points": 20, "batch_size": 20, "rtol": 1e-3, "atol": 1e-3},
    "eval": {"n_points": 300, "n_score_points": 200, "n_projections": 32, "compare_samplers": [],
             "compare_nfe": [5], "seeds": 1},  # one sampling seed: single values, no _sd keys
    "evaluator": {"hidden": 16, "steps": 30},
    "classifier": {"hidden": 16, "steps": 20, "batch_size": 64},
    "guidance": {"classifier_scales": [0.0, 2.0], "n_per_class": 4},
    "text": {"encoder": "scratch", "steps": 20, "batch_size": 64, "guidance_weights": [2.0], "n_per_class": 4,
             "n_per_prompt": 2, "prompts": ["the digit 1", "a handwritten two"]},
    "distill": {"method": "consistency", "teacher": "text", "steps": 2, "teacher_steps": 8, "steps_per_round": 10,
                "batch_size": 64, "eval_steps": [1, 2]},
}
# Data without labels (a 2-D Swiss roll): no evaluator, classifier or text model; their stages
# and the ones that read them say so, and the pipeline still runs to its report.
TINY_SWISS = {**TINY_GMM, "data": {"name": "swiss_roll", "n_train": 1000, "n_test": 500},
              "distill": {"steps": 2, "teacher_steps": 8, "steps_per_round": 10, "batch_size": 64, "eval_steps": [2]}}
STAGES = {"prepare", "train_evaluator", "train_vae", "train_score", "train_classifier", "train_text", "sample",
          "compare_samplers", "evaluate", "evaluate_guidance", "evaluate_text", "distill", "evaluate_distill", "report"}


def _merge(base, over):
    for k, v in over.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return base


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _ran(output):
    return set(re.findall(r"Running stage '(\w+)'", output))


def _copy_repo(tmp_path_factory, profile):
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("reports/", "dvc.lock")):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    params = _merge(read_yaml(dst / "params.yaml"), profile)
    parse_params(params)  # the tiny profile itself must be valid
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        _run(cmd, dst, env)
    return dst, env


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG that decodes completely."""
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG", path
        im.load()
        return im.size


PLACEHOLDER_SIZE = (400, 120)  # sbm.pipeline.plots.placeholder: what a declared picture is when it does not apply


def _md_table(text: str, first: str) -> list[list[str]]:
    """Body rows (cells) of the first markdown table in `text` whose first header cell is `first`."""
    def cells(ln: str) -> list[str]:
        return [c.strip() for c in ln.strip().strip("|").split("|")]

    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("|") and cells(ln)[0] == first)
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(cells(ln))
    return rows


def section_of(text: str, title: str) -> str:
    """The markdown section of `text` whose heading starts with `title`."""
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _in_unit_interval(d: dict, keys) -> None:
    for k in keys:
        assert isinstance(d[k], float) and 0.0 <= d[k] <= 1.0, (k, d[k])


def _check_distances(metrics: dict, n_eval: int) -> None:
    """SW₂ and MMD² of samples vs test: distances (≥ 0) next to a positive SW₂ floor, ratio = quotient."""
    assert metrics["n_eval"] == n_eval
    assert metrics["swd"] >= 0 and metrics["swd_floor"] > 0
    assert metrics["swd_ratio"] == pytest.approx(metrics["swd"] / metrics["swd_floor"], rel=1e-12)
    assert all(math.isfinite(metrics[k]) for k in ("mmd", "mmd_floor"))
    _in_unit_interval(metrics, ("copies", "copies_floor"))  # the copy check (eq. 3 of sbm.eval.distances)
    assert metrics["copies_floor"] == 0.0 and metrics["nn_ratio"] > 0  # no test point is a training point


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return _copy_repo(tmp_path_factory, TINY)


def _set(repo_dir, section, key, value):
    path = repo_dir / "params.yaml"
    params = read_yaml(path)
    if section:
        params[section][key] = value
    else:
        params[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_repro_runs_every_stage_then_nothing_then_only_what_changed(repo):
    d, env = repo
    dvc = [sys.executable, "-m", "dvc"]
    first = _run([*dvc, "repro"], d, env)
    assert _ran(first) == STAGES
    for out in ("data/models/score.safetensors", "data/latent/vae.safetensors", "data/latent/latents.safetensors",
                "data/models/evaluator/evaluator.safetensors", "reports/metrics.json", "reports/report.md"):
        assert (d / out).is_file(), out
    # the pictures decode, at the size of what they show (not a placeholder): 64 of the 200 samples on an
    # 8 × 8 grid, 16 test images over their reconstructions, the class histogram, the loss curve
    assert _png_size(d / "reports/samples.png") == (640, 640)
    assert _png_size(d / "reports/reconstructions.png") == (1280, 180)
    assert _png_size(d / "reports/class_histogram.png") == (500, 300)
    assert _png_size(d / "reports/loss.png") == (600, 350)
    metrics = json.loads((d / "reports/metrics.json").read_text())
    for key in ("fid", "fid_floor", "evaluator_acc", "class_tv", "bpd_bound", "bpd_bound_iwae"):
        assert isinstance(metrics[key], float), key
    assert "bpd" not in metrics  # a latent model reports its bound, not an exact bits/dim
    assert metrics["n_samples"] == 200
    _check_distances(metrics, 200)
    assert metrics["fid"] >= 0 and metrics["fid_floor"] > 0  # FID is a squared distance; train ≠ test
    assert metrics["fid_ratio"] == pytest.approx(metrics["fid"] / metrics["fid_floor"], rel=1e-12)
    _in_unit_interval(metrics, ("evaluator_acc", "class_tv"))
    evaluator = json.loads((d / "reports/train_evaluator.json").read_text())
    assert evaluator["trained"] is True and evaluator["n_classes"] == 10
    _in_unit_interval(evaluator, ("test_accuracy", "train_accuracy"))
    assert metrics["evaluator_acc"] == pytest.approx(evaluator["test_accuracy"], abs=0.01)  # same net, same split
    # the latent bound: nll = rec + kl, bits/dim of it on the dequantised 17-level grid (Δ = 1/8, D = 64),
    # positive, and the importance-weighted bound never looser than the plain one (Jensen, per draw; the
    # same number for K = 1 draw), up to the float32 rounding of log p(x|z)
    meta = json.loads((d / "data/prepared/meta.json").read_text())
    assert (meta["n_levels"], meta["data_range"]) == (17, [-1.0, 1.0])
    assert metrics["nll_bound"] == pytest.approx(metrics["bound_rec"] + metrics["bound_kl"], rel=1e-9)
    assert metrics["bpd_bound"] == pytest.approx((metrics["nll_bound"] / 64 - math.log(0.125)) / math.log(2), rel=1e-9)
    assert 0 < metrics["bpd_bound_iwae"] <= metrics["bpd_bound"] * (1 + 1e-6)
    if read_yaml(d / "params.yaml")["vae"]["bound_samples"] == 1:
        assert metrics["bpd_bound_iwae"] == pytest.approx(metrics["bpd_bound"], rel=1e-6)
    assert metrics["nll_nfe"] >= 2
    vae = json.loads((d / "reports/train_vae.json").read_text())
    assert vae["space"] == "latent" and vae["latent_shape"] == [4, 4, 4] and vae["scale"] > 0
    assert vae["kl"] >= 0 and vae["recon_psnr"] == pytest.approx(10 * math.log10(4 / vae["recon_mse"]))
    # the latent model's ceiling (labelled data): the training reconstructions' FID/KID against test, and the floor
    # (FID is a squared distance; KID's unbiased estimate may dip below 0)
    for w in ("mean", "sample", "floor"):
        assert vae[f"ceiling_fid_{w}"] >= 0 and math.isfinite(vae[f"ceiling_kid_{w}"]), w
    assert vae["ceiling_fid_floor"] > 0
    classifier = json.loads((d / "reports/train_classifier.json").read_text())
    _in_unit_interval(classifier, ("acc_q1", "acc_q2", "acc_q3", "acc_q4"))
    guidance = json.loads((d / "reports/guidance.json").read_text())
    assert {"cg_acc_s0", "cg_acc_s2", "cg_fid_s2", "cg_fid_floor"} <= set(guidance)
    # accuracies: per seed the fraction of the 10 × 4 conditional samples the evaluator puts in their class,
    # the flat key their mean over the 3 seeds (a multiple of 1/120)
    for key in ("cg_acc_s0", "cg_acc_s2"):
        assert 0 <= guidance[key] <= 1 and guidance[key] * 120 == pytest.approx(round(guidance[key] * 120)), key
    assert all(guidance[k] >= 0 for k in ("cg_fid_s0", "cg_fid_s2", "cg_fid_floor"))
    # eval.seeds = 3 (the default): each scale drawn with seeds 0, 1, 2; the flat keys are the means of the
    # per-seed values, "_sd" their sd (n − 1); the draws differ, so do their FIDs
    gd = json.loads((d / "reports/guidance_detail.json").read_text())
    assert gd["seeds"] == [0, 1, 2]
    # drawn with eval.conditional_sampler at eval.conditional_nfe (defaults), not params sampler
    assert gd["sampler"] == "dpmpp_2m" and {row["nfe"] for row in gd["rows"]} == {10}
    for row in gd["rows"]:
        s = f"{row['scale']:g}"
        for metric, key in (("fid", "fid"), ("accuracy", "acc")):
            values = row[metric]["values"]
            assert guidance[f"cg_{key}_s{s}"] == pytest.approx(statistics.fmean(values), rel=1e-12)
            assert guidance[f"cg_{key}_s{s}_sd"] == pytest.approx(statistics.stdev(values), rel=1e-9)
        assert len(set(row["fid"]["values"])) == 3 and len(row["kid"]["values"]) == 3, row
        assert all(0 <= v <= 1 and v * 40 == pytest.approx(round(v * 40)) for v in row["accuracy"]["values"]), row
        assert row["fid_floor"] == guidance["cg_fid_floor"] and {"kid_floor", "precision_floor"} <= set(row)
    samplers = json.loads((d / "reports/samplers.json").read_text())
    assert samplers["seeds"] == [0, 1, 2] and all(len(set(r["fid"]["values"])) == 3 for r in samplers["rows"])
    report = (d / "reports/report.md").read_text()
    assert "## Classifier guidance" in report
    assert [row[1] for row in _md_table(report, "noise quarter")] == [
        f"{classifier[f'acc_q{q}']:.4g}" for q in (1, 2, 3, 4)]
    head = dict(row[:2] for row in _md_table(report.split("## Headline")[1], ""))
    assert head["FID, samples vs test (evaluator features)"] == f"{metrics['fid']:.4g}"
    assert head["FID floor, train vs test (what a perfect model scores)"] == f"{metrics['fid_floor']:.4g}"
    assert _png_size(d / "reports/guidance.png") == (900, 350)
    text = json.loads((d / "reports/text.json").read_text())
    assert {"cfg_acc_w0", "cfg_acc_w2", "cfg_fid_w2", "cfg_unseen_acc", "cfg_fid_floor"} <= set(text)
    for key in ("cfg_acc_w0", "cfg_acc_w2"):
        assert 0 <= text[key] <= 1 and text[key] * 120 == pytest.approx(round(text[key] * 120)), key  # mean of 3
    _in_unit_interval(text, ("cfg_unseen_acc",))
    assert all(text[k] >= 0 for k in ("cfg_fid_w0", "cfg_fid_w2", "cfg_fid_floor"))
    report = (d / "reports/report.md").read_text()
    assert "## Text conditioning and classifier-free guidance" in report and "the number {name} written by hand" in report
    assert {"cfg_fid_w2_sd", "cfg_acc_w2_sd", "cfg_unseen_acc_sd"} <= set(text)
    assert "mean ± sd over 3 sampling seeds (0, 1, 2" in section_of(report, "Sampler comparison")
    prompts = load_tensors(d / "data/samples/prompts.safetensors")
    assert prompts[0]["x"].shape == (2 * 4, 1, 8, 8) and prompts[1]["prompts"][0] == "a handwritten seven"
    distilled = json.loads((d / "reports/distill_eval.json").read_text())
    assert {"student_fid_2", "teacher_ddim_fid_2", "teacher_heun_fid_2", "teacher_fid_full", "speedup_2"} <= set(distilled)
    assert all(distilled[k] >= 0 for k in ("student_fid_2", "teacher_ddim_fid_2", "teacher_heun_fid_2",
                                           "teacher_fid_full", "fid_floor"))
    assert distilled["speedup_2"] > 0 and {"student_fid_2_sd", "teacher_fid_full_sd"} <= set(distilled)
    assert "## Distillation: a few-step student" in report
    # 4 prompts × 2 samples each as a grid; the CFG curves; FID against NFE
    assert _png_size(d / "reports/prompt_samples.png") == (160, 360)
    assert _png_size(d / "reports/conditional.png") == (900, 350)
    assert _png_size(d / "reports/distill.png") == (600, 400)
    samples = load_tensors(d / "data/samples/samples.safetensors")[0]["x"]
    assert samples.shape == (200, 1, 8, 8) and samples.min() >= -1 and samples.max() <= 1  # decoded images

    again = _run([*dvc, "repro"], d, env)
    assert _ran(again) == set(), again

    _set(d, None, "loss", "ssm")
    after_loss = _ran(_run([*dvc, "repro"], d, env))
    assert {"prepare", "train_vae", "train_evaluator"}.isdisjoint(after_loss)
    assert {"train_score", "train_text", "sample", "evaluate", "evaluate_text", "distill"} <= after_loss

    _set(d, "sampler", "steps", 4)
    after_sampler = _ran(_run([*dvc, "repro"], d, env))
    assert {"prepare", "train_score", "train_text", "distill"}.isdisjoint(after_sampler)
    assert {"sample", "evaluate", "evaluate_text"} <= after_sampler

    _set(d, "text", "weight", 3.0)  # only what uses the sampling weight
    after_weight = _ran(_run([*dvc, "repro"], d, env))
    assert {"sample", "evaluate_text"} <= after_weight
    assert {"train_text", "train_score", "evaluate_guidance", "compare_samplers"}.isdisjoint(after_weight)
    rounds = json.loads((d / "reports/distill.json").read_text())["rounds"]  # distill.teacher = score: not retrained
    assert [r["trained"] for r in rounds] == [False, False] and all(r["seconds"] > 0 for r in rounds)

    _set(d, "score", "space", "pixel")
    pixel = _ran(_run([*dvc, "repro"], d, env))
    assert {"train_vae", "train_score", "sample", "evaluate"} <= pixel and "train_evaluator" not in pixel
    metrics = json.loads((d / "reports/metrics.json").read_text())
    assert isinstance(metrics["bpd"], float) and "bpd_bound" not in metrics
    # bits/dim of the dequantised digits estimates −log₂ P(x)/D of a probability P ≤ 1: positive
    assert math.isfinite(metrics["bpd"]) and metrics["bpd"] > 0 and metrics["nll_nfe"] >= 2
    _check_distances(metrics, 200)
    assert not (d / "data/latent/vae.safetensors").exists()
    assert _png_size(d / "reports/vae_loss.png") == PLACEHOLDER_SIZE  # pixel space: no VAE curve


@pytest.mark.slow
def test_the_mixture_profile_reports_its_analytic_metrics(tmp_path_factory):
    d, env = _copy_repo(tmp_path_factory, TINY_GMM)
    assert _ran(_run([sys.executable, "-m", "dvc", "repro"], d, env)) == STAGES
    report = (d / "reports/report.md").read_text()
    assert "Score error per noise level" in report
    metrics = json.loads((d / "reports/metrics.json").read_text())
    assert {"nll_gap", "weight_err_max", "fid", "swd"} <= set(metrics)  # the evaluator classifies components
    assert metrics["n_samples"] == 300
    _check_distances(metrics, 300)
    # recovered weights: max |r − w| ≤ TV (the differences sum to 0), TV ∈ [0, 1]
    _in_unit_interval(metrics, ("weight_tv", "weight_err_max", "evaluator_acc", "class_tv"))
    assert metrics["weight_err_max"] <= metrics["weight_tv"] + 1e-12
    # the mixture's density is at most max_k 1/(2π√det Σ_k) = 1/(2π·√0.75) < 1: its NLL is positive
    assert metrics["nll_exact"] > -math.log(1 / (2 * math.pi * math.sqrt(0.75))) > 0
    assert metrics["nll_gap"] == pytest.approx(metrics["nll"] - metrics["nll_exact"], rel=1e-9, abs=1e-12)
    assert metrics["logp_gap"] == pytest.approx(metrics["logp_test"] - metrics["logp_samples"], rel=1e-9, abs=1e-12)
    rel = [v for k, v in sorted(metrics.items()) if k.startswith("score_rel_err_l")]
    assert rel and all(v >= 0 for v in rel) and metrics["score_rel_err_max"] == max(rel)
    assert metrics["score_rel_err_mean"] == pytest.approx(sum(rel) / len(rel), rel=1e-12)
    assert metrics["fid"] >= 0 and metrics["fid_floor"] > 0
    score_rows = _md_table(report, "level")
    assert [row[-1] for row in score_rows] == [f"{v:.4g}" for v in rel]  # the report's "relative" column
    assert "cfg_acc_w2" in json.loads((d / "reports/text.json").read_text())  # an MLP reads the captions
    # a consistency student of the text model with its guidance folded in, scored on the digit its prompt names
    assert json.loads((d / "reports/distill.json").read_text())["teacher"] == "text"
    assert {"student_fid_2", "student_acc_2", "teacher_acc_full", "teacher_ddim_acc_1"} <= set(
        json.loads((d / "reports/distill_eval.json").read_text()))
    assert "Samples that show the digit their prompt names" in report
    # eval.seeds = 1: the flat files keep their keys without any _sd, the tables say one seed
    for f in ("guidance.json", "text.json", "distill_eval.json"):
        flat = json.loads((d / "reports" / f).read_text())
        assert flat and not any(k.endswith("_sd") for k in flat), f
    detail = json.loads((d / "reports/text_detail.json").read_text())
    assert detail["seeds"] == [0] and all(set(r["fid"]) == {"mean", "values"} for r in detail["rows"])
    for title in ("Classifier guidance", "Text conditioning", "Distillation"):
        assert "One sampling seed (0; eval.seeds = 1)" in section_of(report, title), title


@pytest.mark.slow
def test_data_without_labels_skips_the_label_stages_with_their_reason(tmp_path_factory):
    d, env = _copy_repo(tmp_path_factory, TINY_SWISS)
    assert _ran(_run([sys.executable, "-m", "dvc", "repro"], d, env)) == STAGES
    why = "has no class labels"
    for stage in ("train_classifier", "train_text"):
        assert why in json.loads((d / f"reports/{stage}.json").read_text())["skipped"]
    for detail in ("guidance_detail", "text_detail", "distill_detail"):
        assert why in json.loads((d / f"reports/{detail}.json").read_text())["skipped"], detail
    assert json.loads((d / "reports/distill.json").read_text())["rounds"][-1]["trained"]  # the student exists
    report = (d / "reports/report.md").read_text()
    for title in ("Classifier guidance", "Text conditioning", "Distillation"):
        assert "_Skipped: " in report.split(f"## {title}")[1].split("\n## ")[0], title
    proc = subprocess.run([sys.executable, "-m", "sbm", "sample", "--checkpoint", "data/models/text.safetensors",
                           "--prompt", "a one", "--out", "p.png"], cwd=d, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "stage train_text was skipped: data 'swiss_roll' has no class labels" in proc.stderr


@pytest.mark.slow
def test_a_bad_param_stops_the_stage_with_a_one_line_message(repo):
    d, env = repo
    _set(d, "train", "steps", 0)
    proc = subprocess.run([sys.executable, "stages/train_score.py"], cwd=d, env=env, capture_output=True, text=True)
    _set(d, "train", "steps", 30)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "train_score: error: params.yaml: train.steps = 0: must be >= 1"
