"""The training monitor of stage train_classifier (issue #17, "DVCLive, fully"): at every checkpoint
the EMA classifier's test accuracy in each quarter of the noise range lands in the quality plot
files dvc.yaml declares (one row per checkpoint), the same noisy inputs every time, and a run
stopped after its first checkpoint and rerun continues those curves without duplicates."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from sbm.config.params import parse_params, read_yaml
from sbm.core.processes import build_process
from sbm.latent.vae import build_vae, encode_dataset, latent_scale, write_space
from sbm.models.classifier import NoisyClassifier, accuracy_by_noise_quarter, load_classifier
from sbm.pipeline import data
from sbm.pipeline.prepared import load_meta, load_split
from sbm.train.monitor import Monitor

from stage_runs import Killed, killed_after_first_checkpoint, run_stage

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
STAGES = read_yaml(ROOT / "dvc.yaml")["stages"]
PARAMS = {
    "seed": 0,
    "score": {"space": "pixel"},
    "data": {"name": "digits"},
    "monitor": {"n_quality": 64},
    "train": {"warmup_steps": 2, "log_every": 2, "checkpoint_every": 2},
    "classifier": {"channels": [8, 16], "hidden": 16, "embedding_dim": 16, "steps": 4, "batch_size": 32,
                   "lr": 0.003},
}
QUALITY = ["accuracy_q1", "accuracy_q2", "accuracy_q3", "accuracy_q4"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Prepared digits and their (pixel) space directory."""
    d = tmp_path_factory.mktemp("digits")
    params = parse_params(PARAMS)
    meta = data.prepare(params.data, params.seed, d / "prepared")
    write_space(d / "space", meta["shape"])
    return d


def _params(tmp_path, **overrides) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**PARAMS, **overrides}))
    return path


def _argv(d: Path, tmp_path: Path, params: Path) -> list[str]:
    return ["--params", str(params), "--data", str(d / "prepared"), "--space", str(d / "space"),
            "--out", str(tmp_path / "classifier.safetensors"), "--checkpoints", str(tmp_path / "ckpt"),
            "--live", str(tmp_path / "live"), "--metrics", str(tmp_path / "train_classifier.json")]


def _rows(tsv: Path) -> list[tuple[int, float]]:
    """(step, value) of a dvclive TSV's rows."""
    header, *rows = tsv.read_text().splitlines()
    cols = header.split("\t")
    i, j = cols.index("step"), cols.index(tsv.stem)
    return [(int(float(r.split("\t")[i])), float(r.split("\t")[j])) for r in rows if r.strip()]


def _quality(plots: Path) -> dict[str, list[tuple[int, float]]]:
    return {p.stem: _rows(p) for p in sorted((plots / "metrics" / "quality").glob("*.tsv"))}


def test_train_classifier_logs_accuracy_per_noise_quarter_and_a_rerun_continues(digits, tmp_path, monkeypatch):
    argv = _argv(digits, tmp_path, _params(tmp_path))
    plots = tmp_path / "live" / "plots"
    restore = killed_after_first_checkpoint(monkeypatch)
    with pytest.raises(Killed):
        run_stage("train_classifier", argv, monkeypatch)
    first = _quality(plots)
    assert list(first) == QUALITY and all([s for s, _ in rows] == [2] for rows in first.values())
    restore()
    run_stage("train_classifier", argv, monkeypatch)  # resumes at step 2, shows step 4
    quality = _quality(plots)
    assert list(quality) == QUALITY
    for name, rows in quality.items():
        assert [s for s, _ in rows] == [2, 4], name  # one row per checkpoint, increasing, none repeated
        assert rows[0] == first[name][0]  # the killed run's row kept as it was
        assert all(0.0 <= a <= 1.0 for _, a in rows), name
    loss = [s for s, _ in _rows(plots / "metrics" / "loss.tsv")]
    assert loss == sorted(set(loss)) and loss[-1] == 4
    assert not list(plots.rglob("*.png"))  # no pictures for a classifier
    assert json.loads((tmp_path / "train_classifier.json").read_text())["steps"] == 4

    declared = {next(iter(p)): next(iter(p.values())) for p in STAGES["train_classifier"]["plots"]}
    assert declared["reports/live/train_classifier/plots/metrics"]["x"] == "step"
    assert "monitor" in STAGES["train_classifier"]["params"]


