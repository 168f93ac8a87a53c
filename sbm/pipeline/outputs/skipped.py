"""What a stage writes when it had nothing to do (data without labels), in place of its output."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sbm import io
from sbm.pipeline.records import Record, key


@dataclass(frozen=True, kw_only=True)
class SkippedTraining(Record):
    """A training stage with nothing to learn (data without labels): {"trained": false, "skipped": reason}.
    train_evaluator writes it without a reason (its evaluator directory's none.json holds it)."""

    _CONST: ClassVar[dict] = {"trained": False}
    reason: str | None = key("skipped", omit=True)


@dataclass(frozen=True, kw_only=True)
class SkippedEvaluation(Record):
    """The detail file of an evaluation stage that was skipped: {"skipped": reason, "rows": []};
    its metrics file is empty ({}: `write_metrics`)."""

    reason: str = key("skipped")
    rows: tuple[Any, ...] = ()

    def __post_init__(self):
        if self.rows:
            raise ValueError(f"a skipped evaluation has no rows, got {len(self.rows)}")

    @classmethod
    def _matches(cls, d: Mapping) -> bool:
        return "skipped" in d

    def write_metrics(self, path: str | Path) -> None:
        """The metrics file of a skipped evaluation: {}."""
        io.write_json(path, {})
