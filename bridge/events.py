"""Change events and their positions.

A position `(commit_lsn, seq)` is unique and totally ordered: `commit_lsn` is the LSN of the
transaction's COMMIT as decoding reports it, `seq` the 0-based index of the change inside it.
An LSN alone is not unique (one multi-row INSERT shares a WAL record), so nothing resumes or
deduplicates on an LSN alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bridge.errors import BridgeError
from bridge.lsn import Lsn
from bridge.relation import Relation


class Op(StrEnum):
    """The envelope's `op` letter."""

    INSERT = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # snapshot
    TRUNCATE = "t"


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where an event stands in the change stream. Orders by commit LSN, then seq."""

    commit_lsn: Lsn
    seq: int

    def __str__(self) -> str:
        return f"{self.commit_lsn}#{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse `16/B374D848#12` (the form `str()` prints and Kafka headers carry)."""
        lsn, sep, seq = text.partition("#")
        if not sep:
            raise BridgeError(f"not a position: {text!r} (expected LSN#seq)")
        return cls(Lsn.parse(lsn), int(seq))

    def to_tuple(self) -> tuple[int, int]:
        return (self.commit_lsn.value, self.seq)


ZERO_POSITION = Position(Lsn(0), -1)

Row = tuple[Any, ...]
"""Column values in the relation's column order, each in its Avro-native Python form
(see README, type mapping); `None` for NULL and for unchanged TOAST values."""


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One typed change, positioned. `before`/`after` are `None` where the op has none."""

    relation: Relation
    op: Op
    position: Position
    xid: int
    commit_ts_us: int | None  # microseconds since the Unix epoch, UTC
    before: Row | None
    after: Row | None
    unchanged: tuple[str, ...] = ()
    snapshot: bool = False
