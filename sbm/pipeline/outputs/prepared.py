"""reports/prepare.json: the prepared data's meta (stage prepare)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sbm.pipeline.records import Record


@dataclass(frozen=True, kw_only=True)
class PreparedData(Record):
    """reports/prepare.json: the prepared data's meta.json without the mixture (stage prepare)."""

    name: str
    shape: tuple[int, ...]
    dim: int
    n_train: int
    n_test: int
    value_range: tuple[float, ...]
    n_levels: int | None
    data_range: tuple[float, ...] | None
    sigma_max: float
    n_classes: int | None
    seed: int

    @classmethod
    def from_meta(cls, meta: Mapping) -> PreparedData:
        """From sbm.pipeline.data.prepare's meta (its "gmm" entry left out: too bulky for a metrics file)."""
        return cls.from_json({k: v for k, v in meta.items() if k != "gmm"}, file="prepare meta")

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3
