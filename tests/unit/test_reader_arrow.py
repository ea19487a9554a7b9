"""`bridge.reader.arrow`: the Avro to Arrow type mapping, and batches of decoded envelopes.

Envelopes are written by the producer's encoder (`TableCodec`) and decoded by the sink's decoders
(native and reference); the batch must hold the decoded values, value for value, in the mapped
types: temporal columns are compared through their integer storage (days, microseconds), which
is exactly the Avro value.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codec import EnvelopeDecoder, MemorySchemaStore, TableCodec
from bridge.codec.codec import Stamp
from bridge.errors import CodecError, SchemaError
from bridge.reader import META_FIELDS, ArrowPlan, ReaderError, arrow_type
from bridge.reader.arrow import BatchBuilder
from bridge.relation import Column, Relation
from bridge.sink.native_stage import NativeEnvelopeDecoder
from tests.unit.test_native_sink import relations

DEC = {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}


@pytest.mark.parametrize(("avro", "arrow"), [
    ("int", pa.int32()), ("long", pa.int64()), ("float", pa.float32()), ("double", pa.float64()),
    ("boolean", pa.bool_()), ("string", pa.string()), ("bytes", pa.binary()),
    (["null", "long"], pa.int64()),
    ({"type": "int", "logicalType": "date"}, pa.date32()),
    ({"type": "long", "logicalType": "time-micros"}, pa.time64("us")),
    ({"type": "long", "logicalType": "timestamp-micros"}, pa.timestamp("us", tz="UTC")),
    ({"type": "long", "logicalType": "local-timestamp-micros"}, pa.timestamp("us")),
    ({"type": "string", "logicalType": "uuid"}, pa.string()),
    (DEC, pa.decimal128(12, 2)),
    (["null", DEC, "string"], pa.decimal128(12, 2)),  # numeric(p,s): NaN/Infinity in the string branch
    (dict(DEC, precision=38, scale=0), pa.decimal128(38, 0)),
    (dict(DEC, precision=39, scale=5), pa.string()),  # past decimal128: text
    ({"type": "array", "items": ["null", "int"]}, pa.list_(pa.int32())),
    ({"type": "array", "items": {"type": "array", "items": ["null", {"type": "int", "logicalType": "date"}]}},
     pa.list_(pa.list_(pa.date32()))),
    ({"type": "long", "logicalType": "something-else"}, pa.int64()),  # unknown logical type: the base type
])
def test_avro_type_maps_to_arrow(avro: Any, arrow: pa.DataType) -> None:
    assert arrow_type(avro)[0] == arrow


def test_decimals_as_string_maps_every_decimal_to_text() -> None:
    t, conv = arrow_type(["null", DEC, "string"], decimals="string")
    assert t == pa.string() and conv is not None
    assert [conv(v) for v in (Decimal("1.50"), Decimal("1E-7"), "NaN", None)] == ["1.50", "0.0000001", "NaN", None]
    t, conv = arrow_type({"type": "array", "items": ["null", DEC, "string"]}, decimals="string")
    assert t == pa.list_(pa.string()) and conv is not None and conv([Decimal("2.00"), None]) == ["2.00", None]


@pytest.mark.parametrize("avro", [{"type": "map", "values": "long"}, ["null", "int", "string"], "fixed",
                                  {"type": "record", "name": "R", "fields": []}, 7])
def test_types_the_bridge_does_not_write_are_refused(avro: Any) -> None:
    with pytest.raises(SchemaError):
        arrow_type(avro)


ORDERS = Relation("public", "orders", (
    Column("id", "bigint", "int8", not_null=True), Column("amount", "numeric(12,2)", "numeric", precision=12, scale=2),
    Column("day", "date", "date"), Column("at", "timestamp with time zone", "timestamptz"),
    Column("tags", "text[]", "text", ndims=1), Column("Odd name", "real", "float4"),
), ("id",))


def _envelopes(rel: Relation, changes: list[tuple[str, Any, Any]]) -> tuple[MemorySchemaStore, list[bytes]]:
    store = MemorySchemaStore()
    codec = TableCodec(rel, store, db="db", topic_prefix="bridge")
    stamp = Stamp(0x1_0000_00A0, 77, 1_700_000_000_000_000, False, 5)
    return store, [codec.envelope(before, after, op, seq, stamp, ("tags",) if op == "u" else ())
                   for seq, (op, before, after) in enumerate(changes)]


def _batch(decoder: EnvelopeDecoder, values: list[bytes], **kw: Any) -> pa.RecordBatch:
    b: BatchBuilder | None = None
    for offset, v in enumerate(values):
        change = decoder.decode(v)
        if b is None:
            b = BatchBuilder(ArrowPlan.of(decoder._store.lookup(v)[0], **kw))
        b.append(change, 3, 100 + offset, len(v))
    assert b is not None
    return b.finish("bridge.public.orders")


@pytest.mark.parametrize("native", [True, False])
def test_batch_holds_row_images_and_control_columns(native: bool) -> None:
    row = (1, Decimal("12.50"), 19_000, 1_700_000_000_123_456, ["a", None], 1.5)
    store, values = _envelopes(ORDERS, [("c", None, row), ("u", row, (*row[:1], Decimal("0.01"), *row[2:])),
                                        ("d", (1, None, None, None, None, None), None), ("t", None, None)])
    batch = _batch((NativeEnvelopeDecoder if native else EnvelopeDecoder)(store, topic_prefix="bridge"), values)
    assert batch.schema.names == ["id", "amount", "day", "at", "tags", "Odd name", *(f.name for f in META_FIELDS)]
    assert batch.schema.field("amount").metadata == {b"pg.type": b"numeric(12,2)"}
    assert batch.schema.metadata == {b"pg.table": b"public.orders"}
    got = batch.to_pydict()
    assert got["id"] == [1, 1, 1, None]
    assert got["amount"] == [Decimal("12.50"), Decimal("0.01"), None, None]
    assert batch.column("day").cast(pa.int32()).to_pylist() == [19_000, 19_000, None, None]
    assert batch.column("at").cast(pa.int64()).to_pylist() == [1_700_000_000_123_456] * 2 + [None, None]
    assert got["tags"] == [["a", None], ["a", None], None, None]
    assert got["__op"] == ["c", "u", "d", "t"]
    assert got["__lsn"] == [0x1_0000_00A0] * 4 and got["__seq"] == [0, 1, 2, 3] and got["__xid"] == [77] * 4
    assert batch.column("__commit_ts").cast(pa.int64()).to_pylist() == [1_700_000_000_000_000] * 4
    assert got["__unchanged"] == [None, ["tags"], None, None] and got["__snapshot"] == [False] * 4
    assert got["__partition"] == [3] * 4 and got["__offset"] == [100, 101, 102, 103]


def test_nan_numeric_names_its_record_or_reads_as_text() -> None:
    row = (1, Decimal("NaN"), None, None, None, None)
    store, values = _envelopes(ORDERS, [("c", None, (2, Decimal("1.00"), None, None, None, None)), ("c", None, row)])
    with pytest.raises(ReaderError) as err:
        _batch(NativeEnvelopeDecoder(store), values)
    assert err.value.context | {"partition": 3, "offset": 101, "column": "amount"} == err.value.context
    assert "decimals='string'" in str(err.value)
    batch = _batch(NativeEnvelopeDecoder(store), values, decimals="string")
    assert batch.column("amount").to_pylist() == ["1.00", "NaN"]


def _expected(v: Any) -> Any:
    """A decoded value as the batch's storage gives it back (Decimal kept, floats as repr)."""
    if isinstance(v, list):
        return [_expected(x) for x in v]
    if isinstance(v, float):
        return repr(v)
    return v


