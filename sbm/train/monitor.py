"""What a training run shows at its checkpoints: samples of the EMA model and their quality, through dvclive.

`Monitor` is the `on_checkpoint` hook of `sbm.train.loop.Trainer`. At checkpoint step k it
draws samples from the model holding the EMA weights (θ_ema of the loop's eq. (1)) and logs, at
dvclive step k in the run's live directory:

- ``plots/images/samples/{k:06d}.png``: a picture of the first `n_grid` samples, one file per
  checkpoint (dvclive's step-image pattern; DVC shows the folder as an image per step);
- ``plots/metrics/quality/<name>.tsv`` (columns step, <name>): the metrics `measure` returns for
  the first `n_quality` samples (e.g. FID, KID, precision, recall), one row per checkpoint, so
  `dvc plots show` draws quality against step next to the loss; `floor` values (what real data
  scores at the same n) go to the summary only (``metrics.json``: ``quality/<name>_floor``).

What to draw, how to picture and how to measure are given (`sbm.pipeline.monitoring` builds them
from params `monitor` for a stage); this module only logs, and knows which steps it has logged
(`logged`), so the loop can call it again at a resumed step without duplicating a row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

QUALITY = "quality"  # dvclive metric prefix: plots/metrics/quality/<name>.tsv
SAMPLES = "samples"  # dvclive image folder: plots/images/samples/<step>.png


def image_name(step: int) -> str:
    """The dvclive image name of step `step`'s picture (plots/images/samples/000100.png)."""
    return f"{SAMPLES}/{step:06d}.png"


def images_dir(live_dir: str | Path) -> Path:
    """A live directory's plots/images, created: the folder a monitored stage declares as a DVC
    plot exists even when nothing was pictured (monitor off, data without pictures, a skipped stage)."""
    path = Path(live_dir) / "plots" / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _steps(tsv: Path) -> set[int]:
    """The steps of a dvclive TSV's rows (its column `step`)."""
    header, *rows = tsv.read_text().splitlines() or [""]
    col = header.split("\t").index("step") if "step" in header.split("\t") else None
    return set() if col is None else {int(float(r.split("\t")[col])) for r in rows if r.strip()}


@dataclass
class Monitor:
    """The loop's `on_checkpoint(model, step, live)` (module docstring).

    draw(model, n) -> n samples (n, ...) in data space from the EMA model (deterministic: the
    same weights give the same samples; None: an inactive monitor); picture(x (m, ...)) -> what
    `Live.log_image` takes (an (H, W, 3) uint8 array or a matplotlib figure), None: no picture for
    such data; measure(x) -> {name: float} of m samples; floor: {name: float} of real data at
    n_quality (summary only).
    `seconds` accumulates the time spent (the loop does not count it as training time)."""

    draw: Callable[[nn.Module, int], Tensor] | None
    picture: Callable[[Tensor], object] | None = None
    measure: Callable[[Tensor], dict[str, float]] | None = None
    n_grid: int = 64
    n_quality: int = 0
    floor: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.draw is None:  # an inactive monitor (params monitor.enabled false)
            self.n_grid = self.n_quality = 0
        if self.picture is None:
            self.n_grid = 0
        if self.measure is None:
            self.n_quality = 0
        if self.n_grid < 0 or self.n_quality < 0:
            raise ValueError(f"Monitor: n_grid = {self.n_grid}, n_quality = {self.n_quality}: must be >= 0")

    @property
    def active(self) -> bool:
        """Whether there is anything to show (a picture or metrics)."""
        return self.n_grid > 0 or self.n_quality > 0

    def logged(self, plots_dir: str | Path, step: int) -> bool:
        """Whether step `step` is already shown in a live directory's plots_dir: its picture exists
        (written last), or, without pictures, its quality rows do."""
        plots = Path(plots_dir)
        if self.n_grid:
            return (plots / "images" / image_name(step)).is_file()
        tsvs = sorted((plots / "metrics" / QUALITY).glob("*.tsv"))
        return bool(tsvs) and all(step in _steps(t) for t in tsvs)

    @torch.no_grad()
    def __call__(self, model: nn.Module, step: int, live) -> None:
        """Draw max(n_grid, n_quality) samples from `model` and log them at live step `step`
        (nothing when `logged` already); non-finite samples are reported and not measured."""
        if not self.active or self.logged(live.plots_dir, step):
            return
        t0 = time.perf_counter()
        x = self.draw(model, max(self.n_grid, self.n_quality)).detach().float().cpu()
        live.step = step
        if self.n_quality:
            q = x[: self.n_quality]
            bad = int((~torch.isfinite(q.flatten(1))).any(1).sum())
            if bad:
                print(f"monitor: step {step}: {bad} of {len(q)} samples are not finite; no quality logged")
            else:
                for name, value in self.measure(q).items():
                    live.log_metric(f"{QUALITY}/{name}", float(value))
                for name, value in self.floor.items():
                    live.log_metric(f"{QUALITY}/{name}_floor", float(value), plot=False)
        if self.n_grid:
            live.log_image(image_name(step), self.picture(x[: self.n_grid].nan_to_num()))
        self.seconds += time.perf_counter() - t0
