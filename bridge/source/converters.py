"""Per column: PostgreSQL text output → the value form of docs/internals.md ("Value forms").

A converter is chosen once per column from the catalog's description of its type
(`Column.base`, `Column.kind`, `Column.ndims`, `Column.precision`) — never by looking at a row.
The text it receives is PostgreSQL's output under the capture session settings
(`bridge/source/session.py`: DateStyle ISO, TimeZone UTC, IntervalStyle iso_8601,
extra_float_digits 3, bytea_output hex), either from test_decoding or from a text-mode SELECT.

Two layers:
- `raw_converter(column)` is the hot-path function. It raises whatever the underlying parse raises
  (`ValueError`, `KeyError`, `ArithmeticError`, ...) and returns `None` for columns whose text *is*
  the value, so a row decoder can skip the call. `RowDecoder` wraps a whole row in one `try` and
  only locates the failing column when something raised.
- `converter(column)` is the safe, stand-alone form: always a callable, errors are `DecodeError`s
  naming the column and the value.

Dates and timestamps in the common range (4-digit years AD) go through the C-level
`datetime.fromisoformat`, which measured ~2.5x faster than parsing the fields in Python; years
before 1 (`... BC`), after 9999 and `24:00:00` go through days-from-civil arithmetic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from bridge.errors import DecodeError
from bridge.relation import Column

Converter = Callable[[str], Any]

# Infinity sentinels: PostgreSQL's own DATEVAL_NOBEGIN/NOEND and DT_NOBEGIN/NOEND.
DATE_NEG_INFINITY = -(2**31)
DATE_POS_INFINITY = 2**31 - 1
TS_NEG_INFINITY = -(2**63)
TS_POS_INFINITY = 2**63 - 1

CONVERSION_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError, IndexError, ArithmeticError)
"""What a raw converter may raise on bad text (decimal.InvalidOperation is an ArithmeticError)."""

_US_PER_DAY = 86_400_000_000
_UNIX_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_FRACTION_SCALE = (0, 100_000, 10_000, 1_000, 100, 10, 1)  # by number of fraction digits (1..6)

_date_fromiso = date.fromisoformat
_datetime_fromiso = datetime.fromisoformat
_time_fromiso = time.fromisoformat


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date; `year` is astronomical (1 BC = 0).

    Howard Hinnant's algorithm; Python's floor division makes it exact for negative years too.
    """
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _civil_days(text: str, bc: bool) -> int:
    """`YYYY[Y...]-MM-DD` (any year width, era suffix already stripped) → days since 1970-01-01."""
    i = text.index("-", 4)
    if len(text) != i + 6 or text[i + 3] != "-":
        raise ValueError(f"not a date: {text!r}")
    month = int(text[i + 1 : i + 3])
    day = int(text[i + 4 : i + 6])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise ValueError(f"date field out of range: {text!r}")
    year = int(text[:i])
    return days_from_civil(1 - year if bc else year, month, day)


def _bc_year(text: str) -> tuple[str, bool]:
    """Strip a trailing ` BC` era marker; PostgreSQL prints it after everything else."""
    if text.endswith(" BC"):
        return text[:-3], True
    return text, False


def _offset_seconds(text: str) -> int:
    """`+HH`, `-HH:MM`, `+HH:MM:SS` → seconds east of UTC."""
    sign = text[0]
    if sign != "+" and sign != "-":
        raise ValueError(f"not a UTC offset: {text!r}")
    parts = text[1:].split(":")
    if len(parts) > 3 or any(len(p) != 2 for p in parts):
        raise ValueError(f"not a UTC offset: {text!r}")
    seconds = int(parts[0]) * 3600
    if len(parts) > 1:
        seconds += int(parts[1]) * 60
    if len(parts) > 2:
        seconds += int(parts[2])
    return -seconds if sign == "-" else seconds


def _time_of_day_us(text: str) -> int:
    """`HH:MM:SS[.f{1,6}]` → microseconds since midnight (24:00:00 allowed)."""
    if len(text) < 8 or text[2] != ":" or text[5] != ":":
        raise ValueError(f"not a time: {text!r}")
    us = ((int(text[0:2]) * 60 + int(text[3:5])) * 60 + int(text[6:8])) * 1_000_000
    if len(text) > 8:
        frac = text[9:]
        if text[8] != "." or not 1 <= len(frac) <= 6 or not frac.isdigit():
            raise ValueError(f"bad fraction in {text!r}")
        us += int(frac) * _FRACTION_SCALE[len(frac)]
    if us > _US_PER_DAY:
        raise ValueError(f"time out of range: {text!r}")
    return us


# -- scalar converters -----------------------------------------------------------------------


