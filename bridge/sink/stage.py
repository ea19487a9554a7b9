"""Staging: PostgreSQL binary COPY written directly from the value forms (docs/internals.md).

Each table version gets an encoder generated once (`row_encoder`): a plain Python loop with one
inlined expression per column, so a row costs a handful of `struct` packs and no per-cell
dispatch. The staging row layout is fixed: `(_lsn pg_lsn, _seq int8, _op "char", _aux int4,
<columns>)`; `_aux` is the unchanged-mask id (keyed tables) or the event's ordinal (tables
without a key).

Wire types: integers, floats, bool, bytea, date, time and timestamps travel in their binary
forms (dates shifted from 1970 to 2000 with PostgreSQL's infinity sentinels passed through);
everything whose value form is text (numeric, uuid, json, enums, intervals, ...) travels as
`text` and is cast to the target type by the apply statement.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bridge.relation import Column

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
NULL = b"\xff\xff\xff\xff"

# Value-form infinities are PostgreSQL's internal sentinels: they pass through unshifted.
DATE_NEG_INFINITY = -(2**31)
DATE_POS_INFINITY = 2**31 - 1
TS_NEG_INFINITY = -(2**63)
TS_POS_INFINITY = 2**63 - 1
UNIX_TO_PG_DAYS = 10957  # 1970-01-01 → 2000-01-01
UNIX_TO_PG_US = 946_684_800_000_000

StageRow = tuple[int, int, bytes, int, Sequence[Any]]
"""The one row form of staging, made from a `ChangeEvent` by bridge/sink/rows.py: (commit LSN
as int, seq, op byte `c`/`u`/`d`, aux, values in the plan's column order). The four meta fields
become the staging columns `m_lsn, m_seq, m_op, m_aux`; `aux` is the unchanged-mask id (keyed
tables) or the event's ordinal (keyless tables). A plain tuple on purpose: the generated encoder
unpacks it in its loop header, and a tuple literal is the cheapest row to build (60 ns against
580 ns for a NamedTuple of the same fields, timeit; the apply side spends about 4 us per row)."""

Encoder = Callable[[Iterable[StageRow], Callable[[bytes], object]], None]


@dataclass(frozen=True, slots=True)
class Wire:
    """How one column travels: the staging column's SQL type and the element type's oid."""

    sql: str  # format_type spelling of the scalar staging type
    oid: int
    code: str  # key into the code templates below


_WIRES: dict[str, Wire] = {
    "int2": Wire("smallint", 21, "h"),
    "int4": Wire("integer", 23, "i"),
    "int8": Wire("bigint", 20, "q"),
    "oid": Wire("bigint", 20, "q"),
    "float4": Wire("real", 700, "f"),
    "float8": Wire("double precision", 701, "d"),
    "bool": Wire("boolean", 16, "bool"),
    "bytea": Wire("bytea", 17, "bytes"),
    "date": Wire("date", 1082, "date"),
    "time": Wire("time without time zone", 1083, "q"),
    "timestamp": Wire("timestamp without time zone", 1114, "ts"),
    "timestamptz": Wire("timestamp with time zone", 1184, "ts"),
}
TEXT = Wire("text", 25, "text")


def wire_for(column: Column) -> Wire:
    """The staging wire type of `column` (its scalar; arrays wrap it). Called once per plan."""
    if column.kind != "b":
        return TEXT
    return _WIRES.get(column.base, TEXT)


def is_array(column: Column) -> bool:
    return column.ndims > 0 or column.type_name.endswith("]")


def column_code(column: Column) -> str:
    """The staging wire code of `column` (its generated encoding)."""
    if is_array(column):
        return "array"
    code = wire_for(column).code
    if code == "text" and column.kind == "b" and column.base == "numeric":
        return "anytext"  # Decimal for numeric(p,s), str otherwise
    return code


def staging_type(column: Column) -> str:
    """The staging column's SQL type."""
    w = wire_for(column)
    return w.sql + "[]" if is_array(column) else w.sql


# -- scalar pieces (length-prefixed) ------------------------------------------------------------

_P_i = struct.Struct("!i").pack
_P_h = struct.Struct("!h").pack
_P_ih = struct.Struct("!ih").pack
_P_ii = struct.Struct("!ii").pack
_P_iq = struct.Struct("!iq").pack
_P_if = struct.Struct("!if").pack
_P_id = struct.Struct("!id").pack
_P_iii = struct.Struct("!iii").pack
_TRUE = b"\x00\x00\x00\x01\x01"
_FALSE = b"\x00\x00\x00\x01\x00"
_HDR = struct.Struct("!hiQiqicii").pack  # ncols, 8, lsn, 8, seq, 1, op, 4, aux


def _e_h(v: Any) -> bytes:
    return _P_ih(2, v)


def _e_i(v: Any) -> bytes:
    return _P_ii(4, v)


def _e_q(v: Any) -> bytes:
    return _P_iq(8, v)


def _e_f(v: Any) -> bytes:
    return _P_if(4, v)


def _e_d(v: Any) -> bytes:
    return _P_id(8, v)


def _e_bool(v: Any) -> bytes:
    return _TRUE if v else _FALSE


def _e_bytes(v: Any) -> bytes:
    return _P_i(len(v)) + bytes(v)


def _e_date(v: Any) -> bytes:
    return _P_ii(4, v - UNIX_TO_PG_DAYS if DATE_NEG_INFINITY < v < DATE_POS_INFINITY else v)


def _e_ts(v: Any) -> bytes:
    return _P_iq(8, v - UNIX_TO_PG_US if TS_NEG_INFINITY < v < TS_POS_INFINITY else v)


def _e_text(v: Any) -> bytes:
    b = (v if isinstance(v, str) else str(v)).encode()
    return _P_i(len(b)) + b


_NUM_SPECIAL = {"NaN": 0xC000, "Infinity": 0xD000, "-Infinity": 0xF000, "+Infinity": 0xD000}
_NUM_EMPTY = struct.Struct("!hhHh").pack  # ndigits, weight, sign, dscale


def numeric_body(v: Any) -> bytes:
    """A `Decimal` or PostgreSQL numeric text → the binary numeric body (without its length).

    Base-10000 digits around the decimal point, as `numeric_recv` reads them."""
    s = v if v.__class__ is str else str(v)
    special = _NUM_SPECIAL.get(s)
    if special is not None:
        return _NUM_EMPTY(0, 0, special, 0)
    if "E" in s or "e" in s or s[-1:] in ("N", "n", "y"):
        d = Decimal(s)
        if d.is_nan():
            return _NUM_EMPTY(0, 0, 0xC000, 0)
        if d.is_infinite():
            return _NUM_EMPTY(0, 0, 0xF000 if d < 0 else 0xD000, 0)
        s = format(d, "f")
    neg = s[0] == "-"
    if neg or s[0] == "+":
        s = s[1:]
    ip, _, fp = s.partition(".")
    dscale = len(fp)
    pad = -dscale % 4
    # integer coefficient aligned to whole base-10000 groups after the point
    n = int(ip + fp) * _POW10[pad] if pad else int(ip + fp)
    if not n:
        return _NUM_EMPTY(0, 0, 0, dscale)
    groups: list[int] = []
    while n:
        n, r = divmod(n, 10000)
        groups.append(r)
    weight = len(groups) - (dscale + pad) // 4 - 1
    k = 0
    while not groups[k]:
        k += 1
    if k:
        del groups[:k]
    groups.reverse()
    ng = len(groups)
    pack = _NUM_STRUCTS[ng] if ng < len(_NUM_STRUCTS) else struct.Struct(f"!hhHh{ng}h").pack
    return pack(ng, weight, 0x4000 if neg else 0, dscale, *groups)


_POW10 = (1, 10, 100, 1000)
_NUM_STRUCTS = [struct.Struct(f"!hhHh{i}h").pack for i in range(33)]


def _e_numeric(v: Any) -> bytes:
    b = numeric_body(v)
    return _P_i(len(b)) + b


_ELEMENT: dict[str, Callable[[Any], bytes]] = {
    "h": _e_h, "i": _e_i, "q": _e_q, "f": _e_f, "d": _e_d, "bool": _e_bool,
    "bytes": _e_bytes, "date": _e_date, "ts": _e_ts, "text": _e_text, "numeric": _e_numeric,
}


def array_value(value: list[Any], wire: Wire) -> bytes:
    """A nested list (value form of `T[]`) → the binary array body (without its length).

    Raises `ValueError` for a ragged (non-rectangular) array."""
    if not value:
        return _P_iii(0, 0, wire.oid)
    dims: list[int] = []
    x: Any = value
    while isinstance(x, list):
        dims.append(len(x))
        if not x:
            break
        x = x[0]
    flat: list[Any] = value
    for depth in range(1, len(dims)):
        nxt: list[Any] = []
        for sub in flat:
            if not isinstance(sub, list) or len(sub) != dims[depth]:
                raise ValueError("array is not rectangular")
            nxt.extend(sub)
        flat = nxt
    enc = _ELEMENT[wire.code]
    parts = [b""]
    hasnull = 0
    for e in flat:
        if e is None:
            hasnull = 1
            parts.append(NULL)
        elif isinstance(e, list):
            raise ValueError("array is not rectangular")
        else:
            parts.append(enc(e))
    parts[0] = _P_iii(len(dims), hasnull, wire.oid) + b"".join(_P_ii(d, 1) for d in dims)
    return b"".join(parts)


# -- generated row encoders ---------------------------------------------------------------------

_SCALAR_CODE = {
    "h": "ap(_P_ih(2, v))",
    "i": "ap(_P_ii(4, v))",
    "q": "ap(_P_iq(8, v))",
    "f": "ap(_P_if(4, v))",
    "d": "ap(_P_id(8, v))",
    "bool": "ap(_TRUE if v else _FALSE)",
    "bytes": "ap(_P_i(len(v))); ap(v)",
    "date": "ap(_P_ii(4, v - 10957 if -2147483648 < v < 2147483647 else v))",
    "ts": "ap(_P_iq(8, v - 946684800000000 if -9223372036854775808 < v < 9223372036854775807 else v))",
    "text": "b = v.encode(); ap(_P_i(len(b))); ap(b)",
    "anytext": "b = (v if v.__class__ is str else str(v)).encode(); ap(_P_i(len(b))); ap(b)",
    "numeric": "b = _num(v); ap(_P_i(len(b))); ap(b)",
    "jsonb": "b = v.encode(); ap(_P_i(len(b) + 1)); ap(b'\\x01'); ap(b)",
    "uuid": "ap(_P_i(16)); ap(bytes.fromhex(v.replace('-', '')))",
}
_VAR_EXPR = {  # variable-width codes in the fast path: the value's bytes
    "bytes": "{v}",
    "text": "{v}.encode()",
    "anytext": "({v} if {v}.__class__ is str else str({v})).encode()",
    "numeric": "_num({v})",
    "jsonb": "b'\\x01' + {v}.encode()",
    "uuid": "bytes.fromhex({v}.replace('-', ''))",
}


_FIXED = {  # code → (struct format after the length, value expression, byte length)
    "h": ("h", "{v}", 2),
    "i": ("i", "{v}", 4),
    "q": ("q", "{v}", 8),
    "f": ("f", "{v}", 4),
    "d": ("d", "{v}", 8),
    "bool": ("?", "{v}", 1),
    "date": ("i", "({v} - 10957 if -2147483648 < {v} < 2147483647 else {v})", 4),
    "ts": ("q", "({v} - 946684800000000 if -9223372036854775808 < {v} < 9223372036854775807 else {v})", 8),
}


def row_encoder(columns: Sequence[Column], codes: Sequence[str] | None = None, *, meta: bool = True) -> Encoder:
    """Generate the encoder of staging rows for `columns` (called once per table version).

    The encoder takes `StageRow`s and an `append(bytes)` callable and appends the binary COPY tuples
    (no signature, no trailer). A value of the wrong Python type raises `struct.error`,
    `TypeError`, `AttributeError` or `ValueError` — a record the target cannot take.

    `codes` overrides the wire code per column (the direct COPY into a target table uses binary
    `numeric`, `jsonb` and `uuid`); `meta=False` leaves out the four meta fields.

    Rows without NULLs take a fast path: the fixed-width fields between two variable-width ones
    are packed by one `struct` call, so a row costs a few packs and appends.
    """
    ns: dict[str, Any] = {
        "_P_i": _P_i, "_P_h": _P_h, "_P_ih": _P_ih, "_P_ii": _P_ii, "_P_iq": _P_iq, "_P_if": _P_if,
        "_P_id": _P_id, "_TRUE": _TRUE, "_FALSE": _FALSE, "_HDR": _HDR, "NULL": NULL,
        "_array": array_value, "_num": numeric_body,
    }
    n = len(columns)
    if codes is None:
        codes = [column_code(col) for col in columns]
    for i, col in enumerate(columns):
        if codes[i] == "array":
            ns[f"_W{i}"] = wire_for(col)
    lines = [
        "def encode(items, ap):",
        "    for lsn, seq, op, aux, row in items:",
    ]
    if n:
        lines += _fast_path(codes, meta, ns)
    if meta:
        lines.append(f"        ap(_HDR({n + 4}, 8, lsn, 8, seq, 1, op, 4, aux))")
    else:
        lines.append(f"        ap(_P_h({n}))")
    for i, code in enumerate(codes):
        lines.append(f"        v = row[{i}]")
        lines.append("        if v is None: ap(NULL)")
        if code == "array":
            lines.append(f"        else: b = _array(v, _W{i}); ap(_P_i(len(b))); ap(b)")
        else:
            lines.append(f"        else: {_SCALAR_CODE[code]}")
    exec("\n".join(lines), ns)  # generated from a fixed template, no data
    fn: Encoder = ns["encode"]
    return fn


def _fast_path(codes: Sequence[str], meta: bool, ns: dict[str, Any]) -> list[str]:
    """The generated lines of a row without NULL: the fixed-width fields between two
    variable-width ones packed by one `struct` call (its packers go into `ns`)."""
    n = len(codes)
    lines: list[str] = []
    if n:
        names = [f"v{i}" for i in range(n)]
        # `is not None` per value: `None in row` would run Decimal's slow comparison
        lines.append(f"        {', '.join(names)}{',' if n == 1 else ''} = row")
        lines.append(f"        if {' and '.join(f'{v} is not None' for v in names)}:")
        fmt = "!hiQiqicii" if meta else "!h"
        args = [str(n + 4), "8", "lsn", "8", "seq", "1", "op", "4", "aux"] if meta else [str(n)]
        k = 0
        for i, code in enumerate(codes):
            v = names[i]
            if code in _FIXED:
                f, expr, size = _FIXED[code]
                fmt += "i" + f
                args += [str(size), expr.format(v=v)]
                continue
            if code == "array":
                lines.append(f"            b{i} = _array({v}, _W{i})")
            else:
                lines.append(f"            b{i} = {_VAR_EXPR[code].format(v=v)}")
            fmt += "i"
            args.append(f"len(b{i})")
            ns[f"_S{k}"] = struct.Struct(fmt).pack
            lines.append(f"            ap(_S{k}({', '.join(args)})); ap(b{i})")
            k += 1
            fmt, args = "!", []
        if args:
            ns[f"_S{k}"] = struct.Struct(fmt).pack
            lines.append(f"            ap(_S{k}({', '.join(args)}))")
        lines.append("            continue")
    return lines


def encode_copy(encoder: Encoder, items: Iterable[StageRow]) -> bytes:
    """The whole binary COPY stream (signature, tuples, trailer) for `items`."""
    parts: list[bytes] = [SIGNATURE]
    encoder(items, parts.append)
    parts.append(TRAILER)
    return b"".join(parts)
