"""`bridge.reader` with Confluent framing and a real schema registry (Apicurio, `registry`
fixture) on a real broker: records written by the producer's encoder through the registry,
across a schema evolution (a column widened from integer to bigint, a column added), read back
with `registry_url`. Each writer schema gives its own batches; `read_table` unifies them (the
widened column promoted, the added one null before it existed)."""

from __future__ import annotations

import uuid

import pyarrow as pa

from bridge.codec import TableCodec
from bridge.codec.codec import Stamp
from bridge.codec.registry import RegistrySchemaStore
from bridge.kafka.admin import TopicManager
from bridge.local.registry import LocalRegistry
from bridge.reader import TopicReader, read_table
from bridge.relation import Column, Relation
from tests.conftest import Broker

ID = Column("id", "bigint", "int8", not_null=True)
V1 = Relation("public", "stock", (ID, Column("qty", "integer", "int4")), ("id",))
V2 = Relation("public", "stock", (ID, Column("qty", "bigint", "int8"), Column("note", "text", "text")), ("id",),
              version=2)


def test_reader_reads_confluent_framing_through_the_registry(broker: Broker, registry: LocalRegistry) -> None:
    prefix = f"rr{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.public.stock"
    TopicManager(broker.bootstrap, partitions=1, replication_factor=1).ensure(topic)
    store = RegistrySchemaStore(registry.url)
    stamp = Stamp(0x3_0000_0000, 5, 1_700_000_000_000_000, False, 0)
    values = [TableCodec(V1, store, db="db", topic_prefix=prefix).envelope(None, (k, k * 10), "c", k, stamp)
              for k in range(3)]
    v2 = TableCodec(V2, store, db="db", topic_prefix=prefix)
    values += [v2.envelope(None, (3, 5_000_000_000, "big"), "c", 3, stamp),
               v2.envelope((0, None, None), None, "d", 4, stamp)]
    assert all(v[0] == 0 for v in values)  # Confluent framing: magic 0 + schema id
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for v in values:
        producer.produce(topic, value=v)
    assert producer.flush(30) == 0

    reader = TopicReader(broker.bootstrap, topic, topic_prefix=prefix, registry_url=registry.url)
    batches = list(reader.batches())
    assert [(b.num_rows, b.schema.field("qty").type) for b in batches] == [(3, pa.int32()), (2, pa.int64())]
    assert "note" not in batches[0].schema.names and "note" in batches[1].schema.names

    table = read_table(broker.bootstrap, topic, topic_prefix=prefix, registry_url=registry.url)
    assert table.schema.field("qty").type == pa.int64()
    assert table.select(["id", "qty", "note", "__op", "__seq"]).to_pylist() == [
        {"id": 0, "qty": 0, "note": None, "__op": "c", "__seq": 0},
        {"id": 1, "qty": 10, "note": None, "__op": "c", "__seq": 1},
        {"id": 2, "qty": 20, "note": None, "__op": "c", "__seq": 2},
        {"id": 3, "qty": 5_000_000_000, "note": "big", "__op": "c", "__seq": 3},
        {"id": 0, "qty": None, "note": None, "__op": "d", "__seq": 4},
    ]
