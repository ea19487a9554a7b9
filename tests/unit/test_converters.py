"""Converters (text → value forms) and the row decoder, as pure logic."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import DecodeError
from bridge.events import Op
from bridge.relation import Column, Relation
from bridge.source.converters import (
    DATE_NEG_INFINITY,
    DATE_POS_INFINITY,
    TS_NEG_INFINITY,
    TS_POS_INFINITY,
    converter,
    date_days,
    days_from_civil,
    parse_array,
    raw_converter,
    time_us,
    timestamp_us,
    timestamptz_us,
)
from bridge.source.decoder import RowDecoder
from bridge.source.test_decoding import UNCHANGED, ChangeLine, RawTuple, RawValue


def col(base: str, *, kind: str = "b", ndims: int = 0, precision: int | None = None,
        scale: int | None = None, name: str = "c", type_name: str = "") -> Column:
    return Column(name, type_name or base, base, kind, ndims, False, precision, scale)


def conv(base: str, **kw: Any) -> Any:
    return converter(col(base, **kw))


EPOCH = datetime(1970, 1, 1)
US = timedelta(microseconds=1)


# -- scalars ---------------------------------------------------------------------------------


def test_integers() -> None:
    for base in ("int2", "int4", "int8", "oid"):
        c = conv(base)
        assert c("0") == 0 and c("-32768") == -32768
    assert conv("int8")("-9223372036854775808") == -(2**63)
    assert conv("oid")("4294967295") == 2**32 - 1


def test_floats_keep_nan_and_infinities() -> None:
    for base in ("float4", "float8"):
        c = conv(base)
        assert math.isnan(c("NaN"))
        assert c("Infinity") == math.inf and c("-Infinity") == -math.inf
        assert c("1.5e+10") == 1.5e10 and c("-0") == 0.0 and math.copysign(1, c("-0")) == -1
        assert c("0.1") == 0.1  # extra_float_digits=3 prints the shortest exact text
    assert conv("float4")("3.4028235e+38") == 3.4028235e38


def test_numeric_with_modifier_is_decimal_and_without_is_text() -> None:
    c = conv("numeric", precision=12, scale=2)
    assert c("12.50") == Decimal("12.50") and c("12.50").as_tuple().exponent == -2
    assert c("-0.01") == Decimal("-0.01")
    assert c("NaN").is_nan()
    # scales Avro's decimal cannot hold (PG15: negative, or above the precision) stay text
    assert conv("numeric", precision=5, scale=-2)("12300") == "12300"
    assert conv("numeric", precision=2, scale=5)("0.00012") == "0.00012"
    assert conv("numeric", precision=3, scale=3)("0.123") == Decimal("0.123")
    free = conv("numeric")
    assert free("12.500") == "12.500" and free("NaN") == "NaN" and free("Infinity") == "Infinity"


def test_booleans_accept_both_spellings() -> None:
    c = conv("bool")
    assert (c("true"), c("t"), c("false"), c("f")) == (True, True, False, False)
    with pytest.raises(DecodeError):
        c("yes")


def test_bytea_hex() -> None:
    c = conv("bytea")
    assert c("\\x") == b"" and c("\\x00ff10") == b"\x00\xff\x10"
    with pytest.raises(DecodeError):
        c("\\000")  # escape format is not what the session asks for
    with pytest.raises(DecodeError):
        c("\\xzz")


def test_text_like_types_are_unchanged() -> None:
    for base, kind in [("text", "b"), ("varchar", "b"), ("bpchar", "b"), ("name", "b"), ("char", "b"),
                       ("citext", "b"), ("uuid", "b"), ("json", "b"), ("jsonb", "b"), ("interval", "b"),
                       ("timetz", "b"), ("inet", "b"), ("cidr", "b"), ("macaddr", "b"), ("money", "b"),
                       ("mood", "e"), ("int4range", "r"), ("pair", "c"), ("point", "b")]:
        c = col(base, kind=kind)
        assert raw_converter(c) is None
        s = "  odd {text} 'x' NULL "
        assert converter(c)(s) is s


def test_dates() -> None:
    assert date_days("1970-01-01") == 0
    assert date_days("2024-01-15") == (date(2024, 1, 15) - date(1970, 1, 1)).days
    assert date_days("0001-01-01") == -719_162
    assert date_days("0001-12-31 BC") == -719_163  # year 0, the day before 1 AD
    assert date_days("0001-01-01 BC") == -719_162 - 366  # 1 BC is a leap year
    assert date_days("4714-11-24 BC") == -2_440_588  # Julian day 0
    assert date_days("10000-01-01") == days_from_civil(10_000, 1, 1) == 2_932_897
    assert date_days("5874897-12-31") == days_from_civil(5_874_897, 12, 31)
    assert date_days("infinity") == DATE_POS_INFINITY == 2**31 - 1
    assert date_days("-infinity") == DATE_NEG_INFINITY == -(2**31)
    for bad in ("2024-13-01", "2024-02-30x", "hello", "", "20240115"):
        with pytest.raises(DecodeError) as err:
            conv("date", name="born")(bad)
        assert "born" in str(err.value) and repr(bad) in str(err.value)


def test_timestamps() -> None:
    assert timestamp_us("1970-01-01 00:00:00") == 0
    assert timestamp_us("2024-01-15 10:20:30.123456") == 1_705_314_030_123_456
    assert timestamp_us("2024-01-15 10:20:30.1") == 1_705_314_030_100_000
    assert timestamp_us("2024-01-15 10:20:30.000001") == 1_705_314_030_000_001
    assert timestamptz_us("2024-01-15 10:20:30.123456+00") == 1_705_314_030_123_456
    assert timestamptz_us("2024-01-15 15:50:30.12+05:30") == 1_705_314_030_120_000
    assert timestamptz_us("2024-01-15 07:20:30-03:00:00") == 1_705_314_030_000_000
    assert timestamptz_us("1890-01-15 00:53:28+00:53:28") == timestamp_us("1890-01-15 00:00:00")
    bc = -63_517_786_769_500_000
    assert timestamp_us("0044-03-15 10:20:30.5 BC") == bc
    assert timestamptz_us("0044-03-15 10:20:30.5+00 BC") == bc
    assert timestamptz_us("0044-03-15 12:20:30.5+02 BC") == bc
    assert timestamptz_us("0044-03-15 07:20:30.5-03:00:00 BC") == bc
    assert timestamptz_us("12345-01-01 00:00:00+05:30") == days_from_civil(12345, 1, 1) * 86_400_000_000 - 5.5 * 3600e6
    assert timestamp_us("294276-12-31 23:59:59.999999") == days_from_civil(294276, 12, 31) * 86_400_000_000 + 86_399_999_999
    for f in (timestamp_us, timestamptz_us):
        assert f("infinity") == TS_POS_INFINITY == 2**63 - 1
        assert f("-infinity") == TS_NEG_INFINITY == -(2**63)
    for bad in ("2024-01-15", "2024-01-15 25:00:00+00", "2024-01-15T10:00:00+00x", "infinit"):
        with pytest.raises(DecodeError):
            conv("timestamptz")(bad)
    with pytest.raises(DecodeError):
        conv("timestamptz")("12345-01-01 00:00:00")  # no offset


def test_times() -> None:
    assert time_us("00:00:00") == 0
    assert time_us("10:20:30.5") == 37_230_500_000
    assert time_us("23:59:59.999999") == 86_399_999_999
    assert time_us("24:00:00") == 86_400_000_000
    for bad in ("24:00:01", "1:00:00", "10:00:00 x"):
        with pytest.raises(DecodeError):
            conv("time")(bad)


def _pg_fraction(us: int) -> str:
    return f".{us:06d}".rstrip("0") if us else ""


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)),
       st.integers(min_value=-15 * 3600 - 59 * 60, max_value=15 * 3600 + 59 * 60))
def test_timestamps_match_python_arithmetic(dt: datetime, offset_s: int) -> None:
    text = dt.strftime("%Y-%m-%d %H:%M:%S").rjust(19, "0") + _pg_fraction(dt.microsecond)
    text = f"{dt.year:04d}" + text[text.index("-"):]
    expect = (dt - EPOCH) // US
    assert timestamp_us(text) == expect
    sign = "+" if offset_s >= 0 else "-"
    h, rem = divmod(abs(offset_s), 3600)
    m, s = divmod(rem, 60)
    off = f"{sign}{h:02d}" + (f":{m:02d}" if m or s else "") + (f":{s:02d}" if s else "")
    assert timestamptz_us(text + off) == expect - offset_s * 1_000_000
    assert date_days(text[: text.index(" ")]) == (dt.date() - EPOCH.date()).days
    t = text[text.index(" ") + 1:]
    assert time_us(t) == (dt - dt.replace(hour=0, minute=0, second=0, microsecond=0)) // US


@given(st.integers(min_value=1, max_value=300_000), st.integers(1, 12), st.integers(1, 28),
       st.booleans(), st.integers(0, 86_399_999_999))
def test_bc_and_far_future_dates_match_400_year_cycle(year: int, month: int, day: int, bc: bool, tod: int) -> None:
    # Independent check: the Gregorian calendar repeats every 400 years = 146097 days.
    astro = 1 - year if bc else year
    k = (-astro) // 400 + 2 if astro < 2000 else -((astro - 2000) // 400)
    shifted = date(astro + 400 * k, month, day)
    expect_days = (shifted - date(1970, 1, 1)).days - 146_097 * k
    text = f"{year:04d}-{month:02d}-{day:02d}"
    suffix = " BC" if bc else ""
    assert date_days(text + suffix) == expect_days
    clock = timedelta(microseconds=tod)
    hh, rem = divmod(clock.seconds, 3600)
    clock_text = f"{hh:02d}:{rem // 60:02d}:{rem % 60:02d}" + _pg_fraction(clock.microseconds)
    expect_us = expect_days * 86_400_000_000 + tod
    assert timestamp_us(f"{text} {clock_text}{suffix}") == expect_us
    assert timestamptz_us(f"{text} {clock_text}+00{suffix}") == expect_us


# -- arrays ----------------------------------------------------------------------------------


def test_arrays() -> None:
    ints = conv("int4", ndims=1)
    assert ints("{}") == []
    assert ints("{1,2,NULL}") == [1, 2, None]
    assert ints("{{1,2},{3,4}}") == [[1, 2], [3, 4]]
    assert ints("{{{1},{2}},{{3},{NULL}}}") == [[[1], [2]], [[3], [None]]]
    assert ints("[0:1]={5,6}") == [5, 6]
    assert ints("[1:2][3:4]={{1,2},{3,4}}") == [[1, 2], [3, 4]]
    texts = conv("text", ndims=1)
    assert texts('{"a b","c\\"d",NULL,"NULL",null,"",x}') == ["a b", 'c"d', None, "NULL", "null", "", "x"]
    assert texts('{"back\\\\slash","{br,ace}","new\nline"}') == ["back\\slash", "{br,ace}", "new\nline"]
    assert texts('{{"a,b",NULL},{"",c}}') == [["a,b", None], ["", "c"]]
    assert conv("bytea", ndims=1)('{"\\\\x00ff",NULL}') == [b"\x00\xff", None]
    assert conv("timestamptz", ndims=1)('{"1970-01-01 00:00:01+00",infinity}') == [1_000_000, TS_POS_INFINITY]
    assert conv("date", ndims=1)("{1970-01-02,-infinity}") == [1, DATE_NEG_INFINITY]
    assert conv("numeric", ndims=1, precision=5, scale=1)("{1.5,NaN}")[0] == Decimal("1.5")
    assert conv("numeric", ndims=1)("{1.50,NaN}") == ["1.50", "NaN"]
    assert conv("bool", ndims=1)("{t,f}") == [True, False]
    assert conv("float8", ndims=1)("{NaN,-Infinity}")[1] == -math.inf
    assert conv("box", ndims=1)("{(1,1),(0,0);(2,2),(1,1)}") == ["(1,1),(0,0)", "(2,2),(1,1)"]
    assert conv("mood", kind="e", ndims=1)('{sad,"very happy"}') == ["sad", "very happy"]
    for bad in ("{1,2", "1,2}", '{"a}', "{{1},{2}", "{1}}", "{1}{2}", "x"):
        with pytest.raises(DecodeError):
            conv("text", ndims=1)(bad)
    with pytest.raises(DecodeError) as err:
        conv("int4", ndims=1, name="nums")("{1,x}")
    assert "nums" in str(err.value)


_WS = " \t\n\r\v\f"


def _pg_array_out(value: Any) -> str:
    """PostgreSQL's array_out for text elements (quoting rules of arrayfuncs.c)."""
    if isinstance(value, list):
        return "{" + ",".join(_pg_array_out(v) for v in value) + "}"
    if value is None:
        return "NULL"
    assert isinstance(value, str)
    if value == "" or value.upper() == "NULL" or any(ch in value for ch in '{},"\\' + _WS):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


