"""Snapshots end to end: the initial snapshot under concurrent writes, a kill -9 in the middle of
it, and a resnapshot of one table (`pgbridge snapshot`) while it is being updated.

Five tables cover the key shapes the keyset chunks must order and resume on: a composite
(integer, bigint) key, a text key, a uuid key, a (timestamptz, numeric) key, and a table without
a key (REPLICA IDENTITY FULL, read through a server-side cursor). Existing rows: SNAPSHOT_ROWS
(60,000; 1,000,000 with BRIDGE_TEST_FULL=1). A writer thread inserts, updates and deletes rows of
every table while the snapshot runs; the target must equal the source at the end.

Tansu only: the snapshot path talks to the broker like streaming does (produce, tails, a
compacted state topic), which test_pipeline already covers on both brokers; these tests are
about PostgreSQL-side consistency and cost a minute each.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import KafkaException

from bridge.codec import EnvelopeDecoder, TopicSchemaStore
from bridge.events import Op
from bridge.local import free_port
from bridge.produce.snapshot_state import SnapshotStateStore
from tests.conftest import BROKER_KINDS, Broker
from tests.pipeline import (
    REPO,
    BridgeProcess,
    stopped_cleanly,
    wait_converged,
    wait_slot_active,
    wait_slot_created,
    write_config,
)
from tests.support.topics import read_to_end
from tests.support.waits import wait_for

FULL = os.environ.get("BRIDGE_TEST_FULL") == "1"
SNAPSHOT_ROWS = 1_000_000 if FULL else 60_000
TANSU = ["tansu"] if "tansu" in BROKER_KINDS else BROKER_KINDS

SCHEMA = """
CREATE TABLE public.a_log (at timestamp NOT NULL, kind text NOT NULL, n bigint NOT NULL);
ALTER TABLE public.a_log REPLICA IDENTITY FULL;
CREATE TABLE public.orders_c (account_id integer, id bigint, amount numeric(12,2) NOT NULL, status text NOT NULL,
  created_at timestamptz NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE public.by_text (code text PRIMARY KEY, v integer NOT NULL, note text);
CREATE TABLE public.by_uuid (id uuid PRIMARY KEY, n integer NOT NULL, payload jsonb);
CREATE TABLE public.by_ts (at timestamptz, price numeric(10,2), v text, PRIMARY KEY (at, price));
"""

# share of the rows per table; a_log is read first (tables are read in name order)
SHARES = {"a_log": 0.05, "orders_c": 0.45, "by_text": 0.2, "by_uuid": 0.15, "by_ts": 0.15}

# key expressions of row g, as the populate statements write them
KEY_SQL = {
    "a_log": "n = %(g)s",
    "orders_c": "account_id = %(g)s %% 50 + 1 AND id = %(g)s",
    "by_text": "code = 'k-' || lpad(%(g)s::text, 8, '0') || CASE WHEN %(g)s %% 7 = 0 THEN ' it''s' ELSE '' END",
    "by_uuid": "id = md5(%(g)s::text)::uuid",
    "by_ts": "at = timestamptz '2026-01-01 00:00:00+00' + %(g)s * interval '1 second' "
             "AND price = (%(g)s %% 100000) / 100.0",
}

POPULATE = {
    "a_log": "INSERT INTO public.a_log SELECT timestamp '2026-01-01' + g * interval '1 ms', 'kind-' || (g % 5), g "
             "FROM generate_series(1, %(n)s) g",
    "orders_c": "INSERT INTO public.orders_c SELECT g % 50 + 1, g, (g % 100000) / 100.0, "
                "(ARRAY['new', 'paid', 'shipped'])[1 + g % 3], timestamptz '2026-01-01 00:00:00+00' + g * "
                "interval '1 minute' FROM generate_series(1, %(n)s) g",
    "by_text": "INSERT INTO public.by_text SELECT 'k-' || lpad(g::text, 8, '0') || CASE WHEN g % 7 = 0 "
               "THEN ' it''s' ELSE '' END, g, CASE WHEN g % 10 = 0 THEN NULL ELSE repeat('x', g % 40) END "
               "FROM generate_series(1, %(n)s) g",
    "by_uuid": "INSERT INTO public.by_uuid SELECT md5(g::text)::uuid, g, ('{\"g\": ' || g || '}')::jsonb "
               "FROM generate_series(1, %(n)s) g",
    "by_ts": "INSERT INTO public.by_ts SELECT timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', "
             "(g % 100000) / 100.0, 'v' || g FROM generate_series(1, %(n)s) g",
}

TABLES: dict[str, tuple[list[str], str]] = {
    "public.a_log": (["at", "kind", "n"], "n, at, kind"),
    "public.orders_c": (["account_id", "id", "amount", "status", "created_at"], "account_id, id"),
    "public.by_text": (["code", "v", "note"], "code"),
    "public.by_uuid": (["id", "n", "payload::text"], "id"),
    "public.by_ts": (["at", "price", "v"], "at, price"),
}


def populate(dsn: str, total: int) -> dict[str, int]:
    counts = {t: max(1, int(total * share)) for t, share in SHARES.items()}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        for t, n in counts.items():
            conn.execute(POPULATE[t].replace("%(n)s", str(n)))
        conn.execute("ANALYZE")
    return counts


class Writer(threading.Thread):
    """Inserts, updates and deletes rows of every table, in small transactions, until stopped."""

    def __init__(self, dsn: str, counts: dict[str, int], seed: int = 7, tables: tuple[str, ...] | None = None,
                 pause_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.counts = counts
        self.rng = random.Random(seed)
        self.tables = tables or tuple(counts)
        self.pause_s = pause_s
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn) as conn:
                fresh = 10_000_000
                while not self.stop.is_set():
                    for _ in range(8):
                        t = self.rng.choice(self.tables)
                        g = self.rng.randint(1, self.counts[t])
                        what = self.rng.random()
                        fresh += 1
                        if what < 0.5:
                            self._update(conn, t, g)
                        elif what < 0.75:
                            conn.execute(f"DELETE FROM public.{t} WHERE {KEY_SQL[t]}", {"g": g})
                        else:
                            conn.execute(POPULATE[t].replace("generate_series(1, %(n)s)",
                                                             f"generate_series({fresh}, {fresh})"))
                    conn.commit()
                    self.commits += 1
                    time.sleep(self.pause_s)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _update(self, conn: psycopg.Connection[Any], t: str, g: int) -> None:
        sets = {"a_log": "kind = kind || '+'", "orders_c": "amount = amount + 1, status = 'upd'",
                "by_text": "v = v + 1, note = coalesce(note, '') || 'u'", "by_uuid": "n = n + 1",
                "by_ts": "v = v || '+'"}[t]
        conn.execute(f"UPDATE public.{t} SET {sets} WHERE {KEY_SQL[t]}", {"g": g})

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        if self.error is not None:
            raise AssertionError(f"writer failed: {self.error!r}")


def _state(bootstrap: str, prefix: str) -> Any:
    try:
        return SnapshotStateStore(None, bootstrap, prefix).load(timeout=10)  # type: ignore[arg-type]
    except KafkaException:
        return None  # the state topic is not there yet


def _wait_snapshot_done(proc: BridgeProcess, tables: int, timeout: float) -> float:
    """Wait until the producer logged every table's snapshot done; returns the time it took."""
    t0 = time.monotonic()

    def done() -> bool:
        text = proc.logfile.read_text(errors="replace") if proc.logfile.exists() else ""
        return sum(1 for line in text.splitlines() if "snapshot: public." in line and " done, " in line) >= tables

    wait_for(done, timeout, f"the snapshot of {tables} tables", [proc], interval=0.2)
    return time.monotonic() - t0


def _writes_go_on(writer: Writer, commits: int = 10, timeout: float = 60.0) -> None:
    """Wait until the writer committed `commits` more transactions (writes after the snapshot)."""
    start = writer.commits
    wait_for(lambda: writer.commits >= start + commits or writer.error is not None, timeout,
             f"{commits} more writer transactions")


def check_no_duplicates(bootstrap: str, prefix: str, tables: list[str]) -> dict[str, int]:
    """Positions are unique per partition, and no key has two op `r` records. Returns r counts."""
    decoder = EnvelopeDecoder(TopicSchemaStore(bootstrap, prefix))
    reads: dict[str, int] = {}
    for t in tables:
        per_partition: dict[int, Counter[Any]] = {}
        keys: Counter[bytes] = Counter()
        n = 0
        for r in read_to_end(bootstrap, [f"{prefix}.public.{t}"], timeout=120):
            assert r.position is not None, f"record without position headers in {r.topic}/{r.partition}"
            if r.value is None:
                continue  # a tombstone shares its delete's position
            per_partition.setdefault(r.partition, Counter())[r.position] += 1
            if decoder.decode(r.value).op is Op.READ:
                n += 1
                if r.key is not None:
                    keys[r.key] += 1
        dup_pos = {p: [str(x) for x, k in c.items() if k > 1][:5] for p, c in per_partition.items()
                   if any(k > 1 for k in c.values())}
        assert not dup_pos, f"{t}: positions produced twice: {dup_pos}"
        twice = [k for k, c in keys.items() if c > 1]
        assert not twice, f"{t}: {len(twice)} keys have more than one snapshot record"
        reads[t] = n
    return reads


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_initial_snapshot_under_concurrent_writes(broker: Broker, source_dsn: str, target_dsn: str,
                                                  tmp_path: Path) -> None:
    t0 = time.monotonic()
    counts = populate(source_dsn, SNAPSHOT_ROWS)
    populated = time.monotonic() - t0
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap,
                       source__snapshot="initial")
    conf = json.loads(cfg.read_text())
    producer = BridgeProcess("produce", cfg, tmp_path).start()
    sink = BridgeProcess("sink", cfg, tmp_path).start()
    writer = Writer(source_dsn, counts)
    with stopped_cleanly(producer, sink):
        try:
            wait_slot_created(source_dsn, conf["source"]["slot"], producer)
            writer.start()
            took = _wait_snapshot_done(producer, len(counts), timeout=900)
            during = writer.commits
            _writes_go_on(writer)
            writer.finish()
            assert during > 0, "no write overlapped the snapshot"
            wait_converged(source_dsn, target_dsn, TABLES, timeout=900, procs=[producer, sink])
            print(f"\nsnapshot of {sum(counts.values())} rows: populate {populated:.1f}s, snapshot {took:.1f}s "
                  f"({sum(counts.values()) / took:,.0f} rows/s), {during} writer transactions during it, "
                  f"converged after {time.monotonic() - t0 - populated:.1f}s")
            st = _state(broker.bootstrap, conf["kafka"]["topic_prefix"])
            assert st is not None and st.done
            rows = {p.table: p.rows for p in st.tables.values() if p.schema == "public"}
            assert set(rows) == set(counts) and len(st.tables) == len(counts), st.tables
            for t, n in counts.items():  # each writer transaction adds or removes at most 8 rows
                assert abs(rows[t] - n) <= 8 * during, (t, rows[t], n)
        finally:
            writer.stop.set()


