"""Kill everything at random moments; the invariants must hold (see harness.py).

Short by default (inside `make test`); `BRIDGE_CHAOS_FULL=1` (`make chaos`) runs the full size:
300,000+ changes with a 100,000-row transaction, at least 10 producer kills, 10 sink kills over two
sink processes, Kafka and PostgreSQL restarts.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import psycopg
import pytest

from bridge.local import free_port
from bridge.local.brokers import LocalKafka
from tests.chaos.harness import (
    SCHEMA,
    TABLES,
    ChaosWorkload,
    SlotMonitor,
    VersionMonitor,
    check_no_duplicates,
    check_no_loss,
    read_all_records,
)
from tests.conftest import PgServer
from tests.pipeline import BridgeProcess, wait_converged, wait_slot_active, write_config

FULL = os.environ.get("BRIDGE_CHAOS_FULL") == "1"
CHANGES = int(os.environ.get("BRIDGE_CHAOS_CHANGES", 320_000 if FULL else 40_000))
BIG_TXN = 100_000 if FULL else 10_000
MIN_KILLS = 10 if FULL else 3


@pytest.mark.chaos
@pytest.mark.parametrize("capture", ["stream", "sql"])
def test_chaos(pg: PgServer, kafka_broker: LocalKafka, tmp_path: Path, capture: str) -> None:
    if pg.local is None:
        pytest.skip("needs our own PostgreSQL to restart")
    source, target = pg.create_database("chaos_src"), pg.create_database("chaos_dst")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(SCHEMA)
    cfg = write_config(tmp_path, source_dsn=source, target_dsn=target, bootstrap=kafka_broker.bootstrap,
                       capture=capture, kafka__partitions=3, sink__batch_max_rows=5000, sink__batch_max_ms=100)
    conf = json.loads(cfg.read_text())
    slot, prefix = conf["source"]["slot"], conf["kafka"]["topic_prefix"]
    producer = BridgeProcess("produce", cfg, tmp_path)
    sinks = [BridgeProcess("sink", cfg, tmp_path, env={"BRIDGE_METRICS__PORT": str(free_port())}, name=f"sink{i}")
             for i in range(2)]
    producer.start()
    for s in sinks:
        s.start()
    wait_slot_active(source, slot, producer)

    stop = threading.Event()
    load = ChaosWorkload(source, CHANGES, BIG_TXN)
    slot_mon = SlotMonitor(source, target, slot)
    ver_mon = VersionMonitor(target)
    threads = [threading.Thread(target=f, args=(stop,), daemon=True) for f in (load.run, slot_mon.run, ver_mon.run)]
    for t in threads:
        t.start()

    rng = random.Random(int(os.environ.get("BRIDGE_CHAOS_SEED", "42")))
    counts = {"producer_kills": 0, "sink_kills": 0, "kafka_restarts": 0, "postgres_restarts": 0, "self_exits": 0}
    started = time.monotonic()
    try:
        while not load.done.is_set() or counts["producer_kills"] < MIN_KILLS or counts["sink_kills"] < MIN_KILLS:
            time.sleep(rng.uniform(0.5, 2.5))
            for p in [producer, *sinks]:
                if not p.alive():
                    counts["self_exits"] += 1
                    p.start()
            action = rng.random()
            if action < 0.4:
                producer.kill()
                counts["producer_kills"] += 1
                time.sleep(rng.uniform(0, 1))
                producer.start()
            elif action < 0.8:
                victim = rng.choice(sinks)
                victim.kill()
                counts["sink_kills"] += 1
                time.sleep(rng.uniform(0, 1))
                victim.start()
            elif action < 0.9 and counts["kafka_restarts"] < (2 if FULL else 1):
                kafka_broker.restart()
                counts["kafka_restarts"] += 1
            elif counts["postgres_restarts"] < (2 if FULL else 1):
                assert pg.local is not None
                pg.local.restart("fast")
                counts["postgres_restarts"] += 1
            assert time.monotonic() - started < (2400 if FULL else 600), f"chaos loop too slow: {counts}"
        for p in [producer, *sinks]:
            if not p.alive():
                p.start()
        wait_converged(source, target, TABLES, timeout=600 if FULL else 240, procs=[producer, *sinks])
        time.sleep(3)  # let the last acks and confirms land in the samples
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for p in [producer, *sinks]:
            p.terminate()

    records = read_all_records(kafka_broker.bootstrap, prefix)
    distinct = check_no_duplicates(records)
    checked = check_no_loss(slot_mon.samples, records)
    assert not ver_mon.regressions, f"invariant 3 broken: {ver_mon.regressions}"
    assert checked > 50 and ver_mon.samples > 5, "the monitors did not sample enough to mean anything"
    print(f"\nchaos[{capture}]: {load.changes:,} changes, {distinct:,} records in Kafka; survived {counts}; "
          f"{checked} slot samples, {ver_mon.samples} version samples, {len(ver_mon.seen):,} keys tracked; "
          f"{time.monotonic() - started:.0f} s")
