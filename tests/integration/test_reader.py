"""`bridge.reader` against a real broker: the producer's topics read back as Arrow.

1. The real producer (a child process, real PostgreSQL) streams a table of many types through
   inserts, updates, deletes (with tombstones), an `ADD COLUMN` mid-topic and more changes. The
   topic read with `bridge.reader` must hold every change: each row's values equal to the source
   table's at the time of the change (read with psycopg, compared as Python values), and the
   control columns equal to what was written (the records decoded independently with fastavro:
   op, commit LSN, seq, xid, commit time; partition and offset of each record).
2. Records written by the producer's encoder, then a forged record: the read fails naming its
   partition and offset; with `on_error="skip"` it is counted and every other record is read.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from confluent_kafka import Producer

from bridge.codec import TableCodec, TopicSchemaStore
from bridge.codec.codec import Stamp
from bridge.kafka.admin import TopicManager
from bridge.reader import ReaderError, TopicReader, read_batches, read_table
from bridge.relation import Column, Relation
from bridge.signing import Signer
from tests.conftest import Broker
from tests.pipeline import BridgeProcess, slot_confirmed, wait_slot_active, write_config
from tests.support.topics import decoded

SCHEMA = """
CREATE TABLE public.items (id bigint PRIMARY KEY, i integer, s smallint, f real, d double precision,
  n numeric(12,2), nn numeric, big numeric(50,10), b boolean, t text, v varchar(10), by bytea, dt date,
  tm time, ts timestamp, tz timestamptz, u uuid, j jsonb, arr integer[], tarr text[], iv interval)
"""
INSERT = """
INSERT INTO public.items SELECT g, g * 1000, g %% 100, g / 4.0, g * 1e10 + 0.5, g * 1.25, g / 8.0,
  g * 123456789.0123456789, g %% 2 = 0, CASE WHEN g %% 3 = 0 THEN NULL ELSE 'it''s ' || g END, 'v' || g,
  decode(md5(g::text), 'hex'), '2020-02-29'::date + g, '12:34:56.5'::time + g * interval '1 s',
  '1999-12-31 23:59:59.999999'::timestamp + g * interval '1 min',
  '2026-11-23 10:00:00.123456+02'::timestamptz + g * interval '1 h', md5(g::text)::uuid,
  jsonb_build_object('g', g, 'q', 'x"y'), ARRAY[g, NULL, -g], ARRAY['a' || g, NULL], g * interval '1 day 1 s'
FROM generate_series(%s::int, %s::int) g
"""
# the forms the reader gives: numeric without modifiers, numeric past decimal128, uuid, jsonb and
# interval as PostgreSQL's text; the rest as psycopg loads them
SELECT = ("SELECT id, i, s, f, d, n, nn::text, big::text, b, t, v, by, dt, tm, ts, tz, u::text, j::text, arr, tarr, "
          "iv::text{extra} FROM public.items WHERE id = ANY(%s) ORDER BY id")
N = 300


def _rows(conn: psycopg.Connection[Any], ids: list[int], extra: bool = False) -> dict[int, tuple[Any, ...]]:
    sql = SELECT.format(extra=", extra" if extra else "")
    conn.execute("SET intervalstyle = iso_8601")  # the producer's session setting
    return {r[0]: r for r in conn.execute(sql, (ids,)).fetchall()}  # type: ignore[arg-type]


def _xid(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT txid_current() % (2^32)::bigint").fetchone()[0])  # type: ignore[index]


def workload(dsn: str) -> tuple[list[tuple[str, int, int, tuple[Any, ...] | None]], dict[str, int]]:
    """The changes made, in commit order: (op, xid, id, row image as the reader must give it);
    for a delete only the key (replica identity default), the other columns null. Also the
    transactions' xids by name."""
    want: list[tuple[str, int, int, tuple[Any, ...] | None]] = []
    xids: dict[str, int] = {}
    with psycopg.connect(dsn, autocommit=False) as conn:
        conn.execute(INSERT, (1, N))
        xids["insert"] = x = _xid(conn)
        conn.commit()
        want += [("c", x, k, r) for k, r in _rows(conn, list(range(1, N + 1))).items()]
        conn.execute("UPDATE public.items SET t = t || '!', n = -n, tz = tz + interval '1 day', arr = NULL "
                     "WHERE id % 5 = 0")
        xids["update"] = x = _xid(conn)
        conn.commit()
        want += [("u", x, k, r) for k, r in _rows(conn, list(range(5, N + 1, 5))).items()]
        conn.execute("DELETE FROM public.items WHERE id % 7 = 0")
        xids["delete"] = x = _xid(conn)
        conn.commit()
        want += [("d", x, k, (k, *([None] * 20))) for k in range(7, N + 1, 7)]
    return want, xids


