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
from tests.chaos.harness import SlotMonitor, VersionMonitor, check_no_duplicates, check_no_loss
from tests.conftest import PgServer
from tests.pipeline import BridgeProcess, stopped_cleanly, wait_converged, wait_slot_active, write_config
from tests.support.topics import data_records
from tests.support.waits import check_alive, wait_for
from tests.support.workloads import CHAOS_SCHEMA, CHAOS_TABLES, ChaosWorkload

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
        conn.execute(CHAOS_SCHEMA)
    cfg = write_config(tmp_path, source_dsn=source, target_dsn=target, bootstrap=kafka_broker.bootstrap,
                       capture=capture, kafka__partitions=3, sink__batch_max_rows=5000, sink__batch_max_ms=100)
    conf = json.loads(cfg.read_text())
    slot, prefix = conf["source"]["slot"], conf["kafka"]["topic_prefix"]
    producer = BridgeProcess("produce", cfg, tmp_path)
    sinks = [BridgeProcess("sink", cfg, tmp_path, env={"BRIDGE_METRICS__PORT": str(free_port())}, name=f"sink{i}")
             for i in range(2)]
    procs = [producer, *sinks]
    stop = threading.Event()
    load = ChaosWorkload(source, CHANGES, BIG_TXN)
    slot_mon = SlotMonitor(source, target, slot)
    ver_mon = VersionMonitor(target)
    threads = [threading.Thread(target=f, args=(stop,), daemon=True) for f in (load.run, slot_mon.run, ver_mon.run)]
    rng = random.Random(int(os.environ.get("BRIDGE_CHAOS_SEED", "42")))
    counts = {"producer_kills": 0, "sink_kills": 0, "kafka_restarts": 0, "postgres_restarts": 0}
    started = time.monotonic()
    with stopped_cleanly(*procs):
        try:
            for p in procs:
                p.start()
            wait_slot_active(source, slot, producer)
            for t in threads:
                t.start()
            # Every exit is one the loop asked for: a process that dies by itself (a crash, a
            # crash loop, an exit on a restart of PostgreSQL or Kafka) fails the run with its log.
            while not load.done.is_set() or counts["producer_kills"] < MIN_KILLS or counts["sink_kills"] < MIN_KILLS:
                time.sleep(rng.uniform(0.5, 2.5))  # chaos pacing: a random moment
                check_alive(procs)
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
            wait_converged(source, target, CHAOS_TABLES, timeout=600 if FULL else 240, procs=procs)
            # The last acks and confirms land in the samples: the slot follows the sink past the
            # WAL written so far (heartbeats carry it over the unreplicated tail).
            with psycopg.connect(source) as conn:
                end = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
            assert end is not None
            wait_for(lambda: any(s.confirmed >= int(end[0]) for s in slot_mon.samples[-20:]), 120,
                     "a slot sample confirmed past the converged WAL end", procs,
                     last=lambda: slot_mon.samples[-1].confirmed if slot_mon.samples else None)
        finally:
            stop.set()
            for t in threads:
                if t.is_alive():
                    t.join(30)

    records = data_records(kafka_broker.bootstrap, prefix)
    distinct = check_no_duplicates(records)
    checked = check_no_loss(slot_mon.samples, records)
    assert not ver_mon.regressions, f"invariant 3 broken: {ver_mon.regressions}"
    assert checked > 50 and ver_mon.samples > 5, "the monitors did not sample enough to mean anything"
    print(f"\nchaos[{capture}]: {load.changes:,} changes, {distinct:,} records in Kafka; survived {counts}; "
          f"{checked} slot samples, {ver_mon.samples} version samples, {len(ver_mon.seen):,} keys tracked; "
          f"{time.monotonic() - started:.0f} s")