def _snapshot_metrics(port: int) -> tuple[dict[str, float], float]:
    """(snapshot rows per table, tables remaining) from the producer's /metrics; empty before it serves."""
    import re
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}, 0.0
    rows = {m[1]: float(m[2]) for m in re.finditer(r'^bridge_snapshot_rows_total\{table="([^"]+)"\} (\S+)$', text, re.M)}
    rem = re.search(r"^bridge_snapshot_tables_remaining (\S+)$", text, re.M)
    return rows, float(rem[1]) if rem else 0.0


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_snapshot_resumes_after_kill(broker: Broker, source_dsn: str, target_dsn: str, tmp_path: Path) -> None:
    counts = populate(source_dsn, SNAPSHOT_ROWS)
    # Small chunks: many progress saves, so the kill lands inside the snapshot on a fast machine too.
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap,
                       source__snapshot="initial", source__snapshot_chunk_rows=500)
    conf = json.loads(cfg.read_text())
    prefix = conf["kafka"]["topic_prefix"]
    port = free_port()
    producer = BridgeProcess("produce", cfg, tmp_path, env={"BRIDGE_METRICS__PORT": str(port)}).start()
    sink = BridgeProcess("sink", cfg, tmp_path).start()
    writer = Writer(source_dsn, counts)
    with stopped_cleanly(producer, sink):
        try:
            wait_slot_created(source_dsn, conf["source"]["slot"], producer)
            writer.start()
            # Kill once a keyed table is part-way through (the keyless one is read first, whole),
            # watching the producer's own snapshot metrics (cheap to poll often).
            deadline = time.monotonic() + 300
            killed_in: str | None = None
            while killed_in is None and time.monotonic() < deadline:
                rows, remaining = _snapshot_metrics(port)
                busy = [t for t, n in rows.items() if n > 0 and t != "public.a_log"]
                if busy and remaining >= 1:
                    time.sleep(random.uniform(0.0, 0.05))  # somewhere inside a chunk
                    producer.kill()
                    killed_in = busy[0]
                    break
                time.sleep(0.02)
            assert killed_in is not None, f"no progress to kill in:\n{producer.log_tail()}"
            before = _state(broker.bootstrap, prefix)
            assert before is not None and not before.done
            producer.start()
            _wait_snapshot_done(producer, 1, timeout=900)  # the resumed run logs the tables it finishes
            wait_for(lambda: (st := _state(broker.bootstrap, prefix)) is not None and st.done, 600,
                     "the snapshot state to say done", [producer, sink], interval=0.5)
            _writes_go_on(writer)
            writer.finish()
            wait_converged(source_dsn, target_dsn, TABLES, timeout=900, procs=[producer, sink])
            reads = check_no_duplicates(broker.bootstrap, prefix, [t for t in counts if t != "a_log"])
            assert all(n > 0 for n in reads.values()), reads
            log = producer.logfile.read_text(errors="replace")
            assert "resuming the snapshot" in log, "the restarted producer did not resume the snapshot"
        finally:
            writer.stop.set()


