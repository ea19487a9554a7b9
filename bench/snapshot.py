"""Initial snapshot throughput: rows/s of the standard `orders` table into Kafka, beside
PostgreSQL's own `COPY (SELECT …) TO STDOUT` of the same table in the same run.

    .venv/bin/python bench/snapshot.py [--rows 200000] [--broker tansu|kafka] [--chunk-rows 10000] [--repeat 3]

Starts its own throwaway PostgreSQL and broker, fills `public.orders` with the insert mix, then:
- COPY: `COPY (SELECT * FROM public.orders) TO STDOUT` read through psycopg 3 (text format,
  every byte pulled into Python), the ceiling for reading the table at all;
- COPY BINARY: the same with `(FORMAT BINARY)`, the limit issue #15 measures the snapshot
  against (target >= 0.3x);
- snapshot: the producer's own wiring (`app.build_producer`, slot created with EXPORT_SNAPSHOT,
  `source.snapshot: initial`, the table's topic created beforehand), timed around
  `InitialSnapshot.run` alone: keyset chunks,
  conversion, Avro encoding, produce, and each chunk's delivery (progress is saved per chunk);
  once with the native core (binary COPY chunks transcoded in Rust) and once with
  `BRIDGE_NATIVE=0` (the Python reference path: `::text` chunks, Python converters and codec).
Each measurement is the median of `--repeat` runs (a fresh slot and topic prefix per run).
Prints one JSON object and a short table. `bench/run.py` calls `measure(dsn, bootstrap, …)`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


def copy_binary_rate(dsn: str, table: str = TABLE) -> tuple[int, float]:
    """(rows, seconds) of `COPY (SELECT * FROM table) TO STDOUT (FORMAT BINARY)`, every block
    read into Python as bytes (rows counted afterwards, outside the timing)."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        size = 0
        with cur.copy(f"COPY (SELECT * FROM {table}) TO STDOUT (FORMAT BINARY)") as copy:
            for block in copy:
                size += len(bytes(block))
        took = time.perf_counter() - t0
        rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        return int(rows), took


@contextmanager
def native_switch(on: bool) -> Iterator[None]:
    """`BRIDGE_NATIVE` set for the block (the snapshot reads it per table)."""
    old = os.environ.get("BRIDGE_NATIVE")
    os.environ["BRIDGE_NATIVE"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BRIDGE_NATIVE", None)
        else:
            os.environ["BRIDGE_NATIVE"] = old


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
    from bridge.app import build_producer, topic_manager
    from bridge.config import load_config
    from bridge.kafka.topics import topic_name
    from bridge.source.slot import SlotManager

    tag = uuid.uuid4().hex[:8]
    path = workdir / f"bench-{tag}.json"
    path.write_text(json.dumps({
        "source": {"dsn": dsn, "slot": f"bench_snap_{tag}", "tables": ["public.*"], "snapshot": "initial"},
        "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": f"snap{tag}", "partitions": 6},
        "ack": "kafka",
    }))
    cfg = load_config(str(path))
    # The data topic exists before the timing starts: creating it (a second or two on a loaded
    # machine) is a one-off per table, not the snapshot's throughput, and would weigh the same
    # on both paths.
    topic_manager(cfg, 6).ensure(topic_name(cfg.kafka.topic_prefix, "public", TABLE.split(".")[-1]))
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


def measure(dsn: str, bootstrap: str, *, chunk_rows: int = 10_000, repeat: int = 1,
            table: str = TABLE) -> dict[str, Any]:
    """The snapshot rates of the filled database `dsn` into the broker at `bootstrap`, beside
    the COPY limits of `table`: rows/s of COPY text and COPY BINARY, of the native snapshot and
    of the reference (`BRIDGE_NATIVE=0`) snapshot, each the median of `repeat` runs, and each
    snapshot's ratio to COPY BINARY (issue #15's target: >= 0.3). Raises SystemExit when a
    topic does not hold every row."""
    copies = [copy_rate(dsn, table) for _ in range(repeat)]
    binaries = [copy_binary_rate(dsn, table) for _ in range(repeat)]
    runs: dict[str, list[tuple[int, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, on in (("native", True), ("reference", False)):
            with native_switch(on):
                runs[name] = [snapshot_rate(dsn, bootstrap, chunk_rows, Path(tmp)) for _ in range(repeat)]
    copy_rps = statistics.median(r / s for r, s in copies)
    binary_rps = statistics.median(r / s for r, s in binaries)
    out: dict[str, Any] = {"chunk_rows": chunk_rows, "repeat": repeat, "copy_rows_per_s": round(copy_rps),
                           "copy_binary_rows_per_s": round(binary_rps)}
    for name, snaps in runs.items():
        rps = statistics.median(r / s for r, s in snaps)
        out[f"snapshot_{name}_rows_per_s"] = round(rps)
        out[f"snapshot_{name}_vs_copy_binary"] = round(rps / binary_rps, 4)
        out[f"snapshot_{name}_seconds"] = [round(s, 2) for _, s in snaps]
    return out


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
        result = {"rows": args.rows, "broker": args.broker,
                  **measure(dsn, broker.bootstrap, chunk_rows=args.chunk_rows, repeat=args.repeat)}
        print(json.dumps(result))
        binary = result["copy_binary_rows_per_s"]
        print(f"COPY (SELECT ...) TO STDOUT                 : {result['copy_rows_per_s']:>12,.0f} rows/s")
        print(f"COPY (SELECT ...) TO STDOUT (FORMAT BINARY) : {binary:>12,.0f} rows/s")
        for name in ("native", "reference"):
            rps = result[f"snapshot_{name}_rows_per_s"]
            print(f"snapshot into Kafka, {name:<9}              : {rps:>12,.0f} rows/s  "
                  f"({rps / binary:.2f}x COPY BINARY)")
    finally:
        broker.destroy()
        pg.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
