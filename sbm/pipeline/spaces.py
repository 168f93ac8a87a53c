"""What a model of the score model's space trains on: the scaled latents (latent space) or the
prepared split (pixel space), read from the prepared data and the train_vae stage's space."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from sbm.core.tensor import max_pairwise_distance
from sbm.latent.space import check_space, load_latents
from sbm.pipeline.prepared import load_meta, load_split


def training_set(data_dir: str | Path, space_dir: str | Path, space: str, split: str
                 ) -> tuple[Tensor, Tensor | None, dict]:
    """What a model of the score model's space trains on -> (x (N, ...), labels (N,) or None,
    meta): the scaled latents of `split` (latent space) or the prepared split itself (pixel),
    with the prepared data's meta updated to the space (shape, dim, sigma_max of that split,
    what the noise processes are built from). `space` is params score.space, checked against
    the directory."""

    info = check_space(space_dir, space)
    meta = load_meta(data_dir)
    x, y = load_split(data_dir, split)
    if info["space"] == "latent":
        x = load_latents(space_dir, split)
        if len(x) != len(y if y is not None else x):
            raise ValueError(f"{space_dir}: {len(x)} latents for the {split} split, {data_dir} has {len(y)} labels; "
                             "rerun the train_vae stage")
        meta = {**meta, "shape": info["shape"], "dim": x[0].numel(), "sigma_max": max_pairwise_distance(x)}
    return x, y, meta