def _resnapshot(cfg: Path, table: str, chunk_rows: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bridge", "snapshot", "--config", str(cfg), "--table", table,
                          "--chunk-rows", str(chunk_rows), "--log-format", "text"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_resnapshot_under_concurrent_updates(broker: Broker, source_dsn: str, target_dsn: str,
                                             tmp_path: Path) -> None:
    """Rows written before the slot existed reach the target only through the resnapshot, while a
    writer keeps updating and deleting those very keys: every key must end with the source's
    state (a chunk row read before a streamed update and produced after it would leave it stale)."""
    counts = populate(source_dsn, 20_000)
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap,
                       source__snapshot="never")
    conf = json.loads(cfg.read_text())
    producer = BridgeProcess("produce", cfg, tmp_path).start()
    sink = BridgeProcess("sink", cfg, tmp_path).start()
    writer = Writer(source_dsn, counts, tables=("orders_c", "by_text"), pause_s=0.002)
    with stopped_cleanly(producer, sink):
        try:
            wait_slot_active(source_dsn, conf["source"]["slot"], producer)
            writer.start()
            for table in ("public.orders_c", '"public"."by_text"'):
                assert _resnapshot(cfg, table, 500)["requested"] in ("public.orders_c", "public.by_text")
            # keyless tables cannot be resnapshotted: refused, and the producer goes on
            _resnapshot(cfg, "public.a_log", 500)
            wait_for(lambda: "resnapshot of public.by_text done" in producer.logfile.read_text(errors="replace"), 300,
                     "the resnapshot of public.by_text", [producer, sink])
            text = producer.logfile.read_text(errors="replace")
            assert "resnapshot of public.orders_c done" in text and "resnapshot of public.by_text done" in text, \
                producer.log_tail()
            assert "resnapshot of public.a_log refused" in text
            during = writer.commits
            writer.finish()
            assert during > 0
            wait_converged(source_dsn, target_dsn, {t: TABLES[t] for t in ("public.orders_c", "public.by_text")},
                           timeout=300, procs=[producer, sink])
            dropped = [line for line in text.splitlines() if "resnapshot of public." in line and " done: " in line]
            print("\n" + "\n".join(dropped))
        finally:
            writer.stop.set()