_elements = st.one_of(st.none(), st.text(max_size=8),
                      st.sampled_from(["NULL", "null", "", " ", "{", "}", ",", '"', "\\", "a\\\"b"]))


@st.composite
def _nested(draw: st.DrawFn) -> list[Any]:
    depth = draw(st.integers(1, 3))
    shape = [draw(st.integers(1, 3)) for _ in range(depth)]

    def build(level: int) -> list[Any]:
        if level == depth - 1:
            return [draw(_elements) for _ in range(shape[level])]
        return [build(level + 1) for _ in range(shape[level])]

    return build(0)


@given(_nested())
def test_array_literals_round_trip(value: list[Any]) -> None:
    assert parse_array(_pg_array_out(value), None) == value


# -- row decoder ----------------------------------------------------------------------------


def _orders() -> Relation:
    return Relation("public", "orders", (
        Column("id", "bigint", "int8", not_null=True),
        Column("qty", "integer", "int4"),
        Column("amount", "numeric(12,2)", "numeric", precision=12, scale=2),
        Column("note", "text", "text"),
        Column("status", "text", "text"),
        Column("created", "timestamp with time zone", "timestamptz"),
        Column("doc", "jsonb", "jsonb"),
    ), primary_key=("id",))


_TYPES = ["bigint", "integer", "numeric", "text", "text", "timestamp with time zone", "jsonb"]


