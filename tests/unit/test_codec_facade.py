"""TableCodec → bytes → EnvelopeDecoder, with the in-process store and the registry's mock."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest

from bench.workload import orders_relation
from bridge.codec import EnvelopeDecoder, MemorySchemaStore, RegistrySchemaStore, SchemaStore, TableCodec
from bridge.codec.validate import relation_from_schema
from bridge.errors import CodecError
from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.relation import Column, Relation

ORDERS = orders_relation(replica_identity="f", version=3)

ROW = (42, 7, Decimal("123.45"), "paid", None, 1_763_000_000_123_456, '{"a": 1}')
ROW2 = (42, 7, Decimal("NaN"), "refunded", "note", 9223372036854775807, None)


def event(op: Op, before: tuple[object, ...] | None, after: tuple[object, ...] | None, **kw: object) -> ChangeEvent:
    return ChangeEvent(ORDERS, op, Position(Lsn.parse("16/B374D848"), 12), 991, 1_763_000_000_000_001,
                       before, after, **kw)  # type: ignore[arg-type]


def stores() -> list[SchemaStore]:
    out: list[SchemaStore] = [MemorySchemaStore()]
    try:
        out.append(RegistrySchemaStore("mock://codec-tests"))
    except Exception:  # the registry client's extra dependencies are missing
        pass
    return out


@pytest.fixture(params=stores(), ids=lambda s: type(s).__name__)
def store(request: pytest.FixtureRequest) -> SchemaStore:
    s: SchemaStore = request.param
    return s


def test_update_round_trip(store: SchemaStore) -> None:
    codec = TableCodec(ORDERS, store, db="shop", topic_prefix="bridge")
    assert codec.topic == "bridge.public.orders"
    before_ms = time.time_ns() // 1_000_000
    value = codec.value(event(Op.UPDATE, ROW, ROW2, unchanged=("payload",)))
    dec = EnvelopeDecoder(store).decode(value)
    assert dec.relation == ORDERS
    assert dec.op is Op.UPDATE
    assert dec.position == Position(Lsn.parse("16/B374D848"), 12)
    assert (dec.xid, dec.commit_ts_us, dec.snapshot, dec.unchanged) == (991, 1_763_000_000_000_001, False, ("payload",))
    assert dec.before == ROW
    assert dec.after is not None and dec.after[2].is_nan() and dec.after[:2] == ROW2[:2] and dec.after[3:] == ROW2[3:]
    assert all(type(a) is type(b) for a, b in zip(dec.before, ROW, strict=True))
    assert before_ms <= dec.ts_ms <= time.time_ns() // 1_000_000


def test_key_round_trip(store: SchemaStore) -> None:
    codec = TableCodec(ORDERS, store, db="shop", topic_prefix="bridge")
    key = codec.key(ROW)
    assert key is not None
    assert EnvelopeDecoder(store).decode_key(key) == (42,)
    assert codec.key(ROW) == key  # stable: partitioning depends on it


def test_composite_numeric_key() -> None:
    rel = Relation("s", "t", (Column("a", "text", "text"), Column("n", "numeric(5,1)", "numeric", precision=5, scale=1),
                              Column("v", "text", "text")), ("n", "a"))
    store = MemorySchemaStore()
    codec = TableCodec(rel, store, db="d", topic_prefix="p")
    dec = EnvelopeDecoder(store)
    assert dec.decode_key(codec.key(("x", Decimal("1.5"), "v")) or b"") == (Decimal("1.5"), "x")
    nan = dec.decode_key(codec.key(("x", Decimal("NaN"), "v")) or b"")
    assert nan[0].is_nan() and nan[1] == "x"


def test_delete_snapshot_and_no_primary_key() -> None:
    rel = Relation("public", "log", ORDERS.columns, (), replica_identity="f")
    store = MemorySchemaStore()
    codec = TableCodec(rel, store, db="shop", topic_prefix="bridge")
    assert codec.key_schema is None and codec.key(ROW) is None
    dec = EnvelopeDecoder(store).decode(codec.value(
        ChangeEvent(rel, Op.DELETE, Position(Lsn(5), 0), 1, None, ROW, None, snapshot=True)))
    assert (dec.op, dec.before, dec.after, dec.commit_ts_us, dec.snapshot) == (Op.DELETE, ROW, None, None, True)
    assert dec.relation.primary_key == ()


def test_bad_value_names_the_column() -> None:
    codec = TableCodec(ORDERS, MemorySchemaStore(), db="shop", topic_prefix="bridge")
    bad = (42, 7, Decimal("1.234"), "paid", None, 0, None)
    with pytest.raises(CodecError) as info:
        codec.value(event(Op.INSERT, None, bad))
    assert info.value.context["column"] == "amount"
    with pytest.raises(CodecError) as info:
        codec.value(event(Op.INSERT, None, (42, "seven", Decimal(1), "x", None, 0, None)))
    assert info.value.context["column"] == "account_id"
    with pytest.raises(CodecError):
        codec.value(event(Op.INSERT, None, ROW[:3]))


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"\x00\x00\x00\x00\x07rest", "single-object"),
    (b"\xc3\x01\x00", "single-object"),
    (b"garbage!!!!!", "unknown framing"),
    (b"\xc3\x01" + bytes(8) + b"\x00", "unknown schema fingerprint"),
])
def test_garbage_framing_raises_codec_error(data: bytes, words: str) -> None:
    with pytest.raises(CodecError, match=words):
        EnvelopeDecoder(MemorySchemaStore()).decode(data)


def test_tombstone_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="tombstone"):
        EnvelopeDecoder(MemorySchemaStore()).decode(None)  # type: ignore[arg-type]


def test_truncated_body_raises_codec_error() -> None:
    store = MemorySchemaStore()
    value = TableCodec(ORDERS, store, db="shop", topic_prefix="bridge").value(event(Op.INSERT, None, ROW))
    with pytest.raises(CodecError):
        EnvelopeDecoder(store).decode(value[:-30])


def test_export_avsc(tmp_path: Path) -> None:
    store = MemorySchemaStore()
    TableCodec(ORDERS, store, db="shop", topic_prefix="bridge")
    paths = store.export_avsc(tmp_path)
    assert len(paths) == 2
    schemas = [json.loads(p.read_text()) for p in paths]
    envelope = next(s for s in schemas if s["name"].startswith("Envelope"))
    assert relation_from_schema(envelope) == ORDERS


def test_registry_framing_and_fresh_client_lookup() -> None:
    pytest.importorskip("confluent_kafka.schema_registry")
    store = RegistrySchemaStore("mock://codec-fresh")
    value = TableCodec(ORDERS, store, db="shop", topic_prefix="bridge").value(event(Op.INSERT, None, ROW))
    assert value[0] == 0
    # a fresh store knows nothing locally: it must ask the registry (the same mock instance)
    other = RegistrySchemaStore("mock://codec-fresh", client=store._client)
    assert EnvelopeDecoder(other).decode(value).after == ROW
    with pytest.raises(CodecError, match="Confluent"):
        store.lookup(b"\xc3\x01" + bytes(9))


def test_envelope_in_pieces_equals_the_whole_schema_writer() -> None:
    """`envelope` writes the source block once per stamp; the bytes must be the whole schema's."""
    from bridge.codec import Stamp, compile_writer

    codec = TableCodec(ORDERS, MemorySchemaStore(), db="shop", topic_prefix="bridge")
    whole = compile_writer(codec.value_schema, prefix=codec.value_prefix)
    stamps = [Stamp(0x16B374D848, 991, 1_763_000_000_000_001, False, 1_700_000_000_000),
              Stamp(1, 0, None, True, 0), Stamp((1 << 63) - 1, (1 << 63) - 1, -5, False, 1 << 42)]
    cases = [(Op.INSERT, None, ROW, ()), (Op.UPDATE, ROW, ROW2, ("payload", "note")), (Op.DELETE, ROW, None, ()),
             (Op.READ, None, ROW2, ()), (Op.TRUNCATE, None, None, ())]
    for stamp in stamps:
        for seq in (0, 1, 8191, 8192, 1 << 40):
            for op, before, after, unchanged in cases:
                src = ("shop", "public", "orders", stamp.commit_lsn, seq, stamp.xid, stamp.commit_ts_us,
                       stamp.snapshot)
                want = whole((before, after, op, src, stamp.ts_ms, unchanged))
                assert codec.envelope(before, after, op, seq, stamp, unchanged) == want


