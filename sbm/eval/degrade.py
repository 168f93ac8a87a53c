"""The degradation ladder: what a quality metric can see, measured on real images.

A metric that ranks generative models must move for the defects a person sees. The ladder
degrades real *training* images x (N, C, H, W) in data range [lo, hi] on purpose, in families
of increasing severity, and scores each degraded set against the test split exactly as samples
are scored (`sbm.eval.quality.QualityMeter`, same n as the floor):

    blur       Gaussian blur of σ px (separable kernel of radius ⌈3σ⌉, edges replicated)
    noise      x + σ (hi − lo)/2 ε, ε ~ N(0, I), clipped to [lo, hi] (σ in units of a [−1, 1] range)
    contrast   m + c (x − m), m = each image's mean value, clipped to [lo, hi]
    shift      translate right by p px (the left column replicated)
    s&p        salt and pepper: each value set to lo or hi with probability p/2 each

`LADDER` lists the steps; `BAR` the requirement a calibrated metric meets (the project's issue
#14): FID rises strictly with severity within every family, blur σ 0.5 and contrast × 0.8 score
at least 3× the floor, noise σ 0.2 at least 2×. `calibrate_metric` returns the table and
`bar_failures` what the table misses of the bar. The ladder is a yardstick only: no
evaluator is trained on degraded data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sbm.eval.quality import QualityMeter


@dataclass(frozen=True)
class Step:
    """One rung: `family` at `severity` (its own unit: px, σ, contrast factor, probability)."""

    family: str
    severity: float

    @property
    def label(self) -> str:
        unit = {"blur": "σ = {} px", "noise": "σ = {}", "contrast": "× {}", "shift": "{} px", "s&p": "p = {}"}
        return f"{self.family} {unit[self.family].format(f'{self.severity:g}')}"


#: the rungs, mildest first within each family (contrast: a smaller factor is more severe)
LADDER = (*(Step("blur", s) for s in (0.3, 0.5, 0.8)), *(Step("noise", s) for s in (0.05, 0.1, 0.2)),
          *(Step("contrast", c) for c in (0.9, 0.8)), Step("shift", 1), *(Step("s&p", p) for p in (0.02, 0.05, 0.1)))

#: (step, least FID / floor) the calibrated metric must reach, besides monotonicity in every family
BAR = ((Step("blur", 0.5), 3.0), (Step("contrast", 0.8), 3.0), (Step("noise", 0.2), 2.0))


def blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of σ px, (N, C, H, W) -> same; the kernel is normalised, edges replicated."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).repeat(x.shape[1], 1, 1, 1)  # (C, 1, 1, 2r+1): one kernel per channel
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k, groups=x.shape[1])
    return F.conv2d(x, k.transpose(2, 3), groups=x.shape[1])


def degrade(step: Step, x: Tensor, value_range, generator: torch.Generator) -> Tensor:
    """x (N, C, H, W) in [lo, hi] degraded by `step`; random families draw from `generator`."""
    lo, hi = (float(v) for v in value_range)
    s = step.severity
    if step.family == "blur":
        return blur(x, s)
    if step.family == "noise":
        return (x + s * (hi - lo) / 2 * torch.randn(x.shape, generator=generator, dtype=x.dtype)).clamp(lo, hi)
    if step.family == "contrast":
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (m + s * (x - m)).clamp(lo, hi)
    if step.family == "shift":
        p = int(s)
        return F.pad(x, (p, 0, 0, 0), mode="replicate")[..., : x.shape[-1]]
    if step.family == "s&p":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
        return torch.where(u < s / 2, torch.full_like(x, lo), torch.where(u < s, torch.full_like(x, hi), x))
    raise ValueError(f"unknown degradation family {step.family!r}")


def calibrate_metric(meter: QualityMeter, train: Tensor, n: int, value_range, seed: int = 0) -> list[dict]:
    """Every `LADDER` step applied to n real training images (the floor's seeded subset) and
    scored by `meter` (against its real set, the test split). train: (N, C, H, W).
    -> rows {family, severity, label, <metrics>, fid_ratio}, the undegraded floor first
    (family "none")."""
    if train.dim() != 4:
        raise ValueError(f"the degradation ladder needs images (N, C, H, W); got {tuple(train.shape)}")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(meter.seed))[:n]
    x, g = train[pick], torch.Generator().manual_seed(int(seed))
    floor = meter.floor(train, n)
    rows = [{"family": "none", "severity": 0.0, "label": "none (the floor)", **floor, "fid_ratio": 1.0}]
    for step in LADDER:
        scores = meter(degrade(step, x, value_range, g))
        rows.append({"family": step.family, "severity": step.severity, "label": step.label, **scores,
                     "fid_ratio": scores["fid"] / floor["fid"]})
    return rows


def bar_failures(rows: list[dict]) -> list[str]:
    """What a `calibrate_metric` table misses of `BAR` (empty: the bar is met)."""
    floor = next(r["fid"] for r in rows if r["family"] == "none")
    failures = []
    for family in dict.fromkeys(r["family"] for r in rows if r["family"] != "none"):
        steps = [r for r in rows if r["family"] == family]  # mildest first (LADDER's order)
        fids = [floor] + [r["fid"] for r in steps]
        for before, after, r in zip(fids, fids[1:], steps):
            if not after > before:
                failures.append(f"{r['label']}: FID {after:.4g} does not rise above {before:.4g}")
    for step, least in BAR:
        row = next((r for r in rows if (r["family"], r["severity"]) == (step.family, step.severity)), None)
        if row is None:
            failures.append(f"{step.label}: not in the table")
        elif row["fid"] < least * floor:
            failures.append(f"{step.label}: FID {row['fid']:.4g} = {row['fid'] / floor:.2f}× the floor, "
                            f"needs {least:g}×")
    return failures
