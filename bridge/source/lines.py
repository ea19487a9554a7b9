"""The typed lines of test_decoding output, and how a line's kind is told (the one place that does).

Values only: `parse_line` (`bridge.source.test_decoding`) builds them; the transaction assembler
(`bridge.source.transactions`) and the SQL capture ask `line_kind` which kind a line is, without
parsing it, so BEGIN/COMMIT/message are recognised in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "UNCHANGED",
    "BeginLine",
    "ChangeLine",
    "CommitLine",
    "Line",
    "LineKind",
    "MessageLine",
    "RawTuple",
    "RawValue",
    "TruncateLine",
    "Unchanged",
    "line_kind",
]


class Unchanged:
    """The type of `UNCHANGED`: a TOAST value the change did not carry (`unchanged-toast-datum`).

    A singleton: `Unchanged()` returns `UNCHANGED`; compare with `is`.
    """

    __slots__ = ()
    _instance: Unchanged | None = None

    def __new__(cls) -> Unchanged:
        inst = cls._instance
        if inst is None:
            inst = cls._instance = super().__new__(cls)
        return inst

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> tuple[type[Unchanged], tuple[()]]:
        return (Unchanged, ())


UNCHANGED: Final[Unchanged] = Unchanged()

RawValue = str | None | Unchanged
"""A column value as text: quoted values with `''` already unescaped, unquoted ones as printed
(`123`, `-1.5e+10`, `NaN`, `true`/`false` for booleans), bit strings without `B'…'`;
`None` for `null`, `UNCHANGED` for `unchanged-toast-datum`."""


@dataclass(slots=True)
class RawTuple:
    """The columns of one printed tuple, in printed order. Names are unquoted; types are the
    `format_type_be` text exactly as printed (`integer[]`, `"My Schema"."My Enum"`)."""

    names: list[str]
    types: list[str]
    values: list[RawValue]


@dataclass(slots=True)
class BeginLine:
    """`BEGIN <xid>`."""

    xid: int


@dataclass(slots=True)
class CommitLine:
    """`COMMIT <xid> (at <timestamp>)`; `commit_ts` is the raw `timestamptz` text."""

    xid: int | None
    commit_ts: str | None


@dataclass(slots=True)
class ChangeLine:
    """`table S.T: INSERT|UPDATE|DELETE: …`.

    `new` is the new tuple (INSERT, UPDATE); `old` the old-key / replica identity tuple (UPDATE
    with `old-key:`, DELETE). Either is `None` where the line has none or says `(no-tuple-data)`.
    """

    schema: str
    table: str
    op: str  # 'INSERT' | 'UPDATE' | 'DELETE'
    new: RawTuple | None
    old: RawTuple | None


@dataclass(slots=True)
class TruncateLine:
    """`table S1.T1, S2.T2: TRUNCATE: [restart_seqs] [cascade] | (no-flags)`."""

    relations: list[tuple[str, str]]
    restart_seqs: bool
    cascade: bool


@dataclass(slots=True)
class MessageLine:
    """`message: transactional: 0|1 prefix: <prefix>, sz: <bytes> content:<content>`."""

    transactional: bool
    prefix: str
    content: str


Line = BeginLine | CommitLine | ChangeLine | TruncateLine | MessageLine


class LineKind(IntEnum):
    """What a test_decoding line is, told from its first word (the line is not validated)."""

    OTHER = 0
    TABLE = 1  # `table …`: a change or a truncate
    BEGIN = 2
    COMMIT = 3
    MESSAGE = 4  # `message: transactional: …`
    TRANSACTIONAL_MESSAGE = 5  # `message: transactional: 1 …`


# Module-level aliases: reading an enum member through its class costs ~80 ns on CPython 3.11,
# a global ~25 ns, and this runs for every line.
_TABLE, _BEGIN, _COMMIT = LineKind.TABLE, LineKind.BEGIN, LineKind.COMMIT
_MESSAGE, _TRANSACTIONAL_MESSAGE, _OTHER = LineKind.MESSAGE, LineKind.TRANSACTIONAL_MESSAGE, LineKind.OTHER


def line_kind(line: str) -> LineKind:
    """The kind of `line` (called for every line by the assembler: a prefix test, no parsing).
    Never raises; a malformed line of a known kind is a `DecodeError` from `parse_line` later."""
    if line.startswith("table "):
        return _TABLE
    if line.startswith("BEGIN"):
        return _BEGIN
    if line.startswith("COMMIT"):
        return _COMMIT
    if line.startswith("message:"):
        if line.startswith("message: transactional: 1"):
            return _TRANSACTIONAL_MESSAGE
        return _MESSAGE
    return _OTHER
