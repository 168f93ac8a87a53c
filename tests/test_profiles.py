"""Profiles (profiles/*.yaml, `sbm.config.profiles`): every profile validates against params.yaml
and its `dvc exp run -S` arguments give back the same params when DVC applies them; bad keys
and values fail naming the key and the file; the synthetic RGB profile's data path prepares
(3, 32, 32) images in [-1, 1]; and (slow) its U-Net trains in two gloo processes under
`accelerate launch`, as tests/test_distributed.py launches them, with weights that agree."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from sbm.config.params import load_params
from sbm.config.profiles import command, flatten, format_value, load_profile, main, merge, overrides, validate
from sbm.errors import ConfigError
from sbm.nets.score import build_net
from sbm.pipeline.data import prepare
from sbm.pipeline.prepared import load_meta, load_split

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ROOT / "params.yaml"
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))
SYNTHETIC = ROOT / "profiles" / "synthetic_rgb32.yaml"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


make_rgb = _load("make_synthetic_rgb", ROOT / "scripts" / "make_synthetic_rgb.py")


# --------------------------------------------------------------------------- (a) validation, round trip


def test_the_three_profiles_exist():
    assert {p.name for p in PROFILES} >= {"mnist.yaml", "cifar10.yaml", "synthetic_rgb32.yaml"}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profile_validates_and_round_trips_through_dvc(profile, tmp_path):
    """The merged params validate, and DVC's own -S machinery (dvc.utils.hydra.apply_overrides,
    what `dvc exp run -S` calls) applied to a copy of params.yaml gives exactly those params."""
    from dvc.utils.hydra import apply_overrides

    expected = validate(profile, PARAMS)
    args = overrides(profile, PARAMS)
    assert args[0::2] == ["-S"] * (len(args) // 2)
    assert len(args) // 2 == len(flatten(load_profile(profile)))
    copy = tmp_path / "params.yaml"
    shutil.copy(PARAMS, copy)
    apply_overrides(copy, args[1::2])
    assert load_params(copy) == expected
    assert load_params(copy) != load_params(PARAMS)  # it changes something
    assert expected.data.name == "hf" and expected.score.space == "pixel"


@pytest.mark.slow
def test_profile_networks_fit_their_data():
    """Each hub profile's U-Net builds for its images and maps a batch to its own shape;
    attention sits where the profile says (mnist: the lowest resolution, 7×7)."""
    shapes = {"mnist": [1, 28, 28], "cifar10": [3, 32, 32], "synthetic_rgb32": [3, 32, 32]}
    for profile in PROFILES:
        p = validate(profile, PARAMS)
        shape = shapes[profile.stem]
        assert [p.data.hf.channels, p.data.hf.image_size, p.data.hf.image_size] == shape
        assert p.data.hf.n_levels == 256 and p.data.hf.value_range == [0.0, 255.0]
        net = build_net(p.model, shape)
        x = torch.randn(1, *shape)
        with torch.no_grad():
            assert net(x, torch.tensor([0.5])).shape == x.shape
    mnist = validate(ROOT / "profiles" / "mnist.yaml", PARAMS)
    assert mnist.model.unet.attention == [False, False, True] and mnist.train.mixed_precision == "bf16"
    cifar = validate(ROOT / "profiles" / "cifar10.yaml", PARAMS)
    assert (cifar.data.hf.path, cifar.data.hf.column, cifar.data.hf.label_column) == ("cifar10", "img", "label")


def test_values_in_the_override_grammar():
    assert format_value([0, 255]) == "[0,255]"
    assert format_value([[1.0, 0.5], [0.5, 1.0]]) == "[[1.0,0.5],[0.5,1.0]]"
    assert format_value([False, True]) == "[false,true]"
    assert format_value(None) == "null" and format_value(2e-4) == "0.0002" and format_value(1e-5) == "1e-05"
    assert format_value("bf16") == "bf16" and format_value("./data/x") == "./data/x"
    assert format_value("no") == "'no'" and format_value("null") == "'null'"  # would read back as bool / None
    assert format_value("a b") == "'a b'" and format_value("it's") == "'it\\'s'"
    with pytest.raises(ConfigError, match="x = "):
        format_value({"a": 1}, "x")
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == [("a.b", 1), ("a.c.d", [1, 2]), ("e", "x")]
    assert merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}


def _profile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, key", [
    ("model:\n  unet:\n    chanels: [32, 64]\n", "model.unet.chanels"),
    ("trian:\n  steps: 10\n", "trian"),
    ("train:\n  mixed_precision: fp8\n", "train.mixed_precision"),
    ("model:\n  unet:\n    channels: [30, 60]\n", "model.unet.channels"),
    ("data:\n  name: hf\n  hf:\n    path: ''\n", "data.hf.path"),
], ids=["unknown-nested-key", "unknown-section", "bad-choice", "groups-do-not-divide", "empty-path"])
def test_a_bad_profile_fails_naming_the_key_and_the_file(tmp_path, text, key):
    bad = _profile(tmp_path, text)
    for call in (lambda: validate(bad, PARAMS), lambda: overrides(bad, PARAMS)):
        with pytest.raises(ConfigError) as err:
            call()
        assert key in str(err.value) and str(bad) in str(err.value), str(err.value)


def test_an_empty_profile_or_mapping_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="non-empty mapping"):
        validate(_profile(tmp_path, "[1, 2]\n"), PARAMS)
    with pytest.raises(ConfigError, match="model.unet"):
        overrides(_profile(tmp_path, "model:\n  unet: {}\n"), PARAMS)


def test_cli_prints_the_dvc_exp_run_line(capsys, tmp_path):
    main([str(ROOT / "profiles" / "mnist.yaml"), "--params", str(PARAMS), "--name", "mnist run"])
    line = capsys.readouterr().out.strip()
    assert line == command(ROOT / "profiles" / "mnist.yaml", PARAMS, "mnist run")
    assert line.startswith("dvc exp run -n 'mnist run' -S score.space=pixel -S data.name=hf")
    assert "-S 'model.unet.channels=[64,128,256]'" in line and "-S train.mixed_precision=bf16" in line
    with pytest.raises(SystemExit) as exit_:
        main([str(_profile(tmp_path, "trian:\n  steps: 1\n")), "--params", str(PARAMS)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("profiles: error: ") and "trian" in err and "bad.yaml" in err


# --------------------------------------------------------------------------- (b) the synthetic data path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The synthetic RGB set written by scripts/make_synthetic_rgb.py, prepared by stage prepare's
    `sbm.pipeline.data.prepare` as profiles/synthetic_rgb32.yaml says (its path replaced)."""
    root = tmp_path_factory.mktemp("synthetic_rgb32")
    make_rgb.write(root / "images", n=256, size=32, seed=0)
    params = validate(merge(load_profile(SYNTHETIC), {"data": {"hf": {"path": str(root / "images")}}}), PARAMS)
    prepare(params.data, params.seed, root / "prepared")
    return root / "prepared"


