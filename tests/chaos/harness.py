"""The chaos harness: invariant monitors and checks (the workload is
`tests.support.workloads.ChaosWorkload`, the kills and restarts are in test_chaos.py).

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

import bisect
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psycopg

from bridge.events import Position
from bridge.lsn import Lsn
from tests.support.topics import Record
from tests.support.workloads import CHAOS_TABLES

VERSIONED = list(CHAOS_TABLES)


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


def check_no_duplicates(records: list[Record]) -> int:
    """Invariant 4: every (topic, partition, position, tombstone) once; returns how many."""
    counts = Counter((r.topic, r.partition, r.position, r.tombstone) for r in records)
    dups = [(k, c) for k, c in counts.items() if c > 1]
    assert not dups, f"{len(dups)} positions are in Kafka more than once, e.g. {dups[:5]}"
    return len(counts)


def check_no_loss(samples: list[Sample], records: list[Record]) -> int:
    """Invariant 1 over every sample; returns how many samples were checked.

    For each partition, the highest record position whose commit LSN is at or below the sampled
    confirmed LSN must be applied in that sample."""
    per_tp: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for r in records:
        assert r.position is not None
        per_tp.setdefault((r.topic, r.partition), []).append(r.position.to_tuple())
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
