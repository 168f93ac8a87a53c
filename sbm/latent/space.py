"""The space directory of stage train_vae (data/latent), read without the autoencoder.

space.json says where the score model lives: `pixel` (the data itself: shape = data_shape)
or `latent` (the VAE's scaled latents z_s = s·z: shape = the latent shape, and the scale s);
a latent directory also holds vae.safetensors and latents.safetensors (the scaled latents of
the train and test splits). Writing it and loading its VAE is `sbm.latent.vae`'s.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from sbm import io

SPACE_FILE = "space.json"
VAE_FILE = "vae.safetensors"
LATENTS_FILE = "latents.safetensors"


def read_space(space_dir: str | Path) -> dict:
    """space.json of a space directory (FileNotFoundError naming what is missing)."""
    path = Path(space_dir) / SPACE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {space_dir} is not a space directory (run the train_vae stage)")
    info = io.read_json(path)
    if info.get("space") not in ("latent", "pixel"):
        raise io.CheckpointError(f"{path}: space = {info.get('space')!r}; expected 'latent' or 'pixel'")
    return info


def check_space(space_dir: str | Path, expected: str) -> dict:
    """read_space, and a ValueError if it is not params `score.space` (a stale directory)."""
    info = read_space(space_dir)
    if info["space"] != expected:
        raise ValueError(f"score.space = {expected!r}, but {space_dir} holds a {info['space']!r} space; "
                         "rerun the train_vae stage (dvc repro) with the current params")
    return info


def load_latents(space_dir: str | Path, split: str) -> Tensor:
    """Scaled latents z_s = s·z of `split` (train | test), (N, *latent shape)."""
    tensors, _ = io.load_tensors(Path(space_dir) / LATENTS_FILE)
    if split not in tensors:
        raise io.CheckpointError(f"{Path(space_dir) / LATENTS_FILE}: no split {split!r} (holds {', '.join(tensors)})")
    return tensors[split]
