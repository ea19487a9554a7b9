"""Initial snapshot throughput: rows/s of the standard `orders` table into Kafka, beside
PostgreSQL's own `COPY (SELECT …) TO STDOUT` of the same table in the same run.

    .venv/bin/python bench/snapshot.py [--rows 200000] [--broker tansu|kafka] [--chunk-rows 10000] [--repeat 3]

Starts its own throwaway PostgreSQL and broker, fills `public.orders` with the insert mix, then:
- COPY: `COPY (SELECT * FROM public.orders) TO STDOUT` read through psycopg 3 (text format,
  every byte pulled into Python), the ceiling for reading the table at all;
- snapshot: the producer's own wiring (`app.build_producer`, slot created with EXPORT_SNAPSHOT,
  `source.snapshot: initial`), timed around `InitialSnapshot.run` alone: keyset chunks,
  conversion, Avro encoding, produce, and each chunk's delivery (progress is saved per chunk).
Each measurement is the median of `--repeat` runs (a fresh slot and topic prefix per run).
Prints one JSON object and a short table.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.workload import TABLE, create_orders, write_insert_mix
from bridge.local.brokers import BROKERS
from bridge.local.postgres import LocalPostgres

DEFAULT_ROWS = 200_000


def copy_rate(dsn: str, table: str = TABLE) -> tuple[int, float]:
    """(rows, seconds) of `COPY (SELECT * FROM table) TO STDOUT`, every block read into Python."""
    rows = 0
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        with cur.copy(f"COPY (SELECT * FROM {table}) TO STDOUT") as copy:
            for block in copy:
                rows += bytes(block).count(b"\n")
        return rows, time.perf_counter() - t0


def count_records(bootstrap: str, topic: str) -> int:
    """Records in `topic`, counted by reading it (Tansu's high watermarks are not record counts)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                  "enable.partition.eof": True, "fetch.queue.backoff.ms": 10})
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        pending, n = set(parts), 0
        deadline = time.monotonic() + 300
        while pending and time.monotonic() < deadline:
            for m in c.consume(10_000, 1.0):
                err = m.error()
                if err is None:
                    n += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
        return n
    finally:
        c.close()


def snapshot_rate(dsn: str, bootstrap: str, chunk_rows: int, workdir: Path) -> tuple[int, float]:
    """(rows, seconds) of the producer's initial snapshot of every table in `dsn`."""
    from bridge.app import build_producer
    from bridge.config import load_config
    from bridge.source.slot import SlotManager

    tag = uuid.uuid4().hex[:8]
    path = workdir / f"bench-{tag}.json"
    path.write_text(json.dumps({
        "source": {"dsn": dsn, "slot": f"bench_snap_{tag}", "tables": ["public.*"], "snapshot": "initial"},
        "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": f"snap{tag}", "partitions": 6},
        "ack": "kafka",
    }))
    cfg = load_config(str(path))
    producer, close = build_producer(cfg)
    try:
        snapshot = producer.snapshot
        assert snapshot is not None, "no snapshot planned"
        plan = snapshot.plan
        plan.chunk_rows = chunk_rows
        t0 = time.perf_counter()
        snapshot.run(lambda: False)
        producer.emitter.flush(60)
        took = time.perf_counter() - t0
        rows = sum(t.rows for t in plan.state.tables.values())
        in_kafka = count_records(bootstrap, f"snap{tag}.public.orders")
        if in_kafka != rows:
            raise SystemExit(f"the topic holds {in_kafka} records, the snapshot read {rows} rows")
        return rows, took
    finally:
        close()
        SlotManager(cfg.source.conninfo(), cfg.source.slot).drop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    ap.add_argument("--broker", choices=sorted(BROKERS), default="tansu")
    ap.add_argument("--chunk-rows", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    pg = LocalPostgres().start()
    broker = BROKERS[args.broker]().start()
    try:
        dsn = pg.create_database("snapbench")
        create_orders(dsn)
        write_insert_mix(dsn, args.rows)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"VACUUM ANALYZE {TABLE}")
        copies = [copy_rate(dsn) for _ in range(args.repeat)]
        with tempfile.TemporaryDirectory() as tmp:
            snaps = [snapshot_rate(dsn, broker.bootstrap, args.chunk_rows, Path(tmp)) for _ in range(args.repeat)]
        copy_rps = statistics.median(r / s for r, s in copies)
        snap_rps = statistics.median(r / s for r, s in snaps)
        result: dict[str, Any] = {
            "rows": args.rows, "broker": args.broker, "chunk_rows": args.chunk_rows, "repeat": args.repeat,
            "copy_rows_per_s": round(copy_rps), "snapshot_rows_per_s": round(snap_rps),
            "snapshot_vs_copy": round(snap_rps / copy_rps, 4),
            "snapshot_seconds": [round(s, 2) for _, s in snaps], "copy_seconds": [round(s, 3) for _, s in copies],
        }
        print(json.dumps(result))
        print(f"COPY (SELECT ...) TO STDOUT : {copy_rps:>12,.0f} rows/s")
        print(f"snapshot into Kafka         : {snap_rps:>12,.0f} rows/s  ({snap_rps / copy_rps:.1%} of COPY)")
    finally:
        broker.destroy()
        pg.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
