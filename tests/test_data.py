"""Tests for sbm.pipeline.data and stages/prepare.py: determinism, splits, distributions, meta, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sbm.config.params import VECTOR_DATASETS, parse_params
from sbm.core.tensor import max_pairwise_distance
from sbm.pipeline import data
from sbm.pipeline.prepared import load_meta, load_split

ROOT = Path(__file__).resolve().parents[1]
TOYS = ["gmm", "swiss_roll", "moons", "checkerboard"]
META_KEYS = {"name", "shape", "dim", "n_train", "n_test", "value_range", "n_levels", "data_range",
             "sigma_max", "gmm", "n_classes", "seed"}


def prep(out: Path, seed: int = 0, **data_params) -> tuple[dict, tuple, tuple]:
    """prepare() with the given data params; -> (meta, (x_train, y_train), (x_test, y_test)).

    Vector data sets need score.space = pixel (the default latent space wants images)."""
    space = "pixel" if data_params.get("name") in VECTOR_DATASETS else "latent"
    cfg = parse_params({"data": data_params, "score": {"space": space}}).data
    meta = data.prepare(cfg, seed, out)
    return meta, load_split(out, "train"), load_split(out, "test")


def brute_diameter(x: np.ndarray) -> float:
    x = x.reshape(len(x), -1).astype(np.float64)
    return max(float(np.linalg.norm(x - xi, axis=1).max()) for xi in x)


def rows(x: torch.Tensor) -> set:
    return {tuple(r) for r in x.reshape(len(x), -1).tolist()}


# --------------------------------------------------------------------------- toys


@pytest.mark.parametrize("name", TOYS)
def test_toys_deterministic_sized_disjoint(tmp_path, name):
    kw = dict(name=name, n_train=300, n_test=120)
    meta, (xa, ya), (ta, _) = prep(tmp_path / "a", 0, **kw)
    _, (xb, yb), (tb, _) = prep(tmp_path / "b", 0, **kw)
    _, (xc, _), _ = prep(tmp_path / "c", 1, **kw)
    assert torch.equal(xa, xb) and torch.equal(ta, tb)
    assert (ya is None and yb is None) or torch.equal(ya, yb)
    assert not torch.allclose(xa, xc)
    assert xa.shape == (300, 2) and ta.shape == (120, 2) and xa.dtype == torch.float32
    assert not rows(xa) & rows(ta)  # fresh continuous draws never coincide
    assert (meta["n_train"], meta["n_test"], meta["shape"], meta["dim"]) == (300, 120, [2], 2)
    assert meta["n_levels"] is None and meta["data_range"] is None
    assert meta["value_range"] == [float(xa.min()), float(xa.max())]


def test_gmm_mean_and_label_frequencies(tmp_path):
    n = 10000
    meta, (x, y), _ = prep(tmp_path, 3, name="gmm", n_train=n, n_test=2)
    w = torch.tensor(meta["gmm"]["weights"], dtype=torch.float64)
    mu = torch.tensor(meta["gmm"]["means"], dtype=torch.float64)
    cov = torch.tensor(meta["gmm"]["covs"], dtype=torch.float64)
    assert torch.allclose(w, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64))
    # Tolerances are 5 standard errors of the estimate (false-failure odds ~1e-6 per entry):
    # mean: SE = sqrt(Var_mix / n) with Var_mix = Σ w (Σ_k + μ_k μ_kᵀ) − m mᵀ (law of total variance).
    m = (w[:, None] * mu).sum(0)
    var = (w[:, None] * (torch.diagonal(cov, dim1=1, dim2=2) + mu**2)).sum(0) - m**2
    assert ((x.double().mean(0) - m).abs() < 5 * (var / n).sqrt()).all()
    # label frequencies: binomial SE = sqrt(w (1 − w) / n).
    freq = torch.bincount(y, minlength=3).double() / n
    assert ((freq - w).abs() < 5 * (w * (1 - w) / n).sqrt()).all()
    assert meta["n_classes"] == 3 and set(y.tolist()) == {0, 1, 2}


def test_checkerboard_on_dark_squares_uniformly(tmp_path):
    n = 8000
    _, (x, y), _ = prep(tmp_path, 0, name="checkerboard", n_train=n, n_test=2)
    assert y is None
    assert ((x >= -2) & (x <= 2)).all()
    ij = torch.floor(x + 2).long().clamp(0, 3)
    assert ((ij[:, 0] + ij[:, 1]) % 2 == 0).all()
    counts = torch.bincount(ij[:, 0] * 4 + ij[:, 1], minlength=16)[[i * 4 + j for i in range(4) for j in range(4)
                                                                      if (i + j) % 2 == 0]]
    se = math.sqrt(n * (1 / 8) * (7 / 8))  # binomial SE of a square's count; 5 SE tolerance
    assert ((counts.double() - n / 8).abs() < 5 * se).all()


def test_moons_and_swiss_roll_labels_and_spread(tmp_path):
    meta, (x, y), _ = prep(tmp_path / "m", 0, name="moons", n_train=2000, n_test=10, noise=0.05)
    assert set(y.tolist()) == {0, 1} and meta["n_classes"] == 2
    meta, (x, y), _ = prep(tmp_path / "s", 0, name="swiss_roll", n_train=2000, n_test=10)
    assert y is None and meta["n_classes"] is None
    assert ((x.std(0) > 0.7) & (x.std(0) < 1.3)).all()  # "about unit spread" after / SWISS_ROLL_SCALE


# --------------------------------------------------------------------------- digits


def test_digits_grid_labels_split(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    meta, (x, y), (xt, yt) = prep(tmp_path / "a", 0, name="digits", test_fraction=0.25)
    _, (x2, y2), _ = prep(tmp_path / "b", 0, name="digits", test_fraction=0.25)
    _, (x3, _), _ = prep(tmp_path / "c", 5, name="digits", test_fraction=0.25)
    assert x.shape[1:] == (1, 8, 8) and meta["shape"] == [1, 8, 8] and meta["dim"] == 64
    assert (len(x), len(xt)) == (1797 - 449, 449) == (meta["n_train"], meta["n_test"])
    levels = (torch.cat([x, xt]).double() + 1) / 2 * 16
    assert torch.allclose(levels, levels.round(), atol=1e-5) and levels.min() >= 0 and levels.max() <= 16
    assert set(y.tolist()) == set(yt.tolist()) == set(range(10))
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, x3)
    # the split is a permutation of the whole set: train ∪ test == the digits, as multisets
    ref = np.sort(d.data / 16 * 2 - 1, axis=0)
    assert np.allclose(np.sort(torch.cat([x, xt]).reshape(-1, 64).numpy(), axis=0), ref, atol=1e-6)
    # ... and each example is one digit image, row-major (not transposed), with its own label
    img = {(tuple(im.astype(int).flatten()), int(t)) for im, t in zip(d.images, d.target)}
    served = ((torch.cat([x, xt])[:, 0] + 1) / 2 * 16).round().long()
    assert {(tuple(a.flatten().tolist()), int(t)) for a, t in zip(served, torch.cat([y, yt]))} == img
    assert (meta["n_levels"], meta["data_range"], meta["n_classes"]) == (17, [-1.0, 1.0], 10)
    assert meta["value_range"] == [-1.0, 1.0]


# --------------------------------------------------------------------------- meta, sigma_max, loading


def test_meta_keys_and_sigma_max_brute_force(tmp_path):
    meta, (x, _), _ = prep(tmp_path, 7, name="gmm", n_train=400, n_test=50)
    assert set(meta) == META_KEYS and load_meta(tmp_path) == meta
    assert json.loads((tmp_path / "meta.json").read_text()) == meta
    assert meta["seed"] == 7 and meta["name"] == "gmm"
    assert meta["sigma_max"] == pytest.approx(brute_diameter(x.numpy()), rel=1e-12)


@pytest.mark.parametrize("n,d", [(300, 2), (200, 64), (60, 300)])
def test_max_pairwise_distance_exact(n, d):
    g = torch.Generator().manual_seed(n + d)
    x = torch.randn(n, d, generator=g) * torch.rand(d, generator=g) + 4 * (torch.rand(n, 1, generator=g) < 0.2)
    assert max_pairwise_distance(x, chunk=7) == pytest.approx(brute_diameter(x.numpy()), rel=1e-12)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_meta(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load_split(tmp_path, "train")
    prep(tmp_path / "p", 0, name="moons", n_train=10, n_test=10)
    with pytest.raises(ValueError, match="'valid'"):
        load_split(tmp_path / "p", "valid")


# --------------------------------------------------------------------------- hugging face


def save_dd(path: Path, splits: dict[str, dict]) -> Path:
    import datasets

    datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in splits.items()}).save_to_disk(str(path))
    return path


@pytest.fixture
def hf_dir(tmp_path):
    rng = np.random.default_rng(0)

    def split(n):
        v = rng.integers(0, 11, size=(n, 3))
        return {"vec": v.tolist(), "grid": v[:, None, :].repeat(2, 1).tolist(), "lab": (v[:, 0] % 3).tolist()}

    return save_dd(tmp_path / "hfdata", {"train": split(40), "test": split(10)})


def hf(path, **kw):
    return dict(name="hf", test_fraction=0.2, hf=dict(path=str(path), **kw))


def test_hf_local_vectors_and_grids(tmp_path, hf_dir):
    import datasets

    meta, (x, y), (xt, yt) = prep(tmp_path / "o", 0, **hf(hf_dir, split="all", column="vec", label_column="lab",
                                                            value_range=[0, 10], n_levels=11))
    assert (meta["n_train"], meta["n_test"], meta["shape"]) == (40, 10, [3])
    assert (meta["n_levels"], meta["data_range"], meta["n_classes"]) == (11, [-1.0, 1.0], 3)
    src = np.concatenate([np.asarray(datasets.load_from_disk(str(hf_dir))[s]["vec"]) for s in ("train", "test")])
    both = torch.cat([x, xt]).numpy()
    assert np.allclose(np.sort(both, axis=0), np.sort(src / 10 * 2 - 1, axis=0), atol=1e-6)
    assert torch.equal(torch.cat([y, yt]).sort().values, torch.from_numpy(src[:, 0] % 3).sort().values)
    meta, (x, y), _ = prep(tmp_path / "g", 0, **hf(hf_dir, split="train", column="grid", value_range=[0, 10]))
    assert meta["shape"] == [2, 3] and x.shape == (32, 2, 3) and y is None and meta["n_test"] == 8
    assert torch.equal(x[:, 0], x[:, 1])


def test_hf_single_dataset_and_images(tmp_path):
    import datasets
    from PIL import Image

    imgs = [Image.fromarray(np.full((4, 5), 17 * i, dtype=np.uint8)) for i in range(10)]
    datasets.Dataset.from_dict({"image": imgs}, features=datasets.Features({"image": datasets.Image()})) \
        .save_to_disk(str(tmp_path / "img"))
    meta, (x, _), (xt, _) = prep(tmp_path / "o", 0, **hf(tmp_path / "img", column="image", value_range=[0, 255]))
    assert meta["shape"] == [1, 4, 5] and x.shape == (8, 1, 4, 5) and xt.shape == (2, 1, 4, 5)
    assert ((x >= -1) & (x <= 1)).all()


# ---- image columns: channels, image_size (tiny PIL datasets built here; label = source index)


def save_images(path: Path, imgs: list, labels=None, fmt: str | None = None) -> Path:
    """A datasets.Dataset {"image": Image(), "label"} saved to path (in format fmt); labels given: a
    ClassLabel column, else int64 = the image's index."""
    import datasets

    lab = datasets.Value("int64") if labels is None else datasets.ClassLabel(num_classes=max(labels) + 1)
    feats = datasets.Features({"image": datasets.Image(), "label": lab})
    labels = list(range(len(imgs))) if labels is None else labels
    datasets.Dataset.from_dict({"image": imgs, "label": labels}, features=feats).with_format(fmt) \
        .save_to_disk(str(path))
    return path


