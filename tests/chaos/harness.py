"""The chaos harness: a workload, kills and restarts at random moments, and invariant monitors.

Invariants checked (design.md):
1. No loss — a monitor samples every 100 ms the slot's `confirmed_flush_lsn` and *then* the
   sink's applied positions in the target; at the end every record in Kafka is known, and a sample
   fails if some record of a transaction at or below the confirmed LSN was not yet applied.
   (Reading the slot first makes a failure certain: positions only grow.)
2. Convergence — target equals source once writes stop and the bridge catches up.
3. Exactly-once effect — every row carries a version `v` that only grows in the source; the
   target is sampled while the bridge runs and no key may be seen going back to a lower `v`.
4. No duplicates in Kafka — every (topic, partition, position, kind) is in Kafka once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from bridge.events import Position
from bridge.lsn import Lsn
from bridge.produce.topics import position_from_headers

SCHEMA = """
CREATE TABLE public.accounts (id bigint PRIMARY KEY, v bigint NOT NULL, owner text NOT NULL,
                              balance numeric(14,2) NOT NULL, bio text);
ALTER TABLE public.accounts ALTER COLUMN bio SET STORAGE EXTERNAL;
CREATE TABLE public.transfers (id bigint PRIMARY KEY, v bigint NOT NULL, src bigint, dst bigint,
                               amount numeric(12,2), at timestamptz NOT NULL DEFAULT now());