def workload_after_alter(dsn: str) -> tuple[list[tuple[str, int, int, tuple[Any, ...] | None]], int]:
    """A column added, then changes that carry it (a new writer schema mid-topic)."""
    with psycopg.connect(dsn, autocommit=False) as conn:
        conn.execute("ALTER TABLE public.items ADD COLUMN extra text")
        conn.commit()
        conn.execute(INSERT, (N + 1, N + 40))
        conn.execute("UPDATE public.items SET extra = 'one' WHERE id = 1")
        x = _xid(conn)
        conn.commit()
        rows = _rows(conn, [*range(N + 1, N + 41), 1], extra=True)
        return [("c", x, k, rows[k]) for k in range(N + 1, N + 41)] + [("u", x, 1, rows[1])], x


def wait_confirmed(dsn: str, slot: str, proc: BridgeProcess) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        end = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + 180
    while (slot_confirmed(dsn, slot) or 0) < end:
        assert proc.alive(), proc.log_tail()
        assert time.monotonic() < deadline, "slot not confirmed past the workload"
        time.sleep(0.3)


def _value(v: Any) -> Any:
    return v.astimezone(UTC) if isinstance(v, datetime) and v.tzinfo is not None else v


@pytest.mark.parametrize("broker", ["kafka", "tansu"], indirect=True)
def test_reader_gives_every_change_with_its_values_and_position(broker: Broker, source_dsn: str,
                                                                 tmp_path: Path) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
    prefix, slot = f"rd{uuid.uuid4().hex[:8]}", f"rd_{uuid.uuid4().hex[:8]}"  # slots are cluster-wide
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=source_dsn, bootstrap=broker.bootstrap,
                       ack="kafka", prefix=prefix, slot=slot, kafka__tombstones=True)
    proc = BridgeProcess("produce", cfg, tmp_path).start()
    try:
        wait_slot_active(source_dsn, slot, proc)
        want, xids = workload(source_dsn)
        wait_confirmed(source_dsn, slot, proc)
        after, xids["after"] = workload_after_alter(source_dsn)
        want += after
        wait_confirmed(source_dsn, slot, proc)
    finally:
        proc.terminate()
    topic = f"{prefix}.public.items"
    reader = TopicReader(broker.bootstrap, topic, topic_prefix=prefix, max_batch_rows=100)
    batches = list(reader.batches())
    reader.close()

    # a batch holds one writer schema: the added column starts new batches, and only the changes
    # made after the ALTER carry it
    for b in batches:
        assert b.num_rows <= 100
        assert set(b.column("__xid").to_pylist()) <= ({xids["after"]} if "extra" in b.schema.names else
                                                      {xids["insert"], xids["update"], xids["delete"]})
    assert any("extra" in b.schema.names for b in batches) and any("extra" not in b.schema.names for b in batches)
    table = read_table(broker.bootstrap, topic, topic_prefix=prefix)
    assert table.schema.field("id").type == pa.int64() and table.schema.field("tz").type == pa.timestamp("us", "UTC")
    assert table.schema.field("n").type == pa.decimal128(12, 2) and table.schema.field("big").type == pa.string()
    assert table.num_rows == len(want) == reader.stats.rows
    assert reader.stats.tombstones == len(range(7, N + 1, 7)) and reader.stats.skipped == 0
    assert reader.stats.records == reader.stats.rows + reader.stats.tombstones

    # every change, value for value, in commit order per key
    cols = [f.name for f in table.schema if not f.name.startswith("__")]
    got = table.to_pylist()
    by_key: dict[int, list[Any]] = {}
    for r in sorted(got, key=lambda r: (r["__lsn"], r["__seq"])):
        key = r["id"]
        by_key.setdefault(key, []).append((r["__op"], r["__xid"], key, tuple(_value(r[c]) for c in cols)))
    expect: dict[int, list[Any]] = {}
    for op, xid, key, row in want:
        full = tuple(_value(v) for v in row) + ((None,) if len(row) == len(cols) - 1 else ())  # type: ignore[arg-type]
        expect.setdefault(key, []).append((op, xid, key, full))
    for key, changes in expect.items():  # the first difference, by column name
        for (op, xid, _, row), (gop, gxid, _, grow) in zip(changes, by_key.get(key, []), strict=False):
            diff = {c: (g, w) for c, g, w in zip(cols, grow, row, strict=True) if g != w}
            assert (gop, gxid, diff) == (op, xid, {}), (key, op)
    assert by_key == expect

    # the control columns are what the producer wrote, record by record
    written = {(r.partition, r.offset): r for r in decoded(broker.bootstrap, prefix, topic)}
    assert {(r["__partition"], r["__offset"]) for r in got} == {k for k, r in written.items() if r.value is not None}
    for r in got:
        env = written[(r["__partition"], r["__offset"])].value
        src = env["source"]
        assert (r["__op"], r["__lsn"], r["__seq"], r["__xid"], r["__snapshot"]) == \
            (env["op"], src["commit_lsn"], src["seq"], src["xid"], src["snapshot"])
        assert r["__commit_ts"] == src["commit_ts"]  # fastavro reads timestamp-micros as a UTC datetime
        assert r["__unchanged"] is None
    lsns = {x: {r["__lsn"] for r in got if r["__xid"] == x} for x in xids.values()}
    assert all(len(v) == 1 for v in lsns.values()), lsns  # one commit LSN per transaction
    assert [lsns[x] for x in xids.values()] == sorted(lsns[x] for x in xids.values())  # in commit order


