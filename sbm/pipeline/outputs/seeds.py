"""What every comparison table shares: a score over the sampling seeds (`OverSeeds`: mean ± sd and
the value of each seed), FID / KID / precision / recall over the seeds next to their floor
(`Quality`), and the check that a table's scores have one value per seed (`check_seeds`).

JSON of a score over seeds k = 3 (`sbm.eval.spread.summary`; "sd" absent for one seed)::

    "fid": {"mean": 15.5, "sd": 0.81, "values": [14.9, 16.4, 15.2]}

The flat DVC metrics files hold `MeanSd` only: the mean under the key a single value had and the
sd under the same key with "_sd" (`sbm.pipeline.records.STAT`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sbm.eval.spread import mean_sd
from sbm.pipeline.records import Record, inline, key, opt


@dataclass(frozen=True, kw_only=True)
class MeanSd(Record):
    """A score summarised over the sampling seeds: mean, and sd (ddof = 1; None: one seed).

    format(v, spec): "mean ± sd", the mean in `spec` and the sd to 2 significant digits; the mean
    alone for one seed."""

    mean: float
    sd: float | None = opt()

    def summary(self) -> MeanSd:
        """Mean and sd alone (what the flat metrics files hold)."""
        return MeanSd(mean=self.mean, sd=self.sd)

    def __format__(self, spec: str) -> str:
        text = format(self.mean, spec)
        return text if self.sd is None else f"{text} ± {self.sd:.2g}"


def _close(a: float, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)


@dataclass(frozen=True, kw_only=True)
class OverSeeds(MeanSd):
    """A score over the sampling seeds: values[i] from the i-th seed of the table, and their mean and
    sd (`sbm.eval.spread.mean_sd`; checked, so a file whose summary is not that of its values is refused)."""

    values: tuple[float, ...]

    def __post_init__(self):
        if not self.values:
            raise ValueError("no values: a score over seeds needs one value per seed")
        mean, sd = mean_sd(self.values)
        if not (_close(self.mean, mean) and _close(self.sd, sd)):
            raise ValueError(f"mean {self.mean!r} and sd {self.sd!r} are not those of the values {list(self.values)} "
                             f"(mean {mean!r}, sd {sd!r})")

    @classmethod
    def of(cls, values) -> OverSeeds:
        """The score over seeds of per-seed values (k,)."""
        mean, sd = mean_sd(values)
        return cls(mean=mean, sd=sd, values=tuple(float(v) for v in values))


@dataclass(frozen=True, kw_only=True)
class QualityFloor(Record):
    """FID, KID, precision and recall of as many real training examples as a run has samples, against
    the same test split (`QualityMeter.floor`): what a perfect model scores. Real data: one value."""

    fid: float = key("fid_floor")
    kid: float = key("kid_floor")
    precision: float = key("precision_floor")
    recall: float = key("recall_floor")


@dataclass(frozen=True, kw_only=True)
class Quality(Record):
    """FID, KID, precision and recall of a run's samples against the test split over the sampling
    seeds (sbm.eval.quality.QualityMeter), next to their floor."""

    fid: OverSeeds
    kid: OverSeeds
    precision: OverSeeds
    recall: OverSeeds
    floor: QualityFloor = inline()


def check_seeds(seeds: tuple[int, ...], rows) -> None:
    """ValueError unless `seeds` are distinct and every `OverSeeds` inside `rows` (records, searched
    through their fields, tuples included) holds one value per seed."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds = {list(seeds)}: need at least one, all distinct")

    def visit(v, where: str) -> None:
        if isinstance(v, OverSeeds):
            if len(v.values) != len(seeds):
                raise ValueError(f"{where}: {len(v.values)} values for {len(seeds)} seeds {list(seeds)}")
        elif isinstance(v, Record):
            for f in dataclasses.fields(v):
                visit(getattr(v, f.name), f"{where}.{f.name}")
        elif isinstance(v, tuple):
            for i, x in enumerate(v):
                visit(x, f"{where}[{i}]")

    visit(tuple(rows), "rows")
