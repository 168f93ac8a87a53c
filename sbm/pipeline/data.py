"""Datasets for the `prepare` stage: 2-D toys with known structure, digits, Hugging Face data.

`prepare(cfg, seed, out_dir)` builds one dataset named by `cfg.name` (one builder per name
in `BUILDERS`), splits it into train/test, checks it is finite and writes::

    out_dir/dataset     datasets.DatasetDict {"train", "test"}: x = flat float32 list (dim,),
                        label = int64 (-1 where the data has no labels)
    out_dir/meta.json   shape, dim, counts, value/data range, n_levels, sigma_max, gmm, ...

`load_split(data_dir, split)` reads a split back as x (N, *shape) float32, labels (N,) or None;
images come back as (N, C, H, W).

Datasets (every random draw comes from one torch.Generator seeded with `seed`):

- gmm: `GaussianMixture(cfg.gmm).sample`, label = component; 2-D (or any D).
- swiss_roll: scikit-learn `make_swiss_roll`, the (x, z) columns divided by
  `SWISS_ROLL_SCALE` = 7 (their std is ~6.6-6.9, so the result has about unit spread);
  Gaussian noise of std `cfg.noise` in the output units; label -1.
- moons: scikit-learn `make_moons(noise=cfg.noise)`, label = moon index.
- checkerboard: exactly uniform on the 8 dark squares ((i + j) even, i, j = column/row
  index 0..3) of a 4x4 board on [-2, 2]^2 (pick a dark square, then a uniform point in it).
- digits: scikit-learn `load_digits` (bundled), 1797 grey 8x8 images with values 0..16
  (17 levels) mapped by x/16*2-1 onto [-1, 1], served as images of shape (1, 8, 8); labels 0..9.
- hf: a Hugging Face dataset by local path (`load_from_disk`) or hub name (`load_dataset`);
  `cfg.hf.column` values mapped linearly from `cfg.hf.value_range` to [-1, 1]; numbers and
  (nested) lists keep their shape. An image column (`datasets.Image`, read as PIL images
  whatever format the dataset was saved with) gives (C, H, W) arrays: `cfg.hf.channels` = 1 / 3
  converts with PIL `convert("L")` (ITU-R 601 luma) / `convert("RGB")` (null keeps the mode; only
  palette "P"/"PA" and 1-bit images are expanded to RGB/RGBA/L), then `cfg.hf.image_size` = s
  resizes to s x s with PIL bilinear (antialiased) `resize`. Setting channels or image_size for
  a column that holds no images is a ValueError. 8-bit images keep their values 0..255 (a
  resize rounds back to integers, so resized images stay on that grid): use value_range
  [0, 255] and n_levels 256. With n_levels set, the values must lie on the n_levels-point grid
  of value_range (else ValueError; null for continuous data). Examples::

      data: {name: hf, hf: {path: mnist, column: image, label_column: label,
                            value_range: [0, 255], n_levels: 256, image_size: 32}}
      data: {name: hf, hf: {path: cifar10, column: img, label_column: label,
                            value_range: [0, 255], n_levels: 256}}

Toys draw n_train + n_test fresh i.i.d. points (the first n_train are train); digits and hf
are split by a seeded permutation with `cfg.test_fraction` (n_train/n_test are ignored).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sbm.config.params import DataParams
from sbm.core.gmm import GaussianMixture
from sbm.core.tensor import finite_rows, max_pairwise_distance
from sbm.io import write_json

SWISS_ROLL_SCALE = 7.0


@dataclass
class Raw:
    """A built dataset before splitting: x (N, dim) float32 flat, y (N,) int64 (-1 = no label);
    `shape` is one example's shape (prod(shape) = dim), e.g. [2] or [C, H, W]."""

    x: Tensor
    y: Tensor
    shape: list[int]
    n_levels: int | None = None
    data_range: list[float] | None = None
    n_train: int | None = None  # toys: first n_train rows are train; None: split by test_fraction
    n_classes: int | None = None  # None: count the distinct labels
    gmm: dict | None = None


