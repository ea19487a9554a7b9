"""Differential tests of the native sink path (native/src/sink) against the Python reference.

Random relations over every type of docs/internals.md "Value forms", random rows written by the
producer's encoder, and forged bytes: the native decoder must give the same control fields and
the same rows (value for value), the native COPY encoder the same bytes (staging and direct wire
codes), and where the reference refuses (a body that does not decode, a value its wire type
cannot hold) the native path must refuse with the same class of error — never crash.
"""

from __future__ import annotations

import math
import os
import struct
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codec import EnvelopeDecoder, MemorySchemaStore, TableCodec
from bridge.errors import CodecError
from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.relation import Column, Relation
from bridge.sink import stage
from bridge.sink.native_stage import NativeEnvelopeDecoder, envelope_decoder, row_encoder

ENCODE_ERRORS = (struct.error, TypeError, ValueError, AttributeError, ArithmeticError, UnicodeError)

# -- value strategies per column type -----------------------------------------------------------

I32 = 2**31
I64 = 2**63


def _decimal(p: int, s: int) -> st.SearchStrategy[Decimal]:
    finite = st.one_of(
        st.integers(-(10**p) + 1, 10**p - 1).map(lambda n: Decimal(n).scaleb(-s)),
        # every number of digits: str(Decimal) switches to exponent notation below 1E-6
        st.tuples(st.integers(0, p), st.booleans()).map(lambda kn: Decimal((-1 if kn[1] else 1) * 10**kn[0] // 3)
                                                        .scaleb(-s)),
    )
    return st.one_of(finite, st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"),
                                              Decimal(0).scaleb(-s)]))


TEXTS = st.text(max_size=30)
NUMERIC_TEXT = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "0", "-0.000", "12.500", "1E+5", "+7", " 3 ", "abc", "1_0",
                     "007.50", "." + "1" * 20, "9" * 4500]),
)
DATES = st.one_of(st.integers(-I32, I32 - 1), st.sampled_from([-I32, I32 - 1, -I32 + 1, -I32 + 10956, 0]))
TIMESTAMPS = st.one_of(st.integers(-I64, I64 - 1),
                       st.sampled_from([-I64, I64 - 1, -I64 + 1, -I64 + 946_684_800_000_000 - 1, 0]))

