"""A running pipeline to forge records against: real source, broker, producer, sink and target.

The source has `public.orders` and `public.other`; the target also has `public.victim`, a table
no topic names, whose rows must never change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bridge.local.brokers import BROKERS, LocalBroker
from tests.conftest import PgServer
from tests.hostile.forge import Forger, dead_letters
from tests.pipeline import BridgeProcess, wait_converged, wait_slot_active, write_config
from tests.support.waits import check_alive

VICTIM = [(1, "keep me"), (2, "and me"), (3, "me too")]
TABLES = {"public.orders": (["id", "amount", "note"], "id"), "public.other": (["id", "v"], "id")}
SINK_RSS_LIMIT = 400 << 20  # the sink idles near 100 MiB; an unbounded allocation passes this at once


@dataclass
class Rig:
    bootstrap: str
    prefix: str
    source_dsn: str
    target_dsn: str
    producer: BridgeProcess
    sink: BridgeProcess
    forge: Forger
    next_id: int = 1000

    @property
    def dlq(self) -> str:
        return f"{self.prefix}._dlq"

    def topic(self, table: str) -> str:
        return f"{self.prefix}.public.{table}"

    def write_real_changes(self, n: int = 20) -> None:
        with psycopg.connect(self.source_dsn, autocommit=True) as conn:
            ids = range(self.next_id, self.next_id + n)
            conn.execute("INSERT INTO public.orders SELECT g, g * 1.5, 'real ' || g FROM unnest(%s::bigint[]) g",
                         (list(ids),))
            conn.execute("UPDATE public.orders SET note = 'updated' WHERE id = %s", (self.next_id,))
            conn.execute("INSERT INTO public.other SELECT g, 'o' || g FROM unnest(%s::int[]) g", (list(ids),))
        self.next_id += n

    def assert_boundary_held(self, tags: set[str]) -> None:
        """The four assertions of the module doc, after the forged `tags` were sent."""
        self.write_real_changes()
        wait_converged(self.source_dsn, self.target_dsn, TABLES, timeout=180, procs=[self.producer, self.sink])
        found = dead_letters(self.bootstrap, self.dlq, tags)
        assert set(found) == tags, f"not dead-lettered: {sorted(tags - set(found))}\n{self.sink.log_tail()}"
        for tag, h in found.items():
            assert h.get("bridge.dlq.error"), f"{tag}: no reason header"
        with psycopg.connect(self.target_dsn) as conn:
            assert conn.execute("SELECT id, v FROM public.victim ORDER BY id").fetchall() == VICTIM
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT LIKE 'pg\\_%' AND schemaname NOT IN "
                                "('information_schema', 'pgbridge_state', 'public')").fetchone() == (0,)
            states = conn.execute("SELECT DISTINCT topic FROM pgbridge_state.bridge_positions").fetchall()
        assert {t for (t,) in states} <= {self.topic("orders"), self.topic("other")}
        check_alive([self.producer, self.sink])
        assert self.sink.alive(), self.sink.log_tail()
        assert rss(self.sink) < SINK_RSS_LIMIT, f"sink RSS {rss(self.sink) >> 20} MiB"


def rss(proc: BridgeProcess) -> int:
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@contextmanager
def running_rig(kind: str, pg: PgServer, tmp: Path, **overrides: Any) -> Iterator[Rig]:
    """A pipeline on a broker of `kind` of its own; `overrides` go to `write_config`."""
    local: LocalBroker | None = None
    if kind == "external":
        bootstrap = os.environ["BRIDGE_TEST_BOOTSTRAP"]
    else:
        local = BROKERS[kind]().start()
        bootstrap = local.bootstrap
    source_dsn, target_dsn = pg.create_database("src"), pg.create_database("dst")
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, amount numeric(12,2), note text)")
        conn.execute("CREATE TABLE public.other (id int PRIMARY KEY, v text)")
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.victim (id int PRIMARY KEY, v text)")
        conn.cursor().executemany("INSERT INTO public.victim VALUES (%s, %s)", VICTIM)
    cfg = write_config(tmp, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=bootstrap, **overrides)
    prefix = json.loads(cfg.read_text())["kafka"]["topic_prefix"]
    producer = BridgeProcess("produce", cfg, tmp).start()
    sink = BridgeProcess("sink", cfg, tmp).start()
    try:
        wait_slot_active(source_dsn, json.loads(cfg.read_text())["source"]["slot"], producer)
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.orders VALUES (1, 1.5, 'first'), (2, 2.5, 'second')")
            conn.execute("INSERT INTO public.other VALUES (1, 'first'), (2, 'second')")
        wait_converged(source_dsn, target_dsn, TABLES, timeout=180, procs=[producer, sink])
        yield Rig(bootstrap, prefix, source_dsn, target_dsn, producer, sink, Forger(bootstrap, prefix))
    finally:
        producer.terminate()
        sink.terminate()
        drop_slot(source_dsn, json.loads(cfg.read_text())["source"]["slot"])
        if local is not None:
            local.destroy()


def drop_slot(dsn: str, slot: str) -> None:
    """Drop a test's slot: the session's one cluster has a limited number, and a slot left behind
    keeps the cluster's WAL."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                     " WHERE slot_name = %s AND NOT active", (slot,))
