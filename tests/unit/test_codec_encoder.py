"""The generated writers produce exactly fastavro's bytes, for every type and value form."""

from __future__ import annotations

import decimal
import io
import math
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codec.decoder import compile_reader, row_converter
from bridge.codec.encoder import _varint_bytes, compile_writer, decimal_unscaled, zigzag_long
from bridge.codec.schemas import row_record, value_schema
from bridge.errors import CodecError
from bridge.relation import Column, Relation

WIDE = decimal.Context(prec=1000)
I32 = 2**31
I64 = 2**63

COLUMNS: list[tuple[Column, st.SearchStrategy[Any]]] = [
    (Column("i2", "smallint", "int2"), st.integers(-(2**15), 2**15 - 1)),
    (Column("i4", "integer", "int4"), st.integers(-I32, I32 - 1)),
    (Column("i8", "bigint", "int8"), st.integers(-I64, I64 - 1)),
    (Column("o", "oid", "oid"), st.integers(0, 2**32 - 1)),
    (Column("f4", "real", "float4"), st.floats(width=32) | st.sampled_from([math.nan, math.inf, -math.inf])),
    (Column("f8", "double precision", "float8"), st.floats() | st.sampled_from([math.nan, math.inf, -math.inf])),
    (Column("n", "numeric(12,2)", "numeric", precision=12, scale=2),
     st.decimals(min_value=Decimal("-9999999999.99"), max_value=Decimal("9999999999.99"), places=2)
     | st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("0"), Decimal("-128"), Decimal("1.5")])),
    (Column("big", "numeric(1000,500)", "numeric", precision=1000, scale=500),
     st.integers(-(10**999) + 1, 10**999 - 1).map(lambda i: Decimal(i).scaleb(-500, WIDE))),
    (Column("u", "numeric", "numeric"), st.sampled_from(["12.500", "NaN", "Infinity", "-1e-5"])),
    (Column("b", "boolean", "bool"), st.booleans()),
    (Column("t", "text", "text"), st.text()),
    (Column("c", "character(3)", "bpchar", length=3), st.text(max_size=3).map(lambda s: s.ljust(3))),
    (Column("by", "bytea", "bytea"), st.binary()),
    (Column("d", "date", "date"), st.integers(-I32, I32 - 1) | st.sampled_from([I32 - 1, -I32])),  # ±infinity
    (Column("tm", "time without time zone", "time"), st.integers(0, 86_400_000_000)),
    (Column("ts", "timestamp without time zone", "timestamp"), st.integers(-I64, I64 - 1) | st.sampled_from([I64 - 1, -I64])),
    (Column("tz", "timestamp with time zone", "timestamptz"), st.integers(-I64, I64 - 1) | st.sampled_from([I64 - 1, -I64])),
    (Column("id", "uuid", "uuid"), st.uuids().map(str)),
    (Column("j", "jsonb", "jsonb"), st.text()),
    (Column("iv", "interval", "interval"), st.text()),
    (Column("ai", "integer[]", "int4", ndims=1), st.lists(st.none() | st.integers(-I32, I32 - 1))),
    (Column("at", "text[][]", "text", ndims=2), st.lists(st.lists(st.none() | st.text(max_size=5), max_size=3), max_size=3)),
    (Column("an", "numeric(6,3)[]", "numeric", ndims=1, precision=6, scale=3),
     st.lists(st.none() | st.decimals(min_value=-999, max_value=999, places=3) | st.just(Decimal("NaN")))),
    (Column("ad", "date[][][]", "date", ndims=3), st.lists(st.lists(st.lists(st.none() | st.integers(-I32, I32 - 1), max_size=2), max_size=2), max_size=2)),
]
REL = Relation("public", "all types", tuple(c for c, _ in COLUMNS), ("i8",))
VALUE = value_schema(REL, topic_prefix="bridge")
ROW = row_record(VALUE)
NAMES = [f["name"] for f in ROW["fields"]]
ROW_WRITE = compile_writer(ROW)
FA_ROW = fastavro.parse_schema(ROW)
VALUE_WRITE = compile_writer(VALUE, prefix=b"PFX")
FA_VALUE = fastavro.parse_schema(VALUE)