def test_envelope_error_names_column_and_position() -> None:
    from bridge.codec import Stamp

    codec = TableCodec(ORDERS, MemorySchemaStore(), db="shop", topic_prefix="bridge")
    stamp = Stamp(0x16B374D848, 1, None, False, 0)
    with pytest.raises(CodecError) as info:
        codec.envelope(None, (42, "seven", Decimal(1), "x", None, 0, None), Op.INSERT, 3, stamp)
    assert info.value.context["column"] == "account_id"
    assert info.value.context["position"] == "16/B374D848#3"
    # the stamp is re-encoded after a failure, and a good row still encodes
    assert codec.envelope(None, ROW, Op.INSERT, 4, stamp)


def test_decode_in_pieces_equals_the_whole_body_reader() -> None:
    """The sink reuses the source block of the previous record when its bytes repeat; every
    field must still come out as the whole-body reader reads it, across stamps and tables."""
    from bridge.codec import Stamp, compile_decoder

    store = MemorySchemaStore()
    orders = TableCodec(ORDERS, store, db="shop", topic_prefix="bridge")
    other = TableCodec(ORDERS.__class__("public", "other", ORDERS.columns, ("id",), version=1), store, db="shop",
                       topic_prefix="bridge")
    whole = compile_decoder(orders.value_schema)
    dec = EnvelopeDecoder(store)
    stamps = [Stamp(0x16B374D848, 991, 1_763_000_000_000_001, False, 1_700_000_000_000),
              Stamp(0x16B374D900, 992, None, True, 1_700_000_000_001)]
    for stamp in stamps:
        for seq in (0, 1, 9000, 1 << 40):
            for codec in (orders, other, orders):
                for op, before, after, unchanged in [(Op.INSERT, None, ROW, ()), (Op.UPDATE, ROW, ROW2, ("note",)),
                                                     (Op.DELETE, ROW, None, ())]:
                    value = codec.envelope(before, after, op, seq, stamp, unchanged)
                    got = dec.decode(value)
                    if codec is orders:
                        b, a, o, src, ts_ms, unch = whole(value, store.lookup(value)[1])
                        assert repr((got.before, got.after, got.op.value, got.unchanged)) == repr((b, a, o, tuple(unch)))
                        assert (got.position.commit_lsn.value, got.position.seq, got.xid, got.commit_ts_us,
                                got.snapshot, got.ts_ms) == (src[3], src[4], src[5], src[6], src[7], ts_ms)
                    assert got.relation.table == codec.relation.table
                    assert (got.position.seq, got.xid, got.snapshot) == (seq, stamp.xid, stamp.snapshot)
                    assert repr((got.before, got.after, got.unchanged)) == repr((before, after, unchanged))


