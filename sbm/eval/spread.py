"""Mean ± sd over sampling seeds: how the comparison tables summarise a run drawn once per seed.

FID at a few hundred samples moves by several points between sampling seeds, so every run of
the comparison tables (samplers × NFE budgets, guidance scales, CFG weights, distillation
rows) is drawn with seeds s, s+1, …, s+k−1 (params `seed` and `eval.seeds` = k) and each
score is reported over the k values v₁…v_k as::

    mean = (1/k) Σ vᵢ,    sd = √( Σ (vᵢ − mean)² / (k − 1) )   (ddof = 1; none for k = 1)

Pure Python (no torch): the typed outputs of sbm.pipeline read it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def seed_range(seed: int, count: int) -> tuple[int, ...]:
    """The sampling seeds of a comparison run: (seed, seed + 1, …, seed + count − 1); count >= 1."""
    if count < 1:
        raise ValueError(f"eval.seeds = {count}: a run needs at least one sampling seed")
    return tuple(range(int(seed), int(seed) + int(count)))


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sd) of k >= 1 values, sd with ddof = 1 (None for k = 1); NaN in, NaN out."""
    k = len(values)
    if k == 0:
        raise ValueError("mean_sd: no values")
    mean = math.fsum(values) / k
    if k == 1:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (k - 1))


def summary(values: Sequence[float]) -> dict:
    """{"mean", "sd" (absent for one value), "values"} of k per-seed values (in seed order): the JSON
    of `sbm.pipeline.outputs.seeds.OverSeeds`."""
    mean, sd = mean_sd(values)
    return {"mean": mean, **({"sd": sd} if sd is not None else {}), "values": [float(v) for v in values]}