def date_days(text: str) -> int:
    """`date` text → days since 1970-01-01 (`infinity`/`-infinity` → the int32 sentinels)."""
    if text[4:5] == "-" and text[-1] != "C":
        return _date_fromiso(text).toordinal() - _UNIX_EPOCH_ORDINAL
    if text == "infinity":
        return DATE_POS_INFINITY
    if text == "-infinity":
        return DATE_NEG_INFINITY
    body, bc = _bc_year(text)
    return _civil_days(body, bc)


def _timestamp_slow(text: str, with_zone: bool) -> int:
    """Any PostgreSQL ISO timestamp: BC, years > 9999, any offset. Microseconds since the epoch."""
    if text == "infinity":
        return TS_POS_INFINITY
    if text == "-infinity":
        return TS_NEG_INFINITY
    body, bc = _bc_year(text)
    i = body.index("-", 4)
    if body[i + 6 : i + 7] != " ":
        raise ValueError(f"not a timestamp: {text!r}")
    year = int(body[:i])
    if bc:
        year = 1 - year
    month = int(body[i + 1 : i + 3])
    day = int(body[i + 4 : i + 6])
    if body[i + 3] != "-" or not (1 <= month <= 12 and 1 <= day <= 31):
        raise ValueError(f"not a timestamp: {text!r}")
    clock = body[i + 7 :]
    offset = 0
    if with_zone:
        p = max(clock.rfind("+"), clock.rfind("-"))
        if p < 8:
            raise ValueError(f"timestamptz without offset: {text!r}")
        offset = _offset_seconds(clock[p:])
        clock = clock[:p]
    us = _time_of_day_us(clock)
    if us >= _US_PER_DAY:
        raise ValueError(f"time out of range: {text!r}")
    return days_from_civil(year, month, day) * _US_PER_DAY + us - offset * 1_000_000


def timestamptz_us(text: str) -> int:
    """`timestamptz` text → microseconds since the Unix epoch, UTC (infinities → int64 sentinels)."""
    if text[4:5] == "-" and text[-1] != "C":
        td = _datetime_fromiso(text) - _EPOCH_UTC
        return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds
    return _timestamp_slow(text, True)


def timestamp_us(text: str) -> int:
    """`timestamp` text → microseconds since 1970-01-01 00:00, no zone (infinities → sentinels)."""
    if text[4:5] == "-" and text[-1] != "C":
        td = _datetime_fromiso(text) - _EPOCH_NAIVE
        return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds
    return _timestamp_slow(text, False)


def time_us(text: str) -> int:
    """`time` text → microseconds since midnight; `24:00:00` → 86_400_000_000."""
    if text[0:2] != "24":
        t = _time_fromiso(text)
        return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond
    return _time_of_day_us(text)


_BOOLS = {"t": True, "true": True, "f": False, "false": False}
boolean = _BOOLS.__getitem__
"""`true`/`false` (test_decoding) or `t`/`f` (SELECT text) → bool; KeyError otherwise."""


def bytea(text: str) -> bytes:
    r"""`\x0a0b` (bytea_output=hex) → bytes."""
    if text[:2] != "\\x":
        raise ValueError("bytea text is not in hex format (bytea_output=hex)")
    return bytes.fromhex(text[2:])


_INTEGER_TYPES = frozenset({"int2", "int4", "int8", "oid"})
_FLOAT_TYPES = frozenset({"float4", "float8"})
_SCALARS: dict[str, Converter] = {
    "bool": boolean,
    "bytea": bytea,
    "date": date_days,
    "time": time_us,
    "timestamp": timestamp_us,
    "timestamptz": timestamptz_us,
}


def scalar_converter(
    base: str, kind: str = "b", precision: int | None = None, scale: int | None = None
) -> Converter | None:
    """The converter for one scalar value of type `base`; `None` when the text is the value.

    `numeric(p,s)` becomes a Decimal only when Avro's decimal can hold it (0 <= s <= p, the
    codec's rule in `bridge.codec.schemas.decimal_type`); unconstrained numeric and PG15's
    negative or oversized scales stay PostgreSQL's text.
    """
    if kind != "b":
        return None  # enum, range, composite, multirange: PostgreSQL's text
    if base in _INTEGER_TYPES:
        return int
    if base in _FLOAT_TYPES:
        return float  # accepts NaN, Infinity, -Infinity
    if base == "numeric":
        if precision is None or scale is None or not 0 <= scale <= precision:
            return None
        return Decimal
    return _SCALARS.get(base)


# -- arrays ----------------------------------------------------------------------------------

_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_TOKENS: dict[str, re.Pattern[str]] = {}


def _tokens(delim: str) -> re.Pattern[str]:
    pattern = _TOKENS.get(delim)
    if pattern is None:
        d = re.escape(delim)
        pattern = _TOKENS[delim] = re.compile(rf'[{{}}]|{d}|"(?:[^"\\]|\\.)*"|[^{{}}{d}"\\]+', re.DOTALL)
    return pattern