def test_synthetic_images_are_deterministic_rgb_with_ten_labels():
    a, y = make_rgb.synthetic_images(40, 32, seed=1)
    b, _ = make_rgb.synthetic_images(40, 32, seed=1)
    assert a.shape == (40, 32, 32, 3) and a.dtype.name == "uint8" and (a == b).all()
    assert y.tolist() == [i % 10 for i in range(40)]
    assert (make_rgb.synthetic_images(40, 32, seed=2)[0] != a).any()
    assert a.std(axis=(1, 2)).min() > 0  # no flat images


def test_synthetic_profile_prepares_rgb_images_in_range(prepared):
    meta = load_meta(prepared)
    assert meta["shape"] == [3, 32, 32] and meta["n_levels"] == 256 and meta["n_classes"] == 10
    assert (meta["n_train"], meta["n_test"]) == (192, 64)
    for split in ("train", "test"):
        x, y = load_split(prepared, split)
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        assert x.min() >= -1.0 and x.max() <= 1.0
        assert set(y.tolist()) <= set(range(10))
        # 8-bit data: every value on the 256-point grid of [-1, 1]
        k = (x + 1) / 2 * 255
        assert (k - k.round()).abs().max() < 1e-4
    x, _ = load_split(prepared, "train")
    assert x.amin(dim=(0, 2, 3)).lt(-0.5).all() and x.amax(dim=(0, 2, 3)).gt(0.5).all()  # every channel used


# --------------------------------------------------------------------------- (c) two processes


@pytest.mark.slow
def test_synthetic_profile_trains_in_two_gloo_processes(prepared, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 --main_process_port 0` with
    ACCELERATE_USE_CPU=true (tests/test_distributed.py's launch) runs tests/ddp_profile_train.py:
    the profile's U-Net for its train.steps on the prepared synthetic images. Both processes
    finish, in one gloo group, with the same raw weights, EMA and logged loss. ≈ 20 s on 2 cores."""
    dist = _load("test_distributed_helpers", ROOT / "tests" / "test_distributed.py")
    driver = ROOT / "tests" / "ddp_profile_train.py"
    dist._run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", "0", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(driver), str(tmp_path), "--profile", str(SYNTHETIC), "--data", str(prepared),
               "--params", str(PARAMS), "--expect-world", "2"])
    recs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert [r["rank"] for r in recs] == [0, 1]
    steps = validate(SYNTHETIC, PARAMS).train.steps
    for r in recs:
        assert r["world_size"] == 2 and r["backend"] == "gloo" and r["result_world_size"] == 2, r
        assert r["steps"] == steps and r["shape"] == [3, 32, 32] and r["is_main"] == (r["rank"] == 0)
        assert r["raw_digest"] and torch.isfinite(torch.tensor(r["final_loss"]))
    assert recs[0]["raw_digest"] == recs[1]["raw_digest"], "the processes' weights differ"
    assert recs[0]["ema_digest"] == recs[1]["ema_digest"], "the processes' EMA differs"
    assert recs[0]["final_loss"] == recs[1]["final_loss"], "the logged loss is not reduced across processes"