ROWS = Relation("public", "forged", (Column("id", "bigint", "int8", not_null=True), Column("t", "text", "text")),
                ("id",))


def _write(broker: Broker, prefix: str, values: list[bytes | None]) -> str:
    topic = f"{prefix}.public.forged"
    TopicManager(broker.bootstrap, partitions=1, replication_factor=1).ensure(topic)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for v in values:
        producer.produce(topic, key=b"k", value=v)
    assert producer.flush(30) == 0
    return topic


def _good(broker: Broker, prefix: str, n: int) -> tuple[TableCodec, list[bytes]]:
    codec = TableCodec(ROWS, TopicSchemaStore(broker.bootstrap, prefix), db="db", topic_prefix=prefix)
    stamp = Stamp(0x2_0000_0010, 9, None, False, 0)
    return codec, [codec.envelope(None, (k, f"row {k}"), "c", k, stamp) for k in range(n)]


def test_forged_record_names_its_partition_and_offset(broker: Broker) -> None:
    prefix = f"fg{uuid.uuid4().hex[:8]}"
    codec, good = _good(broker, prefix, 10)
    forged = good[3][:len(codec.value_prefix)] + b"\xff" * 12  # the real schema's header, a body that does not decode
    topic = _write(broker, prefix, [*good[:5], None, forged, *good[5:]])

    with pytest.raises(ReaderError) as err:
        list(read_batches(broker.bootstrap, topic, topic_prefix=prefix))
    assert err.value.context | {"topic": topic, "partition": 0, "offset": 6} == err.value.context, err.value
    assert "record cannot be read" in str(err.value)

    reader = TopicReader(broker.bootstrap, topic, topic_prefix=prefix, on_error="skip")
    table = pa.Table.from_batches(list(reader.batches()))
    reader.close()
    assert table.column("id").to_pylist() == list(range(10))
    assert table.column("__offset").to_pylist() == [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]
    assert (reader.stats.records, reader.stats.rows, reader.stats.tombstones, reader.stats.skipped) == (12, 10, 1, 1)
    assert reader.stats.errors[0].context["offset"] == 6
    if broker.kind == "kafka":  # Tansu creates a topic a metadata request names
        with pytest.raises(ReaderError, match="no such topic"):
            read_table(broker.bootstrap, f"{prefix}.public.missing", topic_prefix=prefix, idle_timeout_s=10)


def test_reader_follows_a_topic_resumes_from_offsets_and_verifies_signatures(broker: Broker) -> None:
    prefix = f"fl{uuid.uuid4().hex[:8]}"
    _, good = _good(broker, prefix, 10)
    topic = _write(broker, prefix, good)
    # following: batches come out when the topic goes quiet, long before max_batch_rows
    reader = TopicReader(broker.bootstrap, topic, topic_prefix=prefix, until_end=False, max_wait_s=0.2)
    seen: list[int] = []
    started = time.monotonic()
    for batch in reader.batches():
        seen += batch.column("id").to_pylist()
        if len(seen) >= 10:
            break
    assert seen == list(range(10)) and time.monotonic() - started < 30
    # resuming after the last offset read: only what came since
    table = read_table(broker.bootstrap, topic, topic_prefix=prefix, start={0: 7})
    assert table.column("__offset").to_pylist() == [7, 8, 9] and table.column("id").to_pylist() == [7, 8, 9]
    if broker.kind != "tansu":  # Tansu's high watermark, where "latest" starts, is its last batch's base offset + 1
        assert read_table(broker.bootstrap, topic, topic_prefix=prefix, start="latest").num_rows == 0
    # with the bridge's signing secret, an unsigned record is refused
    with pytest.raises(ReaderError) as err:
        read_table(broker.bootstrap, topic, topic_prefix=prefix, signer=Signer("secret"))
    assert err.value.context | {"partition": 0, "offset": 0} == err.value.context
    assert "signature" in str(err.value)
    signer = Signer("secret")
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for v in good[:2]:
        producer.produce(topic, key=b"s", value=v, partition=0, headers=[signer.header(topic, 0, b"s", v)])
    assert producer.flush(30) == 0
    reader = TopicReader(broker.bootstrap, topic, topic_prefix=prefix, signer=signer, on_error="skip")
    assert [b.column("__offset").to_pylist() for b in reader.batches()] == [[10, 11]]
    assert reader.stats.skipped == 10
