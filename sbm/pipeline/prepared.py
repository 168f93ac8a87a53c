"""Reading the prepared data directory that stage prepare writes (`sbm.pipeline.data.prepare`):
meta.json and a Hugging Face dataset per split (x (N, ...) float32 in the data's range, and
labels (N,) int64, -1 when the data has none). Every stage after prepare reads its data here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sbm.io import read_json

SPLITS = ("train", "test")


def load_meta(data_dir: str | Path) -> dict:
    """meta.json of a prepared directory (FileNotFoundError naming the path if absent)."""
    d = Path(data_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no prepared data directory (run the prepare stage)")
    if not (d / "meta.json").is_file():
        raise FileNotFoundError(f"{d / 'meta.json'}: missing; {d} is not a prepared data directory")
    return read_json(d / "meta.json")


def sample_format(meta: dict, *, quantize: bool) -> dict:
    """`sbm.latent.vae.decode_samples`' keywords for samples of the data `meta` describes (meta.json or a
    checkpoint's data_range / n_levels / data_shape): images (C, H, W) clamped to their value range and,
    with `quantize` (params `sampler.quantize`) and quantised data (n_levels), rounded to its grid;
    vectors (2-D toys, continuous) as drawn."""
    shape = meta.get("shape", meta.get("data_shape"))
    lo_hi = meta.get("value_range", meta.get("data_range"))
    if shape is None or len(shape) != 3 or lo_hi is None:
        return {}
    n_levels = meta.get("n_levels") if quantize else None
    return {"data_range": lo_hi, "n_levels": n_levels}


def load_split(data_dir: str | Path, split: str) -> tuple[Tensor, Tensor | None]:
    """x (N, *shape) float32 and labels (N,) int64, or None when the data has no labels."""
    import datasets

    meta, d = load_meta(data_dir), Path(data_dir) / "dataset"
    if split not in SPLITS:
        raise ValueError(f"split = {split!r}: must be one of {', '.join(SPLITS)}")
    if not (d / split).is_dir():
        raise FileNotFoundError(f"{d / split}: missing split {split!r} of the prepared data")
    ds = datasets.load_from_disk(str(d / split)).with_format("numpy")
    x = torch.from_numpy(np.asarray(ds["x"], dtype=np.float32)).reshape(-1, *meta["shape"])
    y = torch.from_numpy(np.asarray(ds["label"], dtype=np.int64))
    return x, (None if bool((y == -1).all()) else y)