def by_label(x: torch.Tensor, y: torch.Tensor) -> dict[int, np.ndarray]:
    """{label: example as 0..255 levels (C, H, W)} from x in [-1, 1] (the inverse of value_range [0, 255])."""
    return {int(t): ((a.double().numpy() + 1) / 2 * 255) for a, t in zip(x, y)}


def rgb_images(n: int = 12, hw=(6, 5), seed: int = 0) -> list:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)) for _ in range(n)]


def img_hf(path, **kw):
    return hf(path, column="image", label_column="label", value_range=[0, 255], n_levels=256, **kw)


@pytest.mark.parametrize("fmt", [None, "numpy", "torch"])
def test_hf_images_stored_shape_labels_split(tmp_path, fmt):
    import datasets

    imgs = rgb_images()
    src = save_images(tmp_path / "src", imgs, labels=[i % 3 for i in range(12)], fmt=fmt)
    ref = save_images(tmp_path / "ref", imgs)  # same images, label = index, to pair each example with its source
    meta, (x, y), (xt, yt) = prep(tmp_path / "a", 0, **img_hf(src))
    assert meta["shape"] == [3, 6, 5] and x.shape == (10, 3, 6, 5) and xt.shape == (2, 3, 6, 5)
    assert (meta["n_levels"], meta["data_range"], meta["n_classes"]) == (256, [-1.0, 1.0], 3)
    assert sorted(torch.cat([y, yt]).tolist()) == sorted(i % 3 for i in range(12))
    _, (xr, yr), (xrt, yrt) = prep(tmp_path / "r", 0, **img_hf(ref))
    got = by_label(torch.cat([xr, xrt]), torch.cat([yr, yrt]))
    for i, im in enumerate(imgs):  # (C, H, W) = the PIL (H, W, C) array transposed, 0..255 -> [-1, 1]
        assert np.allclose(got[i], np.asarray(im).transpose(2, 0, 1), atol=1e-4)
    # labels stay with their images: same permutation as the label = index copy
    assert torch.equal(y, yr % 3) and torch.equal(yt, yrt % 3)
    # the split: reproducible for one seed, another for another seed
    _, (x2, y2), _ = prep(tmp_path / "b", 0, **img_hf(src))
    _, (_, yr5), _ = prep(tmp_path / "c", 5, **img_hf(ref))
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(yr, yr5)
    assert datasets.load_from_disk(str(src)).format["type"] == fmt  # the saved format was not a no-op


