"""Write a small synthetic 32×32 RGB image data set, offline, for tests and smoke runs.

    python scripts/make_synthetic_rgb.py OUT_DIR [--n 256] [--size 32] [--seed 0]

OUT_DIR is a `datasets.Dataset` written with `save_to_disk`, shaped like the hub's cifar10:
column "img" (`datasets.Image`, 8-bit RGB PNG) and "label" (int64, 0..9), so
profiles/synthetic_rgb32.yaml reads it exactly as profiles/cifar10.yaml reads CIFAR-10
(data.name = hf, data.hf.path = OUT_DIR). No network is used.

Example i has label k = i mod 10. Each image is a vertical colour gradient (two random
colours) with one filled shape of class k's kind and colour drawn on it at a random position
and size: kinds disc, square, triangle, ring, cross, horizontal bar, vertical bar, diamond,
checker patch, diagonal stripe (k = 0..9); the shape's colour is class k's hue (k/10 of the
colour wheel), jittered. Seeded by --seed: the same arguments give the same files.
"""

from __future__ import annotations

import argparse
import colorsys
from pathlib import Path

import numpy as np

N_CLASSES = 10


def _mask(kind: int, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """(size, size) bool: the pixels of shape `kind` centred at (cx, cy) with radius r."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = xx - cx, yy - cy
    d = np.hypot(dx, dy)
    inside = {
        0: d <= r,                                                    # disc
        1: (np.abs(dx) <= r) & (np.abs(dy) <= r),                     # square
        2: (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2),     # triangle (apex up)
        3: (d <= r) & (d >= 0.55 * r),                                # ring
        4: ((np.abs(dx) <= r / 3) | (np.abs(dy) <= r / 3)) & (np.abs(dx) <= r) & (np.abs(dy) <= r),  # cross
        5: (np.abs(dx) <= r) & (np.abs(dy) <= r / 3),                 # horizontal bar
        6: (np.abs(dx) <= r / 3) & (np.abs(dy) <= r),                 # vertical bar
        7: np.abs(dx) + np.abs(dy) <= r,                              # diamond
        8: (np.abs(dx) <= r) & (np.abs(dy) <= r) & (((xx // 4) + (yy // 4)) % 2 == 0),  # checker patch
        9: (np.abs(dx - dy) <= r / 3) & (np.abs(dx) <= r) & (np.abs(dy) <= r),  # diagonal stripe
    }
    return inside[kind]


def synthetic_images(n: int = 256, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """images (n, size, size, 3) uint8 and labels (n,) int64 (see the module docstring)."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % N_CLASSES
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]  # (size, 1, 1): top to bottom
    for i, k in enumerate(labels):
        top, bottom = rng.uniform(0.0, 0.6, 3), rng.uniform(0.0, 0.6, 3)
        img = (1 - ramp) * top + ramp * bottom  # (size, 1, 3) → broadcast over columns
        img = np.broadcast_to(img, (size, size, 3)).copy()
        r = rng.uniform(0.18, 0.32) * size
        cx, cy = rng.uniform(r, size - r, 2)
        hue = (k / N_CLASSES + rng.uniform(-0.02, 0.02)) % 1.0
        colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0)))
        img[_mask(int(k), size, cx, cy, r)] = colour
        images[i] = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return images, labels


def write(out_dir: str | Path, n: int = 256, size: int = 32, seed: int = 0) -> Path:
    """Write the data set to out_dir with `datasets.Dataset.save_to_disk`; returns out_dir."""
    import datasets
    from PIL import Image

    images, labels = synthetic_images(n, size, seed)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"img": [Image.fromarray(a, mode="RGB") for a in images],
                                     "label": labels.tolist()}, features=features)
    out = Path(out_dir)
    ds.save_to_disk(str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n", type=int, default=256, help="number of images")
    ap.add_argument("--size", type=int, default=32, help="height = width in pixels")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.n < 1 or args.size < 8:
        ap.error("--n must be >= 1 and --size >= 8")
    write(args.out_dir, args.n, args.size, args.seed)
    print(f"make_synthetic_rgb: {args.n} RGB {args.size}x{args.size} images, labels 0..{N_CLASSES - 1} -> {args.out_dir}")


if __name__ == "__main__":
    main()