def test_decode_rejects_a_damaged_body_after_a_cached_source() -> None:
    from bridge.codec import Stamp

    store = MemorySchemaStore()
    codec = TableCodec(ORDERS, store, db="shop", topic_prefix="bridge")
    dec = EnvelopeDecoder(store)
    stamp = Stamp(0x16B374D848, 991, None, False, 1)
    good = codec.envelope(None, ROW, Op.INSERT, 1, stamp)
    assert dec.decode(good).position.seq == 1
    for bad in (good[:-1], good + b"\x00", good[:-3], good[:20]):
        with pytest.raises(CodecError):
            dec.decode(bad)
    assert dec.decode(codec.envelope(None, ROW, Op.INSERT, 2, stamp)).position.seq == 2


def test_values_wider_than_the_declared_modifiers_raise_modifier_errors() -> None:
    """A varchar(n) value longer than n, or a numeric(p,s) value with more digits than p or s,
    means the column was widened by a DDL the lines do not show: `ModifierError` names the column."""
    from bridge.codec import Stamp
    from bridge.errors import ModifierError

    rel = Relation("public", "m", (
        Column("id", "integer", "int4", not_null=True),
        Column("code", "character varying(3)", "varchar", length=3),
        Column("amt", "numeric(5,2)", "numeric", precision=5, scale=2),
    ), ("id",), version=1)
    codec = TableCodec(rel, MemorySchemaStore(), db="shop", topic_prefix="bridge")
    stamp = Stamp(1, 1, None, False, 0)
    assert codec.envelope(None, (1, "abc", Decimal("999.99")), Op.INSERT, 0, stamp)
    cases = [((1, "abcd", Decimal("1.00")), "code"), ((1, "a", Decimal("1000.00")), "amt"),
             ((1, "a", Decimal("1.001")), "amt")]
    for row, column in cases:
        with pytest.raises(ModifierError) as info:
            codec.envelope(None, row, Op.INSERT, 0, stamp)
        assert info.value.context["column"] == column and info.value.context["table"] == "public.m"
    key_rel = Relation("public", "k", (Column("code", "character varying(3)", "varchar", not_null=True, length=3),),
                       ("code",), version=1)
    with pytest.raises(ModifierError):
        TableCodec(key_rel, MemorySchemaStore(), db="shop", topic_prefix="bridge").key(("abcd",))
