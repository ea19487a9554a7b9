"""The staging encoder: binary COPY tuples written from the value forms."""

from __future__ import annotations

import struct
from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.relation import Column
from bridge.sink.stage import (
    NULL,
    SIGNATURE,
    TEXT,
    TRAILER,
    Wire,
    array_value,
    encode_copy,
    row_encoder,
    staging_type,
    wire_for,
)

COLS = [
    Column("i2", "smallint", "int2"), Column("i4", "integer", "int4"), Column("i8", "bigint", "int8"),
    Column("f8", "double precision", "float8"), Column("b", "boolean", "bool"), Column("by", "bytea", "bytea"),
    Column("d", "date", "date"), Column("ts", "timestamp with time zone", "timestamptz"),
    Column("n", "numeric(5,2)", "numeric", precision=5, scale=2), Column("t", "text", "text"),
    Column("a", "integer[]", "int4", ndims=1),
]


def split_tuple(data: bytes) -> tuple[tuple[int, int, bytes, int], list[bytes | None]]:
    """Parse one binary COPY tuple back into its meta fields and raw column values."""
    (n,) = struct.unpack_from("!h", data, 0)
    off = 2
    fields: list[bytes | None] = []
    for _ in range(n):
        (ln,) = struct.unpack_from("!i", data, off)
        off += 4
        if ln < 0:
            fields.append(None)
        else:
            fields.append(data[off:off + ln])
            off += ln
    assert off == len(data)
    lsn, seq, op, aux = fields[:4]
    assert lsn is not None and seq is not None and op is not None and aux is not None
    meta = (struct.unpack("!Q", lsn)[0], struct.unpack("!q", seq)[0], op, struct.unpack("!i", aux)[0])
    return meta, fields[4:]


def encode_one(cols: list[Column], row: tuple[Any, ...]) -> tuple[tuple[int, int, bytes, int], list[bytes | None]]:
    parts: list[bytes] = []
    row_encoder(cols)([(2**64 - 1, 7, b"u", 3, row)], parts.append)
    return split_tuple(b"".join(parts))


def test_values_take_postgres_binary_forms() -> None:
    row = (-2, 70000, 2**62, 1.5, True, b"\x00\x01", 0, 0, Decimal("1.50"), "é", [1, None])
    meta, f = encode_one(COLS, row)
    assert meta == (2**64 - 1, 7, b"u", 3)
    assert f[0] == struct.pack("!h", -2)
    assert f[1] == struct.pack("!i", 70000)
    assert f[2] == struct.pack("!q", 2**62)
    assert f[3] == struct.pack("!d", 1.5)
    assert f[4] == b"\x01"
    assert f[5] == b"\x00\x01"
    assert f[6] == struct.pack("!i", -10957)  # 1970-01-01 is day -10957 of PostgreSQL's epoch
    assert f[7] == struct.pack("!q", -946_684_800_000_000)
    assert f[8] == b"1.50"
    assert f[9] == "é".encode()
    assert f[10] == struct.pack("!iiiii", 1, 1, 23, 2, 1) + struct.pack("!ii", 4, 1) + NULL


def test_infinity_sentinels_pass_through() -> None:
    cols = [Column("d", "date", "date"), Column("ts", "timestamp without time zone", "timestamp")]
    _, f = encode_one(cols, (2**31 - 1, -(2**63)))
    assert f == [struct.pack("!i", 2**31 - 1), struct.pack("!q", -(2**63))]
    _, f = encode_one(cols, (-(2**31), 2**63 - 1))
    assert f == [struct.pack("!i", -(2**31)), struct.pack("!q", 2**63 - 1)]


def test_nulls_and_numeric_nan() -> None:
    _, f = encode_one(COLS, (None,) * 8 + (Decimal("NaN"), None, None))
    assert f == [None] * 8 + [b"NaN", None, None]