def test_hf_images_channels(tmp_path):
    from PIL import Image

    imgs = rgb_images()
    _, (x, y), (xt, yt) = prep(tmp_path / "g", 0, **img_hf(save_images(tmp_path / "rgb", imgs), channels=1))
    assert x.shape[1:] == (1, 6, 5)
    got = by_label(torch.cat([x, xt]), torch.cat([y, yt]))
    for i, im in enumerate(imgs):  # PIL's own ITU-R 601 luma, rounded to 0..255
        assert np.allclose(got[i][0], np.asarray(im.convert("L")), atol=1e-4)
    grey = [im.convert("L") for im in imgs]
    _, (x, y), (xt, yt) = prep(tmp_path / "c", 0, **img_hf(save_images(tmp_path / "grey", grey), channels=3))
    assert x.shape[1:] == (3, 6, 5)
    got = by_label(torch.cat([x, xt]), torch.cat([y, yt]))
    for i, im in enumerate(grey):  # three equal channels, each the grey image
        assert np.allclose(got[i], np.asarray(im)[None].repeat(3, 0), atol=1e-4)
    # a palette image with channels null is served as its RGB colours, not palette indices
    pal = [im.convert("P", palette=Image.Palette.ADAPTIVE, colors=8) for im in imgs]
    _, (x, y), (xt, yt) = prep(tmp_path / "p", 0, **img_hf(save_images(tmp_path / "pal", pal)))
    got = by_label(torch.cat([x, xt]), torch.cat([y, yt]))
    assert x.shape[1:] == (3, 6, 5)
    assert all(np.allclose(got[i], np.asarray(im.convert("RGB")).transpose(2, 0, 1), atol=1e-4)
               for i, im in enumerate(pal))