def test_monitor_off_logs_no_quality(digits, tmp_path, monkeypatch):
    argv = _argv(digits, tmp_path, _params(tmp_path, monitor={"enabled": False}))
    run_stage("train_classifier", argv, monkeypatch)
    plots = tmp_path / "live" / "plots"
    assert not (plots / "metrics" / "quality").exists()
    assert [s for s, _ in _rows(plots / "metrics" / "loss.tsv")][-1] == 4


def test_the_curve_is_the_weights_alone_and_less_noise_is_classified_better(digits, tmp_path, monkeypatch):
    """The monitor sees the same noisy inputs at every call (same weights, same accuracies), and a
    classifier trained a little is more accurate at the least noise (q1) than at the most (q4)."""
    params = parse_params(PARAMS)
    x, _ = load_split(digits / "prepared", "train")
    x_test, y_test = load_split(digits / "prepared", "test")
    module = run_stage("train_classifier", _argv(digits, tmp_path, _params(
        tmp_path, classifier={**PARAMS["classifier"], "steps": 150},
        train={**PARAMS["train"], "checkpoint_every": 150, "log_every": 50})), monkeypatch)
    rows = _quality(tmp_path / "live" / "plots")
    assert [s for s, _ in rows["accuracy_q1"]] == [150]
    acc = {k: v[0][1] for k, v in rows.items()}
    assert acc["accuracy_q1"] > acc["accuracy_q4"] + 0.2, acc
    assert acc["accuracy_q1"] > 0.4, acc  # 10 classes: chance is 0.1

    monitor = module.accuracy_monitor(params, x_test, y_test)
    assert monitor.active and monitor.n_grid == 0 and monitor.n_quality == 64
    torch.manual_seed(1)
    process = build_process(params.process, load_meta(digits / "prepared"))
    model = NoisyClassifier([1, 8, 8], 10, process, [8, 16], 16, 16, 2, float(x.std())).eval()
    a, b = monitor.draw(model, 64), monitor.draw(model, 64)
    assert torch.equal(a, b) and a.shape == (1, 4)
    expected = accuracy_by_noise_quarter(model, x_test, y_test, 64, generator=torch.Generator().manual_seed(0))
    assert monitor.measure(a) == pytest.approx({f"accuracy_{q}": v for q, v in expected.items()})


def test_in_latent_space_the_encoded_test_split_is_measured(digits, tmp_path, monkeypatch):
    """score.space = latent: the classifier trains on the scaled training latents and the monitor
    measures it on the test split's latents (the space directory's, as the stage's final metric)."""
    params = parse_params({**PARAMS, "score": {"space": "latent"},
                           "vae": {"channels": [8, 16], "norm_groups": 4, "latent_channels": 2}})
    meta = load_meta(digits / "prepared")
    torch.manual_seed(0)
    vae = build_vae(params.vae, meta["shape"]).eval()  # untrained: any encoder makes a latent space
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        vae.scale = latent_scale(vae, load_split(digits / "prepared", "train")[0], generator=g)
        z = {s: encode_dataset(vae, load_split(digits / "prepared", s)[0], generator=g) for s in ("train", "test")}
    write_space(tmp_path / "space", meta["shape"], vae, z)
    argv = _argv(digits, tmp_path, _params(tmp_path, score={"space": "latent"}))
    argv[argv.index("--space") + 1] = str(tmp_path / "space")
    seen = []
    draw = Monitor.__call__

    def spy(self, model, step, live):
        seen.append((step, tuple(model.shape)))
        draw(self, model, step, live)

    monkeypatch.setattr(Monitor, "__call__", spy)
    run_stage("train_classifier", argv, monkeypatch)
    assert seen == [(2, tuple(z["test"].shape[1:])), (4, tuple(z["test"].shape[1:]))]
    quality = _quality(tmp_path / "live" / "plots")
    assert list(quality) == QUALITY and all([s for s, _ in rows] == [2, 4] for rows in quality.values())
    # the last row: the final EMA classifier's accuracies on the test latents, with the seeded noise
    classifier, _ = load_classifier(tmp_path / "classifier.safetensors")
    y_test = load_split(digits / "prepared", "test")[1]
    expected = accuracy_by_noise_quarter(classifier, z["test"], y_test, 64, generator=torch.Generator().manual_seed(0))
    assert {k: rows[-1][1] for k, rows in quality.items()} == pytest.approx(
        {f"accuracy_{q}": v for q, v in expected.items()})