rows = st.tuples(*[st.none() | s for _, s in COLUMNS])


def fastavro_form(v: Any) -> Any:
    """What fastavro needs to write the same bytes: non-finite decimals as their text."""
    if isinstance(v, Decimal) and not v.is_finite():
        return str(v)
    if isinstance(v, list):
        return [fastavro_form(x) for x in v]
    return v


def fastavro_bytes(schema: Any, datum: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, datum)
    return out.getvalue()


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_rows_match_fastavro_byte_for_byte(row: tuple[Any, ...]) -> None:
    expected = fastavro_bytes(FA_ROW, {n: fastavro_form(v) for n, v in zip(NAMES, row, strict=True)})
    assert ROW_WRITE(row) == expected


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(rows, rows, st.sampled_from("cudrt"), st.integers(0, I64 - 1), st.integers(0, 2**31), st.integers(0, 2**32),
       st.none() | st.integers(-I64, I64 - 1), st.booleans(), st.lists(st.sampled_from(REL.column_names), unique=True))
def test_envelopes_match_fastavro(before: tuple[Any, ...], after: tuple[Any, ...], op: str, lsn: int, seq: int, xid: int,
                                  cts: int | None, snap: bool, unchanged: list[str]) -> None:
    src = ("db", "public", "all types", lsn, seq, xid, cts, snap)
    got = VALUE_WRITE((before, after, op, src, 1_700_000_000_000, unchanged))
    datum = {"before": {n: fastavro_form(v) for n, v in zip(NAMES, before, strict=True)},
             "after": {n: fastavro_form(v) for n, v in zip(NAMES, after, strict=True)}, "op": op,
             "source": dict(zip(["db", "schema", "table", "commit_lsn", "seq", "xid", "commit_ts", "snapshot"], src, strict=True)),
             "ts_ms": 1_700_000_000_000, "unchanged": unchanged}
    assert got == b"PFX" + fastavro_bytes(FA_VALUE, datum)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Decimal) and a.is_nan():
        return isinstance(b, Decimal) and b.is_nan()
    return type(a) is type(b) and a == b


READ = compile_reader(ROW)
CONV = row_converter(ROW)
FLOAT4 = REL.index["f4"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_reader_returns_the_value_forms(row: tuple[Any, ...]) -> None:
    back = CONV(READ(ROW_WRITE(row), 0))
    assert back is not None
    expected = list(row)
    if isinstance(expected[FLOAT4], float):  # Avro float is 32-bit
        expected[FLOAT4] = fastavro.schemaless_reader(io.BytesIO(fastavro_bytes("float", expected[FLOAT4])), "float", None)
    for i, (a, b) in enumerate(zip(expected, back, strict=True)):
        assert same(a, b), (REL.columns[i].name, a, b)


@pytest.mark.parametrize("v", [0, 1, -1, 63, -64, 64, 8191, -8192, 8192, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)])
def test_zigzag_boundaries(v: int) -> None:
    assert zigzag_long(v) == fastavro_bytes("long", v)
    assert zigzag_long(v) == _varint_bytes((v << 1) ^ (v >> 63))


def test_out_of_range_integers_raise() -> None:
    with pytest.raises(CodecError):
        compile_writer("long")(2**63)
    with pytest.raises(CodecError):
        compile_writer("long")(-(2**63) - 1)
    with pytest.raises(CodecError):
        compile_writer("int")(2**31)


def test_decimal_with_too_many_digits_raises() -> None:
    with pytest.raises(CodecError):
        decimal_unscaled(Decimal("1.005"), 2)
    assert decimal_unscaled(Decimal("-1.28"), 2) == fastavro_bytes({"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}, Decimal("-1.28"))[1:]


def test_unsupported_union_is_refused() -> None:
    with pytest.raises(CodecError):
        compile_writer(["int", "string"])