def test_resnapshot_window_leaves_changed_keys_to_the_stream(source_dsn: str) -> None:
    """The DBLog window, step by step against a real source (the stream is played by hand): a key
    changed between a chunk's watermarks is not produced from the chunk, a truncate in the window
    drops the chunk, messages of another run are ignored, the watermarks really are written in
    low/high order, and the request's ledger entry is released only when the table is done."""
    from bridge.ack.watermark import InFlight
    from bridge.lsn import Lsn
    from bridge.produce.resnapshot import HIGH_PREFIX, LOW_PREFIX, REQUEST_PREFIX, Resnapshotter
    from bridge.source.catalog import Catalog
    from bridge.source.slot import sql_connect
    from bridge.source.test_decoding import MessageLine

    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.w (id integer PRIMARY KEY, v text)")
        conn.execute("INSERT INTO public.w SELECT g, 'v' || g FROM generate_series(1, 10) g")
        conn.execute("SELECT pg_create_logical_replication_slot('w_slot', 'test_decoding')")
    catalog = Catalog(sql_connect(source_dsn))
    rel = catalog.relation("public", "w")
    rs = Resnapshotter(lambda: sql_connect(source_dsn), catalog.relation, lambda s, t: True, chunk_rows=4)
    try:
        request = InFlight(Lsn(100))
        assert rs.on_message(MessageLine(False, REQUEST_PREFIX, "public.w"), request) is True
        assert rs.release() == []

        def mark(chunk: int) -> str:
            return f"{rs.token}:1:{chunk}"

        other = InFlight(Lsn(200))
        # chunk 1 (ids 1-4): id 2 changes after the read, before the high watermark
        assert not rs.on_message(MessageLine(False, LOW_PREFIX, "deadbeef0000:1:1"), other)  # another run's
        rs.on_message(MessageLine(False, LOW_PREFIX, mark(1)), other)
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("UPDATE public.w SET v = 'changed' WHERE id = 2")
        rs.observe(rel, None, (2, "changed"))
        rs.observe(rel, None, (7, "other chunk"))  # a key of a later chunk: harmless
        assert rs.take_reads() is None  # no high watermark yet
        rs.on_message(MessageLine(False, HIGH_PREFIX, mark(1)), other)
        reads = rs.take_reads()
        assert reads is not None and reads[0].table == "w"
        assert [r[0] for r in reads[1]] == [1, 3, 4]
        # chunk 2 (ids 5-8): a truncate in the window drops the whole chunk
        rs.on_message(MessageLine(False, LOW_PREFIX, mark(2)), other)
        rs.observe_truncate("public", "w")
        rs.on_message(MessageLine(False, HIGH_PREFIX, mark(2)), other)
        reads = rs.take_reads()
        assert reads is not None and reads[1] == []
        assert rs.release() == [] and rs.active
        # chunk 3 (ids 9-10): short, so the table is done and the request's entry is released
        rs.on_message(MessageLine(False, LOW_PREFIX, mark(3)), other)
        rs.on_message(MessageLine(False, HIGH_PREFIX, mark(3)), other)
        reads = rs.take_reads()
        assert reads is not None and [(r[0], r[1]) for r in reads[1]] == [(9, "v9"), (10, "v10")]
        assert rs.release() == [request] and not rs.active
        assert rs.completed == [("public.w", 5, 5)]
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            lines = [r[0] for r in conn.execute(
                "SELECT data FROM pg_logical_slot_peek_changes('w_slot', NULL, NULL) "
                "WHERE data LIKE 'message:%%'").fetchall()]
        expected = [f"{p}, sz: {len(mark(c))} content:{mark(c)}" for c in (1, 2, 3)
                    for p in (f"prefix: {LOW_PREFIX}", f"prefix: {HIGH_PREFIX}")]
        assert [line.split("transactional: 0 ", 1)[1] for line in lines] == expected
    finally:
        rs.close()
        catalog.close()
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot('w_slot')")
