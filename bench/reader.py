"""How fast `bridge.reader` reads a topic into Arrow (issue 16, item 2).

    .venv/bin/python bench/reader.py [--rows 100000] [--bootstrap HOST:PORT]

Writes `--rows` insert envelopes of bench/sink.py's orders table (as the producer's encoder
writes them) into a 3-partition topic, on the broker given or a local Apache Kafka it starts
(`make kafka-jars`), then measures, in this process:
- `read_table` of the whole topic: wall time, rows/s and CPU µs per row;
- its parts on the same values in memory: the sink's decoder alone (`decode`, native unless
  `BRIDGE_NATIVE=0`), and decoding plus the Arrow batches (`BatchBuilder.finish`);
- consuming the raw records without decoding (the broker and client share).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer  # noqa: E402

from bench.sink import ORDERS, insert_stream  # noqa: E402
from bridge.codec import TableCodec, TopicSchemaStore  # noqa: E402
from bridge.kafka.admin import TopicManager  # noqa: E402
from bridge.kafka.reading import read_to_end  # noqa: E402
from bridge.reader import ArrowPlan, read_table  # noqa: E402
from bridge.reader.arrow import BatchBuilder  # noqa: E402
from bridge.sink.native_stage import envelope_decoder  # noqa: E402

PREFIX = "rbench"
TOPIC = f"{PREFIX}.public.orders"


def cpu_and_wall(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c0, time.perf_counter() - w0, out


def write(bootstrap: str, rows: int) -> tuple[TopicSchemaStore, list[bytes]]:
    TopicManager(bootstrap, partitions=3, replication_factor=1).ensure(TOPIC)
    store = TopicSchemaStore(bootstrap, PREFIX)
    codec = TableCodec(ORDERS, store, db="bench", topic_prefix=PREFIX)
    values = [codec.value(r.change) for r in insert_stream(rows)]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20})
    for i, v in enumerate(values):
        while True:
            try:
                producer.produce(TOPIC, key=str(i).encode(), value=v, partition=i % 3)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    return store, values


def raw_consume(bootstrap: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"rb-{uuid.uuid4()}",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    try:
        return sum(1 for _ in read_to_end(consumer, [TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(3)],
                                          time.monotonic() + 300, "bench"))
    finally:
        consumer.close()


def in_memory(store: TopicSchemaStore, values: list[bytes], arrow: bool) -> int:
    decoder = envelope_decoder(store, topic_prefix=PREFIX)
    plan = ArrowPlan.of(store.lookup(values[0])[0])
    b = BatchBuilder(plan)
    rows = 0
    for off, v in enumerate(values):
        change = decoder.decode(v)
        if arrow:
            b.append(change, 0, off, len(v))
            if len(b) >= 65_536:
                rows += b.finish(TOPIC).num_rows
                b = BatchBuilder(plan)
    return rows + (b.finish(TOPIC).num_rows if arrow and len(b) else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--bootstrap")
    args = ap.parse_args()
    broker = None
    if args.bootstrap is None:
        from bridge.local.brokers import LocalKafka

        broker = LocalKafka().start()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    try:
        store, values = write(bootstrap, args.rows)
        n = args.rows
        report = []
        cpu, wall, table = cpu_and_wall(lambda: read_table(bootstrap, TOPIC, topic_prefix=PREFIX))
        assert table.num_rows == n, table.num_rows
        report.append(("read_table (consume + decode + Arrow)", cpu, wall))
        cpu, wall, got = cpu_and_wall(lambda: raw_consume(bootstrap))
        assert got == n
        report.append(("consume raw records only", cpu, wall))
        cpu, wall, _ = cpu_and_wall(lambda: in_memory(store, values, False))
        report.append(("decode only, in memory", cpu, wall))
        cpu, wall, got = cpu_and_wall(lambda: in_memory(store, values, True))
        assert got == n
        report.append(("decode + Arrow batches, in memory", cpu, wall))
        print(f"{n} rows, orders table ({len(ORDERS.columns)} columns), "
              f"table {table.nbytes / 1e6:.1f} MB in Arrow")
        for name, cpu, wall in report:
            print(f"  {name:40s} {n / wall:10,.0f} rows/s  {cpu / n * 1e6:6.2f} us CPU/row  ({wall:.2f} s wall)")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