def test_arrays() -> None:
    assert array_value([], wire_for(Column("a", "integer[]", "int4", ndims=1))) == struct.pack("!iii", 0, 0, 23)
    body = array_value([["a", None], ["b", "c"]], TEXT)
    assert body[:28] == struct.pack("!iiiiiii", 2, 1, 25, 2, 1, 2, 1)
    with pytest.raises(ValueError, match="rectangular"):
        array_value([[1, 2], [3]], Wire("integer", 23, "i"))
    with pytest.raises(ValueError, match="rectangular"):
        array_value([1, [2]], Wire("integer", 23, "i"))


def test_wrong_value_forms_raise() -> None:
    enc = row_encoder([Column("i", "integer", "int4")])
    with pytest.raises(struct.error):
        enc([(1, 0, b"u", 0, (2**40,))], [].append)
    enc = row_encoder([Column("t", "text", "text")])
    with pytest.raises(AttributeError):
        enc([(1, 0, b"u", 0, (5,))], [].append)


def test_staging_types() -> None:
    assert staging_type(Column("a", "integer[]", "int4", ndims=1)) == "integer[]"
    assert staging_type(Column("a", "numeric(5,2)", "numeric", precision=5, scale=2)) == "text"
    assert staging_type(Column("a", "mood", "mood", kind="e")) == "text"
    assert staging_type(Column("a", "uuid[]", "uuid", ndims=1)) == "text[]"


def test_copy_stream_framing() -> None:
    data = encode_copy(row_encoder([Column("i", "integer", "int4")]), [(1, 0, b"d", 0, (5,))])
    assert data.startswith(SIGNATURE) and data.endswith(TRAILER)


scalars = st.tuples(
    st.none() | st.integers(-(2**15), 2**15 - 1), st.none() | st.integers(-(2**31), 2**31 - 1),
    st.none() | st.integers(-(2**63), 2**63 - 1), st.none() | st.floats(allow_nan=False),
    st.none() | st.booleans(), st.none() | st.binary(max_size=20),
    st.none() | st.sampled_from([-(2**31), 2**31 - 1]) | st.integers(-(10**8), 10**8),
    st.none() | st.sampled_from([-(2**63), 2**63 - 1]) | st.integers(-(2**62), 2**62),
    st.none() | st.decimals(allow_nan=False, allow_infinity=False, places=2, max_value=999, min_value=-999),
    st.none() | st.text(max_size=20), st.none() | st.lists(st.none() | st.integers(-(2**31), 2**31 - 1), max_size=4),
)


@given(scalars)
def test_fast_path_equals_per_value_encoding(row: tuple[Any, ...]) -> None:
    """Rows without NULLs take the packed fast path; each value must match its one-column encoding."""
    _, fields = encode_one(COLS, row)
    for c, v, got in zip(COLS, row, fields, strict=True):
        _, (alone,) = encode_one([c], (v,))
        assert got == alone


def _numeric_recv(body: bytes) -> str:
    """A reference reading of PostgreSQL's binary numeric (as numeric_recv + numeric_out)."""
    n, weight, sign, dscale = struct.unpack_from("!hhHh", body)
    if sign == 0xC000:
        return "NaN"
    if sign in (0xD000, 0xF000):
        return "Infinity" if sign == 0xD000 else "-Infinity"
    digits = struct.unpack_from(f"!{n}h", body, 8)
    with localcontext() as ctx:
        ctx.prec = 10_000
        value = sum(Decimal(d) * Decimal(10000) ** (weight - i) for i, d in enumerate(digits))
        text = f"{value:.{dscale}f}"
    return "-" + text if sign == 0x4000 and value else text


@pytest.mark.parametrize("value", ["0", "0.00", "1", "-1", "12.50", "9999", "10000", "0.0001", "-0.00012",
                                   "123456789.123456789", "1E+5", "1.5E-7", "NaN", "Infinity", "-Infinity"])
def test_numeric_binary(value: str) -> None:
    from bridge.sink.stage import numeric_body

    for v in (value, Decimal(value)):
        expected = value if value in ("NaN", "Infinity", "-Infinity") else f"{Decimal(value):f}"
        assert _numeric_recv(numeric_body(v)) == expected


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_numeric_binary_any_decimal(d: Decimal) -> None:
    from bridge.sink.stage import numeric_body

    assert Decimal(_numeric_recv(numeric_body(d))) == d
