"""TopicSchemaStore against real brokers: one instance publishes, a fresh one learns from the topic."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from bridge.codec import EnvelopeDecoder, TableCodec, TopicSchemaStore
from bridge.codec.framing import fingerprint
from bridge.errors import CodecError
from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.relation import Column, Relation
from tests.conftest import Broker

ORDERS = Relation("public", "orders", (
    Column("id", "bigint", "int8", not_null=True),
    Column("amount", "numeric(12,2)", "numeric", not_null=True, precision=12, scale=2),
    Column("created_at", "timestamp with time zone", "timestamptz", not_null=True),
    Column("payload", "jsonb", "jsonb"),
), ("id",))
ROW = (1, Decimal("9.99"), 1_763_000_000_000_000, '{"k": 1}')


def schema_records(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        c.assign([TopicPartition(topic, 0, 0)])
        out: list[tuple[bytes, bytes]] = []
        while len(out) < high:
            msg = c.poll(5)
            assert msg is not None, "schema topic shorter than its high watermark"
            assert msg.error() is None
            k, v = msg.key(), msg.value()
            assert isinstance(k, bytes) and isinstance(v, bytes)
            out.append((k, v))
        return out
    finally:
        c.close()


def test_publish_then_decode_from_a_fresh_store(broker: Broker, topic_name: str, tmp_path: Path) -> None:
    writer_store = TopicSchemaStore(broker.bootstrap, topic_name)
    codec = TableCodec(ORDERS, writer_store, db="shop", topic_prefix=topic_name)
    TableCodec(ORDERS, writer_store, db="shop", topic_prefix=topic_name)  # same schemas: not published again
    value = codec.value(ChangeEvent(ORDERS, Op.INSERT, Position(Lsn(0x16B374D848), 3), 77, None, None, ROW))
    key = codec.key(ROW)
    assert key is not None and value[:2] == b"\xc3\x01"

    records = schema_records(broker.bootstrap, f"{topic_name}._schemas")
    assert len(records) == 2  # key schema and value schema, once each
    for k, v in records:
        assert len(k) == 8 and fingerprint(json.loads(v)) == k
    assert {value[2:10], key[2:10]} == {k for k, _ in records}

    reader_store = TopicSchemaStore(broker.bootstrap, topic_name)
    dec = EnvelopeDecoder(reader_store)
    change = dec.decode(value)
    assert change.after == ROW and change.relation == ORDERS and change.position.seq == 3
    assert dec.decode_key(key) == (1,)

    with pytest.raises(CodecError, match="unknown schema fingerprint"):
        reader_store.lookup(b"\xc3\x01" + bytes(8) + b"\x00")
    with pytest.raises(CodecError, match="single-object"):
        reader_store.lookup(b"\x00\x00\x00\x00\x01")

    paths = TopicSchemaStore(broker.bootstrap, topic_name).export_avsc(tmp_path)
    assert len(paths) == 2 and all(p.suffix == ".avsc" for p in paths)


def test_schema_topic_is_compacted(broker: Broker, topic_name: str) -> None:
    TopicSchemaStore(broker.bootstrap, topic_name).register({"type": "record", "name": "R", "fields": []})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, f"{topic_name}._schemas")
    try:
        configs = admin.describe_configs([res])[res].result(30)
    except Exception as exc:  # a broker that cannot describe configs cannot show compaction
        pytest.skip(f"{broker.kind} does not describe topic configs: {exc}")
    assert configs["cleanup.policy"].value == "compact"