def _tuple(values: list[RawValue], names: list[str] | None = None, types: list[str] | None = None) -> RawTuple:
    rel = _orders()
    return RawTuple(names or list(rel.column_names), types or list(_TYPES), values)


ROW: list[RawValue] = ["7", "3", "12.50", "it's", "new", "2024-01-15 10:20:30.123456+00", '{"a": 1}']
EXPECT = (7, 3, Decimal("12.50"), "it's", "new", 1_705_314_030_123_456, '{"a": 1}')


def test_row_decoder_insert_update_delete() -> None:
    dec = RowDecoder(_orders())
    ins = ChangeLine("public", "orders", "INSERT", _tuple(list(ROW)), None)
    assert dec.matches(ins)
    assert dec.decode(ins) == (Op.INSERT, None, EXPECT, ())
    with_null = list(ROW)
    with_null[3] = None
    assert dec.decode(ChangeLine("public", "orders", "INSERT", _tuple(with_null), None))[2] == (
        (*EXPECT[:3], None, *EXPECT[4:]))
    # UPDATE with an unchanged TOAST value and an old-key tuple
    upd_vals = list(ROW)
    upd_vals[6] = UNCHANGED
    upd = ChangeLine("public", "orders", "UPDATE", _tuple(upd_vals), _tuple(["6"], ["id"], ["bigint"]))
    assert dec.matches(upd)
    assert dec.decode(upd) == (Op.UPDATE, (6, None, None, None, None, None, None), (*EXPECT[:6], None), ("doc",))
    # DELETE with a REPLICA IDENTITY FULL tuple that skipped NULL columns
    old = _tuple(["7", "12.50", "new"], ["id", "amount", "status"], ["bigint", "numeric", "text"])
    dele = ChangeLine("public", "orders", "DELETE", None, old)
    assert dec.decode(dele) == (Op.DELETE, (7, None, Decimal("12.50"), None, "new", None, None), None, ())
    assert dec.decode(ChangeLine("public", "orders", "DELETE", None, None)) == (Op.DELETE, None, None, ())