def test_hf_images_resize(tmp_path):
    from PIL import Image

    const = [Image.fromarray(np.full((6, 5), 20 * i + 3, dtype=np.uint8)) for i in range(6)]
    imgs = rgb_images(6)
    meta, (x, y), (xt, yt) = prep(tmp_path / "c", 0, **img_hf(save_images(tmp_path / "const", const), image_size=4))
    assert meta["shape"] == [1, 4, 4] and x.shape == (5, 1, 4, 4) and xt.shape == (1, 1, 4, 4)
    for i, a in by_label(torch.cat([x, xt]), torch.cat([y, yt])).items():  # a constant image stays that constant
        assert np.allclose(a, 20 * i + 3, atol=1e-4)
    meta, (x, y), (xt, yt) = prep(tmp_path / "r", 0, **img_hf(save_images(tmp_path / "rgb", imgs), image_size=3))
    assert meta["shape"] == [3, 3, 3] and meta["n_levels"] == 256  # resized 8-bit images stay on the 0..255 grid
    for i, a in by_label(torch.cat([x, xt]), torch.cat([y, yt])).items():
        assert np.allclose(a, np.round(a), atol=1e-4)
        ref = np.asarray(imgs[i], dtype=np.float64)
        assert (a >= ref.min(axis=(0, 1))[:, None, None] - 1e-4).all()  # bilinear: no overshoot
        assert (a <= ref.max(axis=(0, 1))[:, None, None] + 1e-4).all()
        assert np.allclose(a, np.asarray(imgs[i].resize((3, 3), Image.BILINEAR)).transpose(2, 0, 1), atol=1e-4)
    # grey first, then resize: (1, s, s)
    meta, _, _ = prep(tmp_path / "g", 0, **img_hf(tmp_path / "rgb", image_size=2, channels=1))
    assert meta["shape"] == [1, 2, 2]