def parse_array(text: str, element: Converter | None, delim: str = ",") -> list[Any]:
    """A PostgreSQL array literal → nested lists, `element` applied to each non-NULL element.

    Handles `{}`, `{1,2,NULL}`, `{{1,2},{3,4}}`, quoted elements with backslash escapes
    (`{"a b","c\\"d",NULL,"NULL"}` — a quoted `"NULL"` is text), and the `[0:1]={...}` bounds
    prefix PostgreSQL prints for arrays whose lower bound is not 1. Raises ValueError when the
    text is not a well-formed array literal.
    """
    if text[0] == "[":
        text = text[text.index("=") + 1 :]
    if text[0] != "{" or text[-1] != "}":
        raise ValueError("array literal must be enclosed in { }")
    body = text[1:-1]
    if '"' not in body and "{" not in body and "}" not in body and "\\" not in body:
        # One dimension, nothing quoted: the common case.
        if not body:
            return []
        items = body.split(delim)
        if element is None:
            return [None if x == "NULL" else x for x in items]
        return [None if x == "NULL" else element(x) for x in items]
    return _parse_array_general(text, element, delim)


def _parse_array_general(text: str, element: Converter | None, delim: str) -> list[Any]:
    root: list[Any] = []
    stack: list[list[Any]] = []
    current: list[Any] | None = None
    pos = 0
    for m in _tokens(delim).finditer(text):
        if m.start() != pos:
            raise ValueError(f"unexpected character at {pos} in array literal")
        pos = m.end()
        tok = m.group()
        if current is None and tok != "{":
            raise ValueError(f"unexpected {tok!r} at {m.start()} in array literal")
        if tok == "{":
            new: list[Any] = []
            if current is None:
                if stack or root:
                    raise ValueError("text after the end of the array literal")
                root = new
            else:
                current.append(new)
                stack.append(current)
            current = new
        elif tok == "}":
            current = stack.pop() if stack else None
        elif tok == delim:
            continue
        elif current is not None:
            if tok[0] == '"':
                value = tok[1:-1]
                if "\\" in value:
                    value = _UNESCAPE.sub(r"\1", value)
                current.append(value if element is None else element(value))
            elif tok == "NULL":
                current.append(None)
            else:
                current.append(tok if element is None else element(tok))
    if pos != len(text) or current is not None or stack:
        raise ValueError("unbalanced array literal")
    return root


def _array_converter(element: Converter | None, delim: str) -> Converter:
    def convert(text: str) -> list[Any]:
        return parse_array(text, element, delim)

    return convert


# -- choosing ---------------------------------------------------------------------------------


def raw_converter(column: Column) -> Converter | None:
    """The hot-path converter for `column`, chosen from its type; `None` when the text is the value.

    Called once per column when a `RowDecoder` is built. The returned function raises one of
    `CONVERSION_ERRORS` on text that is not a value of the column's type.
    """
    element = scalar_converter(column.base, column.kind, column.precision, column.scale)
    if column.ndims > 0:
        return _array_converter(element, ";" if column.base == "box" else ",")
    return element


def _identity(text: str) -> str:
    return text


def converter(column: Column) -> Converter:
    """A stand-alone converter for `column`: text → value form, errors as `DecodeError`.

    Called once per column. The returned function raises `DecodeError(column=..., value=...)`
    when the text is not a value of the column's type.
    """
    raw = raw_converter(column)
    if raw is None:
        return _identity
    fn: Converter = raw
    name = column.name
    type_name = column.type_name

    def convert(text: str) -> Any:
        try:
            return fn(text)
        except CONVERSION_ERRORS as exc:
            raise conversion_error(name, type_name, text, exc) from exc

    return convert


def conversion_error(
    column: str, type_name: str, text: object, exc: BaseException, table: str | None = None
) -> DecodeError:
    """The `DecodeError` for a value of `column` that its converter rejected."""
    shown = text if not isinstance(text, str) or len(text) <= 200 else text[:200] + "..."
    return DecodeError(
        f"cannot convert value {shown!r} of column {column!r} ({type_name}): {exc!r}",
        table=table,
        column=column,
        type=type_name,
        value=repr(shown),
    )


__all__ = [
    "CONVERSION_ERRORS",
    "DATE_NEG_INFINITY",
    "DATE_POS_INFINITY",
    "TS_NEG_INFINITY",
    "TS_POS_INFINITY",
    "Converter",
    "boolean",
    "bytea",
    "conversion_error",
    "converter",
    "date_days",
    "days_from_civil",
    "parse_array",
    "raw_converter",
    "scalar_converter",
    "time_us",
    "timestamp_us",
    "timestamptz_us",
]
