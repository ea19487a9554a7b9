"""Session settings every capture connection uses, so value text formats are fixed.

The converters rely on exactly these output formats (see docs/internals.md).
"""

from __future__ import annotations

from typing import Any

import psycopg

CAPTURE_GUCS: dict[str, str] = {
    "DateStyle": "ISO, YMD",
    "TimeZone": "UTC",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}


def libpq_options(extra: dict[str, str] | None = None) -> str:
    """The libpq `options` string (`-c name=value ...`) that applies `CAPTURE_GUCS`."""
    gucs = {**CAPTURE_GUCS, **(extra or {})}
    return " ".join(f"-c {k}={v.replace(' ', chr(92) + ' ')}" for k, v in gucs.items())


def close_quietly(conn: psycopg.Connection[Any] | None) -> None:
    """Close a session connection whose state no longer matters (its lock or snapshot is given up
    with it); a connection already broken is fine."""
    if conn is not None:
        try:
            conn.close()
        except psycopg.Error:
            pass