def test_hf_images_mixed_sizes_and_errors(tmp_path, hf_dir):
    from PIL import Image

    mixed = [Image.fromarray(np.full(hw, 9 * i, dtype=np.uint8)) for i, hw in enumerate([(4, 4)] * 5 + [(6, 5)] * 5)]
    src = save_images(tmp_path / "mixed", mixed)
    with pytest.raises(ValueError, match=r"differing shapes: row 5 is \[1, 6, 5\], earlier rows \[1, 4, 4\]; "
                                         r"set data.hf.image_size"):
        prep(tmp_path / "o", 0, **img_hf(src))
    meta, (x, _), _ = prep(tmp_path / "o", 0, **img_hf(src, image_size=3))
    assert meta["shape"] == [1, 3, 3] and meta["n_train"] + meta["n_test"] == 10
    with pytest.raises(ValueError, match=r"data.hf.image_size = 4: .*column 'vec'.* row 0 is a list, not an image"):
        prep(tmp_path / "o", 0, **hf(hf_dir, column="vec", image_size=4))
    with pytest.raises(ValueError, match=r"data.hf.channels = 1: .*column 'label'.* row 0 is a int, not an image"):
        prep(tmp_path / "o", 0, **hf(src, column="label", value_range=[0, 9], channels=1))
    with pytest.raises(ValueError, match=r"data.hf.n_levels = 17: values are off the 17-point grid"):
        prep(tmp_path / "o", 0, **hf(src, column="image", value_range=[0, 255], n_levels=17, image_size=3))


def test_hf_errors(tmp_path, hf_dir):
    def fails(exc, match, **kw):
        with pytest.raises(exc, match=match):
            prep(tmp_path / "o", 0, **kw)

    fails(ValueError, r"no column 'pixels'; available columns: vec, grid, lab", **hf(hf_dir, column="pixels"))
    fails(ValueError, r"available columns: vec, grid, lab", **hf(hf_dir, column="vec", label_column="y"))
    fails(FileNotFoundError, "no such directory", **hf(tmp_path / "missing"))
    fails(ValueError, "splits train, test", **hf(hf_dir, split="validation", column="vec"))
    fails(ValueError, r"spans \[0, 10\]", **hf(hf_dir, column="vec", value_range=[0, 1]))
    vec = [[1.0, 2.0]] * 12
    bad = save_dd(tmp_path / "nan", {"train": {"x": vec[:3] + [[np.nan, 1.0]] + vec[:3] + [[np.inf, np.nan]]}})
    fails(ValueError, r"split 'train'.*3 NaN/inf values in 2 rows \(rows \[3, 7\]\)", **hf(bad))
    bad = save_dd(tmp_path / "shape", {"train": {"x": vec[:5] + [[1.0, 2.0, 3.0]]}})
    fails(ValueError, r"differing shapes: row 5 is \[3\], earlier rows \[2\]", **hf(bad))
    bad = save_dd(tmp_path / "str", {"train": {"x": ["a", "b"]}})
    fails(ValueError, "row 0: non-numeric", **hf(bad))


# --------------------------------------------------------------------------- stage script


def run_stage(tmp_path, params: str):
    (tmp_path / "params.yaml").write_text(params)
    cmd = [sys.executable, "stages/prepare.py", "--params", str(tmp_path / "params.yaml"),
           "--out", str(tmp_path / "out"), "--report", str(tmp_path / "reports" / "prepare.json")]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_stage_end_to_end(tmp_path):
    r = run_stage(tmp_path, "seed: 4\nscore:\n  space: pixel\ndata:\n  name: gmm\n  n_train: 500\n  n_test: 100\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("prepare: gmm") and len(r.stdout.strip().splitlines()) == 1
    meta = load_meta(tmp_path / "out")
    report = json.loads((tmp_path / "reports" / "prepare.json").read_text())
    assert report == {k: v for k, v in meta.items() if k != "gmm"} and meta["gmm"] is not None
    x, y = load_split(tmp_path / "out", "train")
    assert x.shape == (500, 2) and meta["seed"] == 4 and len(y) == 500


@pytest.mark.parametrize("params,match", [
    ("data:\n  n_train: 0\n", "data.n_train = 0: must be >= 2"),
    ("data:\n  name: hf\n  hf:\n    path: /nonexistent/dir\n", "no such directory"),
])
def test_stage_errors_one_line(tmp_path, params, match):
    r = run_stage(tmp_path, params)
    assert r.returncode == 2
    assert r.stderr.startswith("prepare: error:") and match in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