def test_row_decoder_matches_detects_ddl() -> None:
    dec = RowDecoder(_orders())
    assert dec.matches(ChangeLine("public", "orders", "INSERT", _tuple(list(ROW)), None))
    extra = _tuple([*ROW, "1"], [*_orders().column_names, "added"], [*_TYPES, "integer"])
    assert not dec.matches(ChangeLine("public", "orders", "INSERT", extra, None))
    retyped = _tuple(list(ROW), types=["bigint", "bigint", *_TYPES[2:]])
    assert not dec.matches(ChangeLine("public", "orders", "INSERT", retyped, None))
    assert not dec.matches(ChangeLine("public", "orders", "DELETE", None, _tuple(["1"], ["gone"], ["integer"])))


def test_row_decoder_names_the_failing_column() -> None:
    dec = RowDecoder(_orders())
    bad = list(ROW)
    bad[5] = "yesterday"
    with pytest.raises(DecodeError) as err:
        dec.decode(ChangeLine("public", "orders", "INSERT", _tuple(bad), None))
    assert err.value.context["column"] == "created" and err.value.context["table"] == "public.orders"
    assert "yesterday" in str(err.value)
    with pytest.raises(DecodeError):
        dec.decode(ChangeLine("public", "orders", "MERGE", _tuple(list(ROW)), None))


def test_row_decoder_empty_and_single_column_relations() -> None:
    empty = RowDecoder(Relation("public", "e", ()))
    assert empty.decode(ChangeLine("public", "e", "INSERT", RawTuple([], [], []), None)) == (Op.INSERT, None, (), ())
    one = RowDecoder(Relation("public", "o", (Column("d", "date", "date"),)))
    assert one.decode(ChangeLine("public", "o", "INSERT", RawTuple(["d"], ["date"], ["1970-01-11"]), None))[2] == (10,)


@settings(max_examples=50)
@given(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=7, max_size=7))
def test_row_decoder_nulls_anywhere(ints: list[int | None]) -> None:
    dec = RowDecoder(_orders())
    values: list[RawValue] = [None if v is None else s for v, s in zip(ints, ROW, strict=True)]
    after = dec.decode(ChangeLine("public", "orders", "INSERT", _tuple(values), None))[2]
    assert after == tuple(None if v is None else e for v, e in zip(ints, EXPECT, strict=True))
