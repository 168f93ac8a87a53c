"""The outputs of stages sample (reports/sample.json) and compare_samplers (reports/samplers.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
class FidScore(Record):
    fid: float
    fid_floor: float


@dataclass(frozen=True, kw_only=True)
class DistanceScores(Record):
    swd: float
    swd_floor: float
    mmd: float
    mmd_floor: float


@dataclass(frozen=True, kw_only=True)
class SamplerRun(Record):
    """One row of reports/samplers.json: a sampler at an NFE budget (sbm.eval.sweep.compare_samplers).
    fid: with an evaluator (labelled data); distances: when every sample is finite."""

    sampler: str
    budget: int | None  # None: ode_adaptive, which sets its own NFE
    nfe: int
    steps: int | None
    seconds_per_sample: float
    non_finite: int
    fid: FidScore | None = inline(optional=True)
    distances: DistanceScores | None = inline(optional=True)

    def quality(self, metric: Literal["fid", "swd"]) -> tuple[float | None, float | None]:
        """(value, floor) of `metric` (None where the run has none)."""
        score = self.fid if metric == "fid" else self.distances
        if score is None:
            return None, None
        return (score.fid, score.fid_floor) if metric == "fid" else (score.swd, score.swd_floor)


@dataclass(frozen=True, kw_only=True)
class SamplerComparison(Record):
    """reports/samplers.json (stage compare_samplers): n samples per run; metric: what the plot shows."""

    n: int
    metric: Literal["fid", "swd"]
    rows: tuple[SamplerRun, ...]

    def points(self) -> list[tuple[str, int, float | None, float | None]]:
        """(line, NFE, value, floor) of each run for sbm.pipeline.plots.plot_quality_vs_nfe."""
        return [(r.sampler, r.nfe, *r.quality(self.metric)) for r in self.rows]