# (type_name, base, kind, precision, scale) -> values
SCALARS: list[tuple[tuple[str, str, str, int | None, int | None], st.SearchStrategy[Any]]] = [
    (("smallint", "int2", "b", None, None), st.integers(-(2**15), 2**15 - 1)),
    (("integer", "int4", "b", None, None), st.integers(-I32, I32 - 1)),
    (("bigint", "int8", "b", None, None), st.integers(-I64, I64 - 1)),
    (("oid", "oid", "b", None, None), st.integers(0, 2**32 - 1)),
    (("real", "float4", "b", None, None), st.floats(width=32)),
    (("double precision", "float8", "b", None, None), st.floats()),
    (("numeric(12,2)", "numeric", "b", 12, 2), _decimal(12, 2)),
    (("numeric(5,0)", "numeric", "b", 5, 0), _decimal(5, 0)),
    (("numeric(30,25)", "numeric", "b", 30, 25), _decimal(30, 25)),
    (("numeric(1000,500)", "numeric", "b", 1000, 500), _decimal(1000, 500)),
    (("numeric(2,5)", "numeric", "b", 2, 5), NUMERIC_TEXT),  # scale above precision: text
    (("numeric", "numeric", "b", None, None), NUMERIC_TEXT),
    (("boolean", "bool", "b", None, None), st.booleans()),
    (("text", "text", "b", None, None), TEXTS),
    (("character varying", "varchar", "b", None, None), TEXTS),
    (('"char"', "char", "b", None, None), st.text(max_size=1)),
    (("bytea", "bytea", "b", None, None), st.binary(max_size=30)),
    (("date", "date", "b", None, None), DATES),
    (("time without time zone", "time", "b", None, None), st.integers(0, 86_400_000_000)),
    (("timestamp without time zone", "timestamp", "b", None, None), TIMESTAMPS),
    (("timestamp with time zone", "timestamptz", "b", None, None), TIMESTAMPS),
    (("uuid", "uuid", "b", None, None), st.one_of(st.uuids().map(str), st.just("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
                                                  st.just("{a0eebc99-9c0b4ef8bb6d6bb9bd380a11}"), st.just("zz"))),
    (("json", "json", "b", None, None), TEXTS),
    (("jsonb", "jsonb", "b", None, None), TEXTS),
    (("interval", "interval", "b", None, None), st.just("P1Y2M3DT4H5M6S")),
    (("inet", "inet", "b", None, None), st.just("10.0.0.1/32")),
    (("mood", "mood", "e", None, None), st.sampled_from(["happy", "sad"])),
    (("posint", "int4", "d", None, None), st.integers(0, 100).map(str)),
]
ARRAYABLE = [0, 1, 2, 5, 6, 7, 11, 13, 16, 17, 20, 21]  # indexes into SCALARS


def _array(values: st.SearchStrategy[Any], ndims: int) -> st.SearchStrategy[Any]:
    item = st.one_of(st.none(), values)
    if ndims == 1:
        return st.lists(item, max_size=4)
    inner = _array(values, ndims - 1)
    rect = st.integers(0, 3).flatmap(lambda k: st.lists(st.lists(item, min_size=k, max_size=k), max_size=3))
    return st.one_of(rect, st.lists(inner, max_size=3))  # the second may be ragged (refused by both)


@st.composite
def relations(draw: st.DrawFn) -> tuple[Relation, list[st.SearchStrategy[Any]]]:
    n = draw(st.integers(1, 7))
    cols: list[Column] = []
    values: list[st.SearchStrategy[Any]] = []
    for i in range(n):
        idx = draw(st.integers(0, len(SCALARS) - 1))
        (tname, base, kind, p, s), vals = SCALARS[idx]
        ndims = draw(st.sampled_from([0, 0, 0, 1, 2])) if idx in ARRAYABLE else 0
        cols.append(Column(f"c{i}", tname + "[]" * ndims, base, kind=kind, ndims=ndims, precision=p, scale=s))
        values.append(st.one_of(st.none(), _array(vals, ndims) if ndims else vals))
    return Relation("public", "t", tuple(cols), ()), values


def _row(draw: st.DrawFn, values: list[st.SearchStrategy[Any]]) -> tuple[Any, ...]:
    return tuple(draw(v) for v in values)


def _same(a: Any, b: Any) -> bool:
    """Value equality that also holds for NaN (float and Decimal) and keeps the type."""
    return type(a) is type(b) and repr(a) == repr(b)


def _wire_codes(rel: Relation) -> list[list[str]]:
    """The staging codes and the direct-COPY codes (binary numeric, jsonb, uuid where they apply)."""
    staging = [stage.column_code(c) for c in rel.columns]
    direct = [c.base if c.kind == "b" and c.base in ("numeric", "jsonb", "uuid") and not c.ndims else code
              for c, code in zip(rel.columns, staging, strict=True)]
    return [staging, direct]


def _encode(encoder: stage.Encoder, items: list[stage.Item]) -> bytes | type[BaseException]:
    try:
        return stage.encode_copy(encoder, items)
    except ENCODE_ERRORS:
        return ValueError


def _check_encoders(rel: Relation, py_rows: list[Any], nat_rows: list[Any]) -> None:
    for codes in _wire_codes(rel):
        for meta in (True, False):
            ref = stage.row_encoder(rel.columns, codes, meta=meta)
            nat = row_encoder(rel.columns, codes, meta=meta)
            want = _encode(ref, [(7, 3, b"u", 1, r) for r in py_rows])
            got = _encode(nat, [(7, 3, b"u", 1, r) for r in nat_rows])
            assert got == want, (codes, meta)


def _check_decoded(py: Any, nat: Any) -> None:
    assert nat.relation == py.relation
    assert nat.op is py.op and nat.position == py.position
    assert (nat.xid, nat.commit_ts_us, nat.unchanged, nat.snapshot, nat.ts_ms) == (
        py.xid, py.commit_ts_us, py.unchanged, py.snapshot, py.ts_ms)
    for a, b in ((py.before, nat.before), (py.after, nat.after)):
        if a is None:
            assert b is None
            continue
        got = tuple(b)
        assert len(got) == len(a) == len(b)
        assert all(_same(x, y) for x, y in zip(a, got, strict=True)), (a, got)
        assert all(_same(a[i], b[i]) for i in range(len(a)))


# BRIDGE_NATIVE_EXAMPLES=5000 for a deeper run than the suite's
SETTINGS = settings(max_examples=int(os.environ.get("BRIDGE_NATIVE_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data(), shape=relations())
def test_rows_and_copy_streams_equal_the_reference(data: st.DataObject,
                                                   shape: tuple[Relation, list[st.SearchStrategy[Any]]]) -> None:
    rel, values = shape
    store = MemorySchemaStore()
    codec = TableCodec(rel, store, db="d", topic_prefix="bridge")
    before = data.draw(st.one_of(st.none(), st.builds(tuple, st.tuples(*values))))
    after = tuple(data.draw(v) for v in values)
    op = data.draw(st.sampled_from([Op.INSERT, Op.UPDATE, Op.DELETE, Op.READ]))
    unchanged = tuple(data.draw(st.lists(st.sampled_from(rel.column_names), max_size=2)))
    event = ChangeEvent(rel, op, Position(Lsn(data.draw(st.integers(0, 2**64 - 1))), data.draw(st.integers(0, 10**6))),
                        data.draw(st.integers(0, 2**32)), data.draw(st.one_of(st.none(), st.integers(-I64, I64 - 1))),
                        before, after, unchanged=unchanged)
    try:
        value = codec.value(event)
    except CodecError:
        return  # a value the producer refuses (e.g. a ragged array) never reaches the sink
    py = EnvelopeDecoder(store).decode(value)
    nat = NativeEnvelopeDecoder(store).decode(value)
    _check_decoded(py, nat)
    rows = [r for r in (py.before, py.after) if r is not None]
    nrows = [r for r in (nat.before, nat.after) if r is not None]
    _check_encoders(rel, rows, nrows)


def _forge(data: st.DataObject, value: bytes) -> bytes:
    body = bytearray(value)
    how = data.draw(st.sampled_from(["flip", "truncate", "insert", "random", "splice"]))
    if how == "flip" and len(body) > 10:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(10, len(body) - 1))
            body[i] = data.draw(st.integers(0, 255))
    elif how == "truncate":
        body = body[:data.draw(st.integers(10, len(body)))]
    elif how == "insert":
        i = data.draw(st.integers(10, len(body)))
        body[i:i] = data.draw(st.binary(min_size=1, max_size=12))
    elif how == "random":
        body = body[:10] + bytearray(data.draw(st.binary(max_size=80)))
    else:  # a big varint where a small one was: counts, lengths, integers
        i = data.draw(st.integers(10, len(body)))
        body[i:i] = data.draw(st.sampled_from([b"\xff\xff\xff\xff\x0f", b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                                               b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", b"\x01", b"\x7f"]))
    return bytes(body)


@SETTINGS
@given(data=st.data(), shape=relations())
def test_forged_bodies_fail_alike(data: st.DataObject, shape: tuple[Relation, list[st.SearchStrategy[Any]]]) -> None:
    rel, values = shape
    store = MemorySchemaStore()
    codec = TableCodec(rel, store, db="d", topic_prefix="bridge")
    event = ChangeEvent(rel, Op.UPDATE, Position(Lsn(5), 1), 1, None, tuple(data.draw(v) for v in values),
                        tuple(data.draw(v) for v in values))
    try:
        value = codec.value(event)
    except CodecError:
        return
    forged = _forge(data, value)
    try:
        py = EnvelopeDecoder(store).decode(forged)
    except CodecError:
        with pytest.raises(CodecError):
            NativeEnvelopeDecoder(store).decode(forged)
        return
    nat = NativeEnvelopeDecoder(store).decode(forged)
    _check_decoded(py, nat)
    rows = [r for r in (py.before, py.after) if r is not None]
    nrows = [r for r in (nat.before, nat.after) if r is not None]
    _check_encoders(rel, rows, nrows)


INT_COLS = Relation("public", "ints", (Column("a", "smallint", "int2"), Column("b", "integer", "int4"),
                                       Column("c", "date", "date"), Column("d", "timestamp with time zone", "timestamptz")),
                    ("a",))
LONG_COLS = Relation("public", "ints", tuple(Column(c.name, "bigint", "int8") for c in INT_COLS.columns), ("a",))


@pytest.mark.parametrize("big", [40_000, 2**31, -(2**31) + 5, 2**62, -(2**63)])
def test_out_of_range_integers_are_refused_at_encoding_by_both(big: int) -> None:
    """Avro int/long varints carry up to 70 bits; a value its wire type cannot hold decodes in
    both readers and is refused by both encoders (the record is then isolated and dead-lettered)."""
    store = MemorySchemaStore()
    narrow = TableCodec(INT_COLS, store, db="d", topic_prefix="bridge")
    wide = TableCodec(LONG_COLS, store, db="d", topic_prefix="bridge")
    body = wide.value(ChangeEvent(LONG_COLS, Op.INSERT, Position(Lsn(1), 0), 1, None, None, (big, big, big, big)))
    forged = narrow.value_prefix + body[len(wide.value_prefix):]
    py = EnvelopeDecoder(store).decode(forged)
    nat = NativeEnvelopeDecoder(store).decode(forged)
    _check_decoded(py, nat)
    assert py.after is not None and nat.after is not None
    _check_encoders(INT_COLS, [py.after], [nat.after])


def test_huge_counts_and_lengths_are_refused_before_allocating() -> None:
    rel = Relation("public", "arr", (Column("a", "integer[]", "int4", ndims=1), Column("t", "text", "text")), ())
    store = MemorySchemaStore()
    codec = TableCodec(rel, store, db="d", topic_prefix="bridge")
    prefix = codec.value_prefix
    # after = row; a = array with a block count of 2**60; then nothing
    for body in (b"\x00\x02\x02" + b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # count
                 b"\x00\x02\x00\x02" + b"\xfe\xff\xff\xff\xff\xff\xff\x7f",  # string length
                 b"\x00\x02\x02\x01\xff\xff\xff\xff\x0f"):  # negative count with a block size
        with pytest.raises(CodecError):
            EnvelopeDecoder(store).decode(prefix + body)
        with pytest.raises(CodecError):
            NativeEnvelopeDecoder(store).decode(prefix + body)


def test_nan_payloads_match_the_reference() -> None:
    rel = Relation("public", "f", (Column("f", "real", "float4"), Column("d", "double precision", "float8")), ())
    store = MemorySchemaStore()
    codec = TableCodec(rel, store, db="d", topic_prefix="bridge")
    base = codec.value(ChangeEvent(rel, Op.INSERT, Position(Lsn(1), 0), 1, None, None, (1.0, 2.0)))
    i = base.index(struct.pack("<f", 1.0))
    for bits in (0x7F800001, 0x7FC00000, 0xFFC00001, 0x7FBFFFFF):
        forged = base[:i] + struct.pack("<I", bits) + base[i + 4:]
        py = EnvelopeDecoder(store).decode(forged)
        nat = NativeEnvelopeDecoder(store).decode(forged)
        assert py.after is not None and nat.after is not None
        assert math.isnan(py.after[0]) and math.isnan(nat.after[0])
        _check_encoders(rel, [py.after], [nat.after])


def test_decimals_at_every_exponent() -> None:
    """`str(Decimal)` (the staging text of numeric) and the binary numeric, around the switch to
    exponent notation and at the precision's ends."""
    rel = Relation("public", "d", (Column("m", "numeric(40,30)", "numeric", precision=40, scale=30),), ())
    store = MemorySchemaStore()
    codec = TableCodec(rel, store, db="d", topic_prefix="bridge")
    py_rows, nat_rows = [], []
    for k in range(41):
        for sign in (1, -1):
            value = codec.value(ChangeEvent(rel, Op.INSERT, Position(Lsn(1), k), 1, None, None,
                                            (Decimal(sign * (10**k // 7 or 1)).scaleb(-30),)))
            py, nat = EnvelopeDecoder(store).decode(value), NativeEnvelopeDecoder(store).decode(value)
            _check_decoded(py, nat)
            py_rows.append(py.after)
            nat_rows.append(nat.after)
    _check_encoders(rel, py_rows, nat_rows)


def test_rows_are_sequences_of_value_forms() -> None:
    rel = Relation("public", "s", (Column("id", "bigint", "int8"), Column("u", "uuid", "uuid"),
                                   Column("m", "numeric(10,3)", "numeric", precision=10, scale=3)), ("id",))
    store = MemorySchemaStore()
    codec = TableCodec(rel, store, db="d", topic_prefix="bridge")
    u = str(uuid.uuid4())
    value = codec.value(ChangeEvent(rel, Op.INSERT, Position(Lsn(9), 2), 1, None, None, (5, u, Decimal("-1.250"))))
    ch = NativeEnvelopeDecoder(store).decode(value)
    assert ch.after is not None
    assert len(ch.after) == 3 and ch.after[0] == 5 and ch.after[-1] == Decimal("-1.250") and ch.after[1] == u
    assert ch.after == (5, u, Decimal("-1.250"))
    assert list(ch.after) == [5, u, Decimal("-1.250")]
    with pytest.raises(IndexError):
        ch.after[3]


def test_the_switch_selects_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemorySchemaStore()
    assert type(envelope_decoder(store)) is NativeEnvelopeDecoder
    monkeypatch.setenv("BRIDGE_NATIVE", "0")
    assert type(envelope_decoder(store)) is EnvelopeDecoder
    assert row_encoder(INT_COLS.columns).__qualname__ == "encode"  # the generated reference encoder
    monkeypatch.delenv("BRIDGE_NATIVE")
    assert row_encoder(INT_COLS.columns).__qualname__ == "row_encoder.<locals>.encode"