def _storage_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_list(t):
        return pa.list_(_storage_type(t.value_type))
    if pa.types.is_temporal(t):
        return pa.int32() if pa.types.is_date32(t) else pa.int64()
    return t


def _floats_as_repr(v: Any) -> Any:
    if isinstance(v, list):
        return [_floats_as_repr(x) for x in v]
    return repr(v) if isinstance(v, float) else v


def _storage(arr: pa.Array) -> list[Any]:
    """An array's values with temporal types read as their integers (days, microseconds: the
    Avro values; also past Python's datetime range), floats as repr (NaN equal to NaN)."""
    return [_floats_as_repr(v) for v in arr.cast(_storage_type(arr.type)).to_pylist()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_batch_values_equal_decoded_values(data: st.DataObject) -> None:
    rel, strategies = data.draw(relations())
    rows = data.draw(st.lists(st.tuples(*strategies), min_size=1, max_size=5))
    store = MemorySchemaStore()
    codec = TableCodec(rel, store, db="db", topic_prefix="bridge")
    stamp = Stamp(5, 1, None, True, 0)
    values = []
    for seq, row in enumerate(rows):
        try:
            values.append(codec.envelope(None, row, "r", seq, stamp))
        except CodecError:
            continue  # a value the producer refuses (a ragged array, a surrogate): never in a topic
    if not values:
        return
    decoder = NativeEnvelopeDecoder(store)
    decoded = [decoder.decode(v).after for v in values]
    batch = _batch(decoder, values, decimals="string")
    # decimals as text: the conversion `test_decimals_as_string_maps_every_decimal_to_text` checks
    convert = ArrowPlan.of(store.lookup(values[0])[0], decimals="string").convert
    for i, col in enumerate(rel.columns):
        conv = convert[i] or (lambda v: v)
        want = [None if r is None else _expected(conv(r[i])) for r in decoded]
        assert _storage(batch.column(i)) == want, (col, decoded)
    assert batch.column("__op").to_pylist() == ["r"] * len(values)
    assert batch.column("__snapshot").to_pylist() == [True] * len(values)