def _sk_seed(g: torch.Generator) -> int:
    """A scikit-learn random_state drawn from the torch generator (keeps one seed stream)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=g))


# --------------------------------------------------------------------------- builders


def _gmm(cfg: DataParams, g: torch.Generator) -> Raw:
    mix = GaussianMixture(cfg.gmm.weights, cfg.gmm.means, cfg.gmm.covs)
    x, y = mix.sample(cfg.n_train + cfg.n_test, generator=g)
    return Raw(x, y, [mix.dim], n_train=cfg.n_train, n_classes=mix.n_components, gmm=mix.to_dict())


def _swiss_roll(cfg: DataParams, g: torch.Generator) -> Raw:
    from sklearn.datasets import make_swiss_roll

    n = cfg.n_train + cfg.n_test
    x, _ = make_swiss_roll(n, noise=cfg.noise * SWISS_ROLL_SCALE, random_state=_sk_seed(g))
    x = torch.from_numpy(x[:, [0, 2]] / SWISS_ROLL_SCALE).float()
    return Raw(x, torch.full((n,), -1, dtype=torch.int64), [2], n_train=cfg.n_train)


def _moons(cfg: DataParams, g: torch.Generator) -> Raw:
    from sklearn.datasets import make_moons

    x, y = make_moons(cfg.n_train + cfg.n_test, noise=cfg.noise, random_state=_sk_seed(g))
    return Raw(torch.from_numpy(x).float(), torch.from_numpy(y).long(), [2], n_train=cfg.n_train)


def _checkerboard(cfg: DataParams, g: torch.Generator) -> Raw:
    n = cfg.n_train + cfg.n_test
    dark = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float64)
    cell = dark[torch.randint(0, len(dark), (n,), generator=g)]  # (n, 2) lower-left corner index
    x = cell - 2.0 + torch.rand(n, 2, generator=g, dtype=torch.float64)
    return Raw(x.float(), torch.full((n,), -1, dtype=torch.int64), [2], n_train=cfg.n_train)


def _digits(cfg: DataParams, g: torch.Generator) -> Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.data / 16.0 * 2.0 - 1.0).float()  # (1797, 64) row-major 8x8, 17 levels in [-1, 1]
    return Raw(x, torch.from_numpy(d.target).long(), [1, 8, 8], n_levels=17, data_range=[-1.0, 1.0])


def _load_hf(cfg: DataParams) -> list[tuple[str, object]]:
    """[(split name, datasets.Dataset)] from a local directory or a hub name (see module doc)."""
    import datasets

    h, key = cfg.hf, "data.hf.path"
    local = Path(h.path).expanduser()
    if local.is_dir():
        try:
            ds = datasets.load_from_disk(str(local))
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{key} = {h.path!r}: not a directory written by save_to_disk ({err})") from None
    elif local.exists() or h.path.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"{key} = {h.path!r}: no such directory")
    else:
        try:
            ds = datasets.load_dataset(h.path, h.name, split=None if h.split == "all" else h.split)
        except Exception as err:  # the hub raises many kinds; all mean "cannot load this"
            raise FileNotFoundError(
                f"{key} = {h.path!r}: not a local directory and not loadable from the Hugging Face hub "
                f"({type(err).__name__}: {err}); the default pipeline needs no network: point "
                "data.hf.path at a save_to_disk directory or pick a built-in data.name") from None
    if not isinstance(ds, datasets.DatasetDict):
        return [(h.split, ds)]
    if h.split == "all":
        return list(ds.items())
    if h.split not in ds:
        raise ValueError(f"data.hf.split = {h.split!r}: {h.path} has splits {', '.join(ds)} (or use 'all')")
    return [(h.split, ds[h.split])]


def _column(ds, col: str, where: str) -> list:
    """The values of column `col` as Python objects (an image column decodes to PIL images)."""
    if col not in ds.column_names:
        raise ValueError(f"{where}: no column {col!r}; available columns: {', '.join(ds.column_names)}")
    return list(ds.with_format(None)[col])


def _image(img, channels: int | None, size: int | None) -> np.ndarray:
    """One PIL image -> (C, H, W) array in its own dtype: converted to "L" (C = 1) / "RGB" (C = 3)
    when channels is set (palette and 1-bit images to RGB(A) / L even when it is null), then
    resized to size x size, bilinear, when size is set."""
    from PIL import Image

    mode = {1: "L", 3: "RGB"}.get(channels) or {"P": "RGB", "PA": "RGBA", "1": "L"}.get(img.mode)
    if mode and img.mode != mode:
        img = img.convert(mode)
    if size and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    a = np.asarray(img)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _to_array(values: list, where: str, shape: tuple | None,
              channels: int | None = None, size: int | None = None) -> np.ndarray:
    """Examples -> (N, *shape) float64; PIL images -> (N, C, H, W) via `_image(channels, size)`.

    Checks numeric, same shape, finite; channels/size set for a non-image value is a ValueError."""
    rows = []
    for i, v in enumerate(values):
        if hasattr(v, "getbands"):  # a PIL image
            v = _image(v, channels, size)
        elif channels is not None or size is not None:
            key, val = ("data.hf.channels", channels) if channels is not None else ("data.hf.image_size", size)
            raise ValueError(f"{key} = {val}: {where} row {i} is a {type(v).__name__}, not an image; "
                             "image_size and channels apply to image columns only (set them to null)")
        try:
            a = np.asarray(v)
        except ValueError:
            raise ValueError(f"{where} row {i}: a ragged nested list (its sub-lists differ in length)") from None
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{where} row {i}: non-numeric value (dtype {a.dtype}): {str(v)[:60]}")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            hint = "; set data.hf.image_size / data.hf.channels" if hasattr(values[i], "getbands") else ""
            raise ValueError(f"{where}: examples of differing shapes: row {i} is {list(a.shape)}, "
                             f"earlier rows {list(shape)}{hint}")
        rows.append(a.astype(np.float64))
    if not rows:
        raise ValueError(f"{where}: no examples")
    x = np.stack(rows)
    _check_finite(torch.from_numpy(x.reshape(len(x), -1)), where)
    return x


def _off_grid(x: np.ndarray, lo: float, step: float, chunk: int = 4096) -> float:
    """max |k − round(k)| over x (N, D), k = (x − lo)/step the grid index (row chunks: no N×D temporaries)."""
    off = 0.0
    for i in range(0, len(x), chunk):
        k = (x[i:i + chunk] - lo) / step
        off = max(off, float(np.abs(k - np.round(k)).max()))
    return off


def _hf(cfg: DataParams, g: torch.Generator) -> Raw:
    """cfg.hf -> Raw: x (N, prod(shape)) on [-1, 1] (shape as stored, images (C, H, W)), labels or -1."""
    h = cfg.hf
    xs, ys, shape = [], [], None
    for split, ds in _load_hf(cfg):
        where = f"data.hf {h.path!r} split {split!r} column {h.column!r}"
        x = _to_array(_column(ds, h.column, f"data.hf {h.path!r} split {split!r}"), where, shape,
                      h.channels, h.image_size)
        shape = x.shape[1:]
        xs.append(x.reshape(len(x), -1))
        if h.label_column:
            lab = _to_array(_column(ds, h.label_column, where), f"{where} labels", ())
            if (lab != np.round(lab)).any() or (lab < 0).any():
                raise ValueError(f"{where} labels {h.label_column!r}: must be integer class indices >= 0")
            ys.append(lab.astype(np.int64))
    x = np.concatenate(xs)
    lo, hi = h.value_range
    if x.min() < lo or x.max() > hi:
        raise ValueError(f"data.hf.value_range = {h.value_range}: the data spans [{x.min():g}, {x.max():g}]; "
                         "set value_range to the range the values are drawn from")
    if h.n_levels is not None and (off := _off_grid(x, lo, (hi - lo) / (h.n_levels - 1))) > 1e-6:
        raise ValueError(f"data.hf.n_levels = {h.n_levels}: values are off the {h.n_levels}-point grid of "
                         f"value_range {h.value_range} (by up to {off:.3g} steps); fix n_levels/value_range, "
                         "or set n_levels to null for continuous data")
    x = torch.from_numpy((x - lo) / (hi - lo) * 2.0 - 1.0).float()
    y = torch.from_numpy(np.concatenate(ys)) if ys else torch.full((len(x),), -1, dtype=torch.int64)
    return Raw(x, y, list(shape), n_levels=h.n_levels, data_range=[-1.0, 1.0])


BUILDERS = {"gmm": _gmm, "swiss_roll": _swiss_roll, "moons": _moons,
            "checkerboard": _checkerboard, "digits": _digits, "hf": _hf}


# --------------------------------------------------------------------------- checks and stats


def _check_finite(x: Tensor, where: str) -> None:
    """Raise ValueError naming the count and first rows of non-finite entries of x (N, D)."""
    ok = finite_rows(x)
    if not ok.all():
        rows = (~ok).nonzero().flatten().tolist()
        raise ValueError(f"{where}: {int((~torch.isfinite(x)).sum())} NaN/inf values in {len(rows)} rows "
                         f"(rows {rows[:10]}{' ...' if len(rows) > 10 else ''})")


# --------------------------------------------------------------------------- prepare / load


def prepare(cfg: DataParams, seed: int, out_dir: str | Path) -> dict:
    """Build `cfg.name`, split, validate, write out_dir/dataset + out_dir/meta.json; return meta."""
    import datasets

    g = torch.Generator().manual_seed(seed)
    raw = BUILDERS[cfg.name](cfg, g)
    n = len(raw.x)
    if raw.n_train is None:  # a fixed dataset: our own seeded split
        n_test = min(max(1, round(n * cfg.test_fraction)), n - 1)
        perm = torch.randperm(n, generator=g)
        idx = {"train": perm[n_test:], "test": perm[:n_test]}
    else:
        idx = {"train": torch.arange(raw.n_train), "test": torch.arange(raw.n_train, n)}
    parts = {s: (raw.x[i], raw.y[i]) for s, i in idx.items()}
    for s, (x, _) in parts.items():
        _check_finite(x, f"data {cfg.name!r} split {s!r}")
    classes = raw.y[raw.y >= 0].unique().tolist()  # sorted
    if raw.n_classes is None and classes != list(range(len(classes))):
        raise ValueError(f"data {cfg.name!r}: labels must be class indices 0..K-1, got {classes[:20]}")
    n_classes = raw.n_classes or len(classes) or None
    xt = parts["train"][0]
    meta = {
        "name": cfg.name, "shape": raw.shape, "dim": math.prod(raw.shape),
        "n_train": len(xt), "n_test": len(parts["test"][0]),
        "value_range": [float(xt.min()), float(xt.max())], "n_levels": raw.n_levels,
        "data_range": raw.data_range, "sigma_max": max_pairwise_distance(xt),
        "gmm": raw.gmm, "n_classes": n_classes, "seed": seed,
    }
    features = datasets.Features({"x": datasets.List(datasets.Value("float32"), length=meta["dim"]),
                                  "label": datasets.Value("int64")})
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({"x": x.numpy(), "label": y.numpy()}, features=features)
                               for s, (x, y) in parts.items()})
    out = Path(out_dir)
    tmp, final = out / ".dataset.tmp", out / "dataset"
    shutil.rmtree(tmp, ignore_errors=True)
    dd.save_to_disk(str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    write_json(out / "meta.json", meta)
    return meta


