"""The evaluator classifier (trained on real digits), FID on its calibrated features, checkpoints,
and the clear error when Inception features are asked for without torch-fidelity and its weights."""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sbm.config.params import load_params
from sbm.eval import quality as quality_mod
from sbm.eval.evaluator import Evaluator, accuracy, load_evaluator, save_evaluator, train_evaluator
from sbm.eval.quality import (
    INCEPTION_WEIGHTS_FILE,
    EvaluatorFeatures,
    InceptionFeatures,
    MissingInceptionWeights,
    QualityMeter,
    _torch_fidelity_available,
    evaluator_metrics,
    fid,
    find_inception_weights,
)
from sbm.pipeline.stage import run_stage

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw):
    cfg = load_params(ROOT / "params.yaml").evaluator
    return dataclasses.replace(cfg, **{"channels": [16, 32], "hidden": 64, "steps": 300, "batch_size": 64,
                                       "lr": 3e-3, **kw})


@pytest.fixture(scope="module")
def digits():
    """scikit-learn digits as (N, 1, 8, 8) in [-1, 1], split 1400 train / 397 test by a seeded permutation."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.data / 16.0 * 2.0 - 1.0).float().reshape(-1, 1, 8, 8)
    y = torch.from_numpy(d.target).long()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    return x[tr], y[tr], x[te], y[te]


@pytest.fixture(scope="module")
def evaluator(digits):
    with torch.random.fork_rng():
        return train_evaluator(digits[0], digits[1], _cfg(), seed=0)


def _shuffled_pixels(x, seed=0):
    """Each image's pixels permuted independently: the same value histogram, no digit structure."""
    g = torch.Generator().manual_seed(seed)
    flat = x.flatten(1)
    return torch.stack([row[torch.randperm(flat.shape[1], generator=g)] for row in flat]).reshape(x.shape)


def test_evaluator_trained_on_digits_is_accurate(digits, evaluator):
    x_tr, y_tr, x_te, y_te = digits
    acc = accuracy(evaluator, x_te, y_te)
    print(f"evaluator test accuracy {acc:.4f} (train {accuracy(evaluator, x_tr, y_tr):.4f})")
    assert acc > 0.93
    # features: the two GroupNorms of each stage (16, 16, 32, 32 channels) and the penultimate layer (64)
    assert evaluator.num_features == 16 + 16 + 32 + 32 + 64
    assert evaluator.features(x_te).shape == (len(x_te), evaluator.num_features)
    assert evaluator.predict(x_te).shape == (len(x_te),)


def test_training_is_deterministic_and_leaves_the_global_rng_alone(digits):
    x, y = digits[0][:256], digits[1][:256]
    state = torch.get_rng_state()
    a = train_evaluator(x, y, _cfg(steps=5), seed=3, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)
    b = train_evaluator(x, y, _cfg(steps=5), seed=3, device="cpu")
    assert torch.equal(a.features(x[:16]), b.features(x[:16]))


def test_fid_self_floor_and_noise(digits, evaluator):
    x_tr, _, x_te, _ = digits
    same = fid(x_tr, x_tr, evaluator)
    floor = fid(x_tr, x_te, evaluator)
    noise = fid(x_tr, _shuffled_pixels(x_tr), evaluator)
    print(f"FID self {same:.2e}, train vs test (floor) {floor:.3f}, train vs shuffled pixels {noise:.2f}")
    assert abs(same) < 1e-4
    assert noise > 5.0
    assert floor < 0.1 * noise
    # flat (N, 64) data give the same features as (N, 1, 8, 8)
    assert fid(x_tr.flatten(1), x_te.flatten(1), evaluator) == pytest.approx(floor, rel=1e-5)


def test_fid_matches_the_formula_on_the_features(digits, evaluator):
    from scipy import linalg

    x_tr, _, x_te, _ = digits
    fr, ff = evaluator.features(x_tr).double().numpy(), evaluator.features(x_te[:300]).double().numpy()
    mr, mf = fr.mean(0), ff.mean(0)
    cr, cf = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
    expect = ((mr - mf) ** 2).sum() + np.trace(cr + cf - 2 * linalg.sqrtm(cr @ cf).real)
    assert fid(x_tr, x_te[:300], evaluator, batch_size=128) == pytest.approx(expect, rel=1e-3)


def test_fid_needs_two_examples_and_a_feature_size(digits, evaluator):
    with pytest.raises(ValueError, match="at least 2 examples"):
        fid(digits[0][:1], digits[2], evaluator)
    with pytest.raises(TypeError, match="num_features"):
        fid(digits[0], digits[2], torch.nn.Flatten())
    assert EvaluatorFeatures(evaluator).num_features == evaluator.num_features == 160


def test_save_load_round_trip_gives_identical_features(tmp_path, digits, evaluator):
    save_evaluator(tmp_path / "evaluator.safetensors", evaluator, {"accuracy": 0.9})
    loaded, meta = load_evaluator(tmp_path / "evaluator.safetensors")
    assert meta["accuracy"] == 0.9 and loaded.config == evaluator.config
    assert torch.equal(loaded.features(digits[2]), evaluator.features(digits[2]))
    assert torch.equal(loaded.predict(digits[2]), evaluator.predict(digits[2]))


def test_an_uncalibrated_evaluator_checkpoint_says_to_retrain(tmp_path, evaluator):
    from sbm import io
    from sbm.errors import CheckpointError

    save_evaluator(tmp_path / "e.safetensors", evaluator)
    tensors, meta = io.load_tensors(tmp_path / "e.safetensors")
    old = {k: v for k, v in tensors.items() if "feature_" not in k}  # what train_evaluator wrote before
    io.save_tensors(tmp_path / "old.safetensors", old, meta)
    with pytest.raises(CheckpointError, match="before its features were calibrated.*dvc repro train_evaluator"):
        load_evaluator(tmp_path / "old.safetensors")


