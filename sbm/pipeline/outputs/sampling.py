"""The outputs of stages sample (reports/sample.json) and compare_samplers (reports/samplers.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sbm.pipeline.outputs.seeds import OverSeeds, Quality, check_seeds
from sbm.pipeline.records import Record, inline


@dataclass(frozen=True, kw_only=True)
class SampleSummary(Record):
    """reports/sample.json (stage sample; also the metadata of data/samples/samples.safetensors)."""

    sampler: str
    space: str
    n: int
    nfe: int
    wall_time_s: float
    seconds_per_sample: float


@dataclass(frozen=True, kw_only=True)
class DistanceScores(Record):
    """SW₂ and MMD² of a run's samples against the test split over the sampling seeds, next to their
    floor (real training points against the same test points: one value)."""

    swd: OverSeeds
    swd_floor: float
    mmd: OverSeeds
    mmd_floor: float


@dataclass(frozen=True, kw_only=True)
class SamplerRun(Record):
    """One row of reports/samplers.json: a sampler at an NFE budget (sbm.eval.sweep.compare_samplers),
    drawn with every seed of the table. nfe: the most of any seed; seconds_per_sample: the mean over
    the seeds; non_finite: over all seeds. quality (FID, KID, precision, recall): with an evaluator
    (labelled data); distances: when every sample of every seed is finite."""

    sampler: str
    budget: int | None  # None: ode_adaptive, which sets its own NFE
    nfe: int
    steps: int | None
    seconds_per_sample: float
    non_finite: int
    quality: Quality | None = inline(optional=True)
    distances: DistanceScores | None = inline(optional=True)

    def score(self, metric: Literal["fid", "swd"]) -> tuple[OverSeeds | None, float | None]:
        """(value over the seeds, floor) of `metric` (None where the run has none)."""
        if metric == "fid":
            return (None, None) if self.quality is None else (self.quality.fid, self.quality.floor.fid)
        return (None, None) if self.distances is None else (self.distances.swd, self.distances.swd_floor)


@dataclass(frozen=True, kw_only=True)
class SamplerComparison(Record):
    """reports/samplers.json (stage compare_samplers): n samples per run and seed; seeds: the sampling
    seeds every run was drawn with (each score's values in this order); metric: what the plot shows."""

    n: int
    metric: Literal["fid", "swd"]
    seeds: tuple[int, ...]
    rows: tuple[SamplerRun, ...]

    def __post_init__(self):
        check_seeds(self.seeds, self.rows)

    def points(self) -> list[tuple[str, int, float | None, float | None, float | None]]:
        """(line, NFE, mean, sd, floor) of each run for sbm.pipeline.plots.plot_quality_vs_nfe."""
        out = []
        for r in self.rows:
            value, floor = r.score(self.metric)
            out.append((r.sampler, r.nfe, *((value.mean, value.sd) if value is not None else (None, None)), floor))
        return out