CREATE TABLE public."Audit Log" (id bigint PRIMARY KEY, v bigint NOT NULL, what text, at timestamptz DEFAULT now());
"""

TABLES: dict[str, tuple[list[str], str]] = {
    "public.accounts": (["id", "v", "owner", "balance", "md5(bio)"], "id"),
    "public.transfers": (["id", "v", "src", "dst", "amount", "at"], "id"),
    'public."Audit Log"': (["id", "v", "what", "at"], "id"),
}
VERSIONED = ["public.accounts", "public.transfers", 'public."Audit Log"']


def _retrying(fn: Callable[[], None], stop: threading.Event, attempts: int = 200) -> None:
    for _ in range(attempts):
        try:
            fn()
            return
        except psycopg.OperationalError:
            if stop.is_set():
                return
            time.sleep(0.2)


@dataclass
class ChaosWorkload:
    """Transactions of inserts, versioned updates, deletes and primary-key changes over three tables,
    plus one big transaction. Reconnects and retries when PostgreSQL restarts."""

    dsn: str
    target_changes: int
    big_txn_rows: int
    seed: int = 11
    changes: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, stop: threading.Event) -> None:
        rng = random.Random(self.seed)
        next_id = {"a": 1, "t": 1, "l": 1}
        big_done = False
        conn: psycopg.Connection[Any] | None = None
        try:
            while self.changes < self.target_changes and not stop.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self.dsn, autocommit=False)
                    if not big_done and self.changes >= self.target_changes // 3:
                        self._big(conn, next_id)
                        big_done = True
                        continue
                    self._txn(conn, rng, next_id)
                except psycopg.OperationalError:
                    conn = None
                    time.sleep(0.2)
        finally:
            if conn is not None and not conn.closed:
                conn.close()
            self.done.set()

    def _big(self, conn: psycopg.Connection[Any], next_id: dict[str, int]) -> None:
        start = next_id["l"]
        conn.execute('INSERT INTO public."Audit Log" (id, v, what) SELECT g, 1, \'bulk \' || g '
                     "FROM generate_series(%s::bigint, %s::bigint) g", (start, start + self.big_txn_rows - 1))
        conn.commit()
        next_id["l"] += self.big_txn_rows
        self.changes += self.big_txn_rows

    def _txn(self, conn: psycopg.Connection[Any], rng: random.Random, next_id: dict[str, int]) -> None:
        cur = conn.cursor()
        n = 0
        a0 = next_id["a"]
        accts = [(a0 + i, 1, f"owner {a0 + i}", f"{rng.uniform(0, 1e6):.2f}",
                  ("bio " * 3000) if i == 0 else None) for i in range(20)]
        cur.executemany("INSERT INTO public.accounts VALUES (%s, %s, %s, %s, %s)", accts)
        n += len(accts)
        t0 = next_id["t"]
        cur.executemany("INSERT INTO public.transfers (id, v, src, dst, amount) VALUES (%s, 1, %s, %s, %s)",
                        [(t0 + i, rng.randint(1, a0 + 19), rng.randint(1, a0 + 19), f"{rng.uniform(1, 500):.2f}")
                         for i in range(30)])
        n += 30
        l0 = next_id["l"]
        cur.executemany('INSERT INTO public."Audit Log" (id, v, what) VALUES (%s, 1, %s)',
                        [(l0 + i, f"event {l0 + i}") for i in range(10)])
        n += 10
        # versioned updates of random existing rows (TOAST column untouched: unchanged-toast-datum)
        for _ in range(25):
            cur.execute("UPDATE public.accounts SET v = v + 1, balance = balance + 1 WHERE id = %s",
                        (rng.randint(1, a0 + 19),))
            n += cur.rowcount
        cur.execute("UPDATE public.transfers SET v = v + 1, amount = amount * 2 WHERE id = %s",
                    (rng.randint(1, t0 + 29),))
        n += cur.rowcount
        # deletes
        cur.execute("DELETE FROM public.transfers WHERE id = %s", (rng.randint(1, t0 + 29),))
        n += cur.rowcount
        # a primary-key change: the row moves to a fresh id, its version grows
        old = rng.randint(1, l0 + 9)
        cur.execute('UPDATE public."Audit Log" SET id = %s, v = v + 1 WHERE id = %s', (10**12 + l0, old))
        n += cur.rowcount
        conn.commit()
        next_id["a"] += 20
        next_id["t"] += 30
        next_id["l"] += 10
        self.changes += n


@dataclass
class Sample:
    t: float
    confirmed: int
    applied: dict[tuple[str, int], Position]


class SlotMonitor:
    """Every 100 ms: the slot's confirmed LSN, then the sink's applied positions."""

    def __init__(self, source_dsn: str, target_dsn: str, slot: str, state_schema: str = "pgbridge_state") -> None:
        self.source_dsn = source_dsn
        self.target_dsn = target_dsn
        self.slot = slot
        self.schema = state_schema
        self.samples: list[Sample] = []

    def run(self, stop: threading.Event) -> None:
        src: psycopg.Connection[Any] | None = None
        dst: psycopg.Connection[Any] | None = None
        while not stop.is_set():
            try:
                if src is None or src.closed:
                    src = psycopg.connect(self.source_dsn, autocommit=True, connect_timeout=2)
                if dst is None or dst.closed:
                    dst = psycopg.connect(self.target_dsn, autocommit=True, connect_timeout=2)
                row = src.execute("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
                                  "WHERE slot_name = %s", (self.slot,)).fetchone()
                if row is not None and row[0] is not None:
                    applied = {}
                    exists = dst.execute("SELECT to_regclass(%s)", (f"{self.schema}.bridge_positions",)).fetchone()
                    if exists and exists[0]:
                        for topic, part, lsn, seq in dst.execute(
                                f"SELECT topic, partition, commit_lsn::text, seq FROM {self.schema}.bridge_positions"):
                            applied[(topic, part)] = Position(Lsn.parse(lsn) if isinstance(lsn, str) and "/" in lsn
                                                              else Lsn(int(lsn)), int(seq))
                    self.samples.append(Sample(time.monotonic(), int(row[0]), applied))
            except psycopg.Error:
                src = dst = None
            stop.wait(0.1)


class VersionMonitor:
    """Samples `(id, v)` of the target tables; a key going back to a lower version is a failure."""

    def __init__(self, target_dsn: str) -> None:
        self.dsn = target_dsn
        self.seen: dict[tuple[str, int], int] = {}
        self.regressions: list[str] = []
        self.samples = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    for table in VERSIONED:
                        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                            continue
                        for key, v in conn.execute(f"SELECT id, v FROM {table}"):
                            prev = self.seen.get((table, key))
                            if prev is not None and v < prev and len(self.regressions) < 20:
                                self.regressions.append(f"{table} id={key}: v {prev} -> {v}")
                            if prev is None or v > prev:
                                self.seen[(table, key)] = v
                    self.samples += 1
            except psycopg.Error:
                pass
            stop.wait(1.0)


def read_all_records(bootstrap: str, prefix: str) -> list[tuple[str, int, Position, bool]]:
    """Every record of the bridge's data topics: (topic, partition, position, is_tombstone)."""
    import re

    from bridge.sink.loop import data_topic_pattern

    pattern = re.compile(data_topic_pattern(prefix))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=30)
    tps = [TopicPartition(name, p, 0) for name, t in md.topics.items() if pattern.match(name) for p in t.partitions]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-reader-{time.time()}",
                         "enable.auto.commit": False, "enable.partition.eof": True, "fetch.queue.backoff.ms": 10})
    ends = {}
    for tp in tps:
        lo, hi = consumer.get_watermark_offsets(tp, timeout=30)
        if hi > lo:
            ends[(tp.topic, tp.partition)] = hi
    consumer.assign([TopicPartition(t, p, 0) for (t, p) in ends])
    out: list[tuple[str, int, Position, bool]] = []
    pending = set(ends)
    deadline = time.monotonic() + 300
    while pending and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 1.0):
            err = msg.error()
            tp = (msg.topic() or "", msg.partition() or 0)
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(tp)
                continue
            pos = position_from_headers(msg.headers())
            assert pos is not None, f"record without position headers in {tp}"
            out.append((tp[0], tp[1], pos, msg.value() is None))
            if (msg.offset() or 0) + 1 >= ends[tp]:
                pending.discard(tp)
    consumer.close()
    assert not pending, f"could not read all records of {pending}"
    return out


def check_no_duplicates(records: list[tuple[str, int, Position, bool]]) -> int:
    counts = Counter(records)
    dups = [(k, c) for k, c in counts.items() if c > 1]
    assert not dups, f"{len(dups)} positions are in Kafka more than once, e.g. {dups[:5]}"
    return len(counts)


def check_no_loss(samples: list[Sample], records: list[tuple[str, int, Position, bool]]) -> int:
    """Invariant 1 over every sample; returns how many samples were checked.

    For each partition, the highest record position whose commit LSN is at or below the sampled
    confirmed LSN must be applied in that sample."""
    import bisect

    per_tp: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for topic, part, pos, _tomb in records:
        per_tp.setdefault((topic, part), []).append(pos.to_tuple())
    for v in per_tp.values():
        v.sort()
    for s in samples:
        for tp, positions in per_tp.items():
            i = bisect.bisect_right(positions, (s.confirmed, 1 << 62))
            if i == 0:
                continue
            need = Position(Lsn(positions[i - 1][0]), positions[i - 1][1])
            got = s.applied.get(tp)
            if got is None or got < need:
                raise AssertionError(
                    f"invariant 1 broken: slot confirmed at {Lsn(s.confirmed)} but {tp[0]}/{tp[1]} {need} was not "
                    f"applied (applied there: {got})")
    return len(samples)