def test_vectors_get_an_mlp_and_flat_images_can_use_the_cnn(digits):
    x, y = digits[0].flatten(1), digits[1]
    mlp = train_evaluator(x, y, _cfg(steps=150), seed=0)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in mlp.modules())
    assert accuracy(mlp, digits[2].flatten(1), digits[3]) > 0.85
    cnn = train_evaluator(x[:64], y[:64], _cfg(steps=2), seed=0, shape=[1, 8, 8])
    assert any(isinstance(m, torch.nn.Conv2d) for m in cnn.modules())
    with pytest.raises(ValueError, match="needs a class label"):
        train_evaluator(x[:8], torch.full((8,), -1), _cfg(steps=1), seed=0)
    with pytest.raises(ValueError, match=r"shape \[1, 7, 7\]"):
        train_evaluator(x[:8], y[:8], _cfg(steps=1), seed=0, shape=[1, 7, 7])


def test_missing_inception_weights_raise_a_clear_error(tmp_path, monkeypatch, capsys, digits):
    missing = tmp_path / "nope.pth"
    with pytest.raises(MissingInceptionWeights) as info:
        find_inception_weights(missing)
    msg = str(info.value)
    assert INCEPTION_WEIGHTS_FILE in msg and str(missing) in msg
    assert "evaluator.feature = evaluator" in msg and "Nothing is downloaded" in msg
    if not _torch_fidelity_available():
        assert "torch-fidelity" in msg
    # with the package present only the weights are named
    monkeypatch.setattr(quality_mod, "_torch_fidelity_available", lambda: True)
    with pytest.raises(MissingInceptionWeights) as info:
        find_inception_weights(missing)
    assert "torch-fidelity package" not in str(info.value) and INCEPTION_WEIGHTS_FILE in str(info.value)
    # the default lookup is torch hub's cache, and the FID entry points fail before any work
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MissingInceptionWeights, match=re.escape(str(tmp_path / "hub" / "checkpoints"))):
        InceptionFeatures()
    inception = _cfg(feature="inception", inception_weights=str(missing))
    with pytest.raises(MissingInceptionWeights, match=re.escape(f"looked for {missing}")):
        QualityMeter.from_params(inception, digits[2], None)
    # it is a user error: a stage (run_stage catches FileNotFoundError) exits 2 with one line naming the path
    with pytest.raises(SystemExit) as exc:
        run_stage("evaluate", lambda: QualityMeter.from_params(inception, digits[2], None))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("evaluate: error: Inception features need") and str(missing) in err
    # and once the file is there (package present) the lookup returns it: the explicit path, else the hub cache
    present = tmp_path / "weights.pth"
    present.write_bytes(b"")
    assert find_inception_weights(present) == str(present)
    cached = tmp_path / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert find_inception_weights() == find_inception_weights(None) == str(cached)


def test_the_meter_of_params_uses_the_evaluator_by_default(digits, evaluator):
    assert load_params(ROOT / "params.yaml").evaluator.feature == "evaluator"
    meter = QualityMeter.from_params(_cfg(), digits[0], evaluator)
    assert meter(digits[2])["fid"] == pytest.approx(fid(digits[0], digits[2], evaluator), rel=1e-9)
    with pytest.raises(ValueError, match="needs a trained evaluator"):
        QualityMeter.from_params(_cfg(), digits[0], None)


def test_evaluator_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"shape \[2, 3\]"):
        Evaluator([2, 3], 10)
    with pytest.raises(ValueError, match="at least 2"):
        Evaluator([4], 1)


def test_evaluator_metrics_floor_histogram_and_a_one_class_generator(digits, evaluator):
    xtr, ytr, xte, yte = digits
    meter = QualityMeter.for_evaluator(evaluator, xte, _cfg(), seed=0)
    # the training set itself as "samples": the same m examples -> every metric equals its floor exactly
    flat, detail = evaluator_metrics(xtr, xtr, ytr, xte, yte, evaluator, meter, seed=0)
    assert flat["fid"] == pytest.approx(flat["fid_floor"], rel=1e-6) and flat["fid_ratio"] == pytest.approx(1.0)
    for name in ("kid", "precision", "recall"):
        assert flat[name] == pytest.approx(flat[f"{name}_floor"], rel=1e-9)
    assert flat["evaluator_acc"] == pytest.approx(accuracy(evaluator, xte, yte))
    counts = detail["evaluator"]["class_counts"]
    assert sum(counts) == len(xtr) and detail["evaluator"]["n_fid"] == len(xtr)
    freq = torch.bincount(ytr, minlength=10).double() / len(ytr)
    assert detail["evaluator"]["train_class_freq"] == pytest.approx(freq.tolist())
    # TV between predicted and true class frequencies is at most the error rate on train
    assert flat["class_tv"] <= 1 - accuracy(evaluator, xtr, ytr) + 1e-12
    # a generator that only draws zeros: the histogram shows it, FID is far above the floor
    zeros = xtr[ytr == 0]
    flat0, detail0 = evaluator_metrics(zeros, xtr, ytr, xte, yte, evaluator, meter, seed=0)
    assert detail0["evaluator"]["n_fid"] == len(zeros)
    assert flat0["class_tv"] == pytest.approx(1 - float(freq[0]), abs=0.02)
    assert flat0["fid"] > 10 * flat0["fid_floor"]
    # one class of ten covers a small part of the test data: recall collapses, precision does not
    assert flat0["recall"] < 0.3 < 0.8 < flat0["precision"]
