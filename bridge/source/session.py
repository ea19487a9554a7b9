"""Session settings every capture connection uses, so value text formats are fixed.

The converters rely on exactly these output formats (see docs/internals.md).
"""

from __future__ import annotations

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
