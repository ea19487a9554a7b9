"""The `Lsn` value type: a PostgreSQL WAL location, `16/B374D848`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.errors import BridgeError

_MAX = (1 << 64) - 1


class LsnError(BridgeError, ValueError):
    """A text or number that is not a WAL location."""


@dataclass(frozen=True, slots=True, order=True)
class Lsn:
    """A 64-bit WAL location. Orders, hashes, prints as PostgreSQL does (`16/B374D848`)."""

    value: int

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or isinstance(self.value, bool) or not 0 <= self.value <= _MAX:
            raise LsnError(f"LSN out of range: {self.value!r}")

    @classmethod
    def parse(cls, text: str) -> Lsn:
        """Parse `XXXXXXXX/XXXXXXXX` (hex halves, either case). Raises `LsnError`."""
        hi, sep, lo = text.strip().partition("/")
        if not sep or not hi or not lo or len(hi) > 8 or len(lo) > 8:
            raise LsnError(f"not an LSN: {text!r} (expected e.g. 16/B374D848)")
        try:
            return cls((int(hi, 16) << 32) | int(lo, 16))
        except ValueError as exc:
            raise LsnError(f"not an LSN: {text!r} (expected e.g. 16/B374D848)") from exc

    @classmethod
    def coerce(cls, v: Any) -> Lsn:
        """Accept an `Lsn`, an int or the text form."""
        if isinstance(v, Lsn):
            return v
        if isinstance(v, str):
            return cls.parse(v)
        return cls(v)

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def __repr__(self) -> str:
        return f"Lsn({self})"

    def __sub__(self, other: Lsn) -> int:
        """Bytes between two locations (as `pg_wal_lsn_diff`)."""
        return self.value - other.value


ZERO = Lsn(0)
