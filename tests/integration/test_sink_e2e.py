"""End to end, the sink's side: poison records, DDL while changes flow, a sink member killed in a
group of two, and a keyless table without REPLICA IDENTITY FULL.

Producer and sink run as real processes against a real source, broker and target. Broker choice:
Tansu where the broker adds nothing to what is tested (poison records, DDL, keyless tables);
Apache Kafka for the consumer-group test (rebalances after a member dies are the broker's part).
"""

from __future__ import annotations

import json
import random
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from bridge.local import free_port
from tests.chaos.harness import VersionMonitor
from tests.conftest import BROKER_KINDS, Broker
from tests.pipeline import (
    BridgeProcess,
    stopped_cleanly,
    table_digest,
    table_rows,
    wait_converged,
    wait_slot_active,
    write_config,
)
from tests.support.topics import read_to_end, wait_records
from tests.support.waits import wait_for
from tests.support.workloads import CHAOS_SCHEMA, CHAOS_TABLES, ChaosWorkload

TANSU = ["tansu"] if "tansu" in BROKER_KINDS else BROKER_KINDS
KAFKA = ["kafka"] if "kafka" in BROKER_KINDS else BROKER_KINDS


# -- helpers ------------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the process's /metrics: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric_sum(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def key_history(bootstrap: str, prefix: str, table: str, key: Any) -> list[str]:
    """Every record of `table`'s topic whose row has id `key`, decoded: for failure messages."""
    from bridge.codec import EnvelopeDecoder, TopicSchemaStore

    dec = EnvelopeDecoder(TopicSchemaStore(bootstrap, prefix))
    records = read_to_end(bootstrap, [f"{prefix}.{table}"], timeout=60)
    out = [f"{len(records)} records read"]
    for m in records:
        if m.value is None:
            continue
        ch = dec.decode(m.value)
        cols = [c.name for c in ch.relation.columns]
        rows = [dict(zip(cols, r, strict=False)) if r is not None else None for r in (ch.before, ch.after)]
        if any(r is not None and r.get("id") == key for r in rows):
            out.append(f"p{m.partition}@{m.offset} {ch.op} {ch.position} v{ch.relation.version} "
                       f"before={rows[0]} after={rows[1]} unchanged={ch.unchanged}")
    return out


def start_pipeline(cfg: Path, tmp: Path, source_dsn: str, sink_port: int | None = None
                   ) -> tuple[BridgeProcess, BridgeProcess]:
    slot = json.loads(cfg.read_text())["source"]["slot"]
    producer = BridgeProcess("produce", cfg, tmp).start()
    env = {"BRIDGE_METRICS__PORT": str(sink_port)} if sink_port else None
    sink = BridgeProcess("sink", cfg, tmp, env=env).start()
    wait_slot_active(source_dsn, slot, producer)
    return producer, sink


# -- 1. poison records --------------------------------------------------------------------------


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_poison_records_go_to_the_dead_letter_topic(broker: Broker, source_dsn: str, target_dsn: str,
                                                    tmp_path: Path) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL, note text)")
    # The CHECK exists only in the target: the source accepts v = 5000, the target must refuse it.
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL CHECK (v < 1000), note text)")
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap)
    prefix = json.loads(cfg.read_text())["kafka"]["topic_prefix"]
    topic, dlq = f"{prefix}.public.t", f"{prefix}._dlq"
    sink_port = free_port()
    producer, sink = start_pipeline(cfg, tmp_path, source_dsn, sink_port)
    with stopped_cleanly(producer, sink):
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.t SELECT g, g, 'row ' || g FROM generate_series(1, 100) g")
        wait_converged(source_dsn, target_dsn, {"public.t": (["id", "v", "note"], "id")}, procs=[producer, sink])

        # (a) garbage in a data topic the sink consumes: plain junk, an unknown schema fingerprint,
        # and a real envelope cut short.
        real = wait_records(broker.bootstrap, topic, 1, procs=[producer, sink])[0].value
        assert real is not None
        junk = [b"definitely not avro \xff\xfe\x00", b"\xc3\x01" + b"\x13" * 8 + b"\x02\x04",
                real[: len(real) // 2]]
        kp = Producer({"bootstrap.servers": broker.bootstrap})
        for i, value in enumerate(junk):
            kp.produce(topic, key=f"junk-{i}".encode(), value=value, partition=i % 3,
                       headers=[("x-origin", f"test-{i}".encode())])
        assert kp.flush(30) == 0
        # (b) a row the target's CHECK refuses, between rows it accepts, in one transaction and after
        with psycopg.connect(source_dsn, autocommit=False) as conn:
            conn.execute("INSERT INTO public.t VALUES (101, 101, 'ok'), (102, 5000, 'refused'), (103, 103, 'ok')")
            conn.execute("UPDATE public.t SET v = v + 1, note = 'updated' WHERE id <= 50")
            conn.commit()
            conn.execute("INSERT INTO public.t SELECT g, g, 'late ' || g FROM generate_series(104, 150) g")
            conn.execute("DELETE FROM public.t WHERE id BETWEEN 60 AND 69")
            conn.commit()

        # Everything else is applied: the target equals the source without the refused row.
        cols = ["id", "v", "note"]

        def equal_but_refused() -> bool:
            return (table_digest(source_dsn, "(SELECT * FROM public.t WHERE id <> 102) s", cols, "id")
                    == table_digest(target_dsn, "public.t", cols, "id"))

        wait_for(equal_but_refused, 120, "target = source minus the refused row", [producer, sink])
        with psycopg.connect(target_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM public.t WHERE id = 102").fetchone() == (0,)

        dead = wait_records(broker.bootstrap, dlq, 4, procs=[producer, sink])
        assert len(dead) == 4, [m.headers for m in dead]
        by_value = {m.value: m for m in dead}
        for i, value in enumerate(junk):
            m = by_value.get(value)
            assert m is not None, f"junk record {i} not in the dead-letter topic"
            h = dict(m.headers)
            assert m.key == f"junk-{i}".encode()
            assert h["x-origin"] == f"test-{i}".encode(), "original headers lost"
            assert h["bridge.dlq.topic"] == topic.encode()
            assert h["bridge.dlq.partition"] == str(i % 3).encode()
            assert int(h["bridge.dlq.offset"]) >= 0
            assert h["bridge.dlq.error"], "no error header"
        refused = [m for m in dead if m.value not in junk]
        assert len(refused) == 1
        r = refused[0]
        h = dict(r.headers)
        assert "check" in h["bridge.dlq.error"].decode().lower(), h["bridge.dlq.error"]
        assert h["bridge.dlq.topic"] == topic.encode()
        assert "bridge.commit_lsn" in h and "bridge.seq" in h, "the record's own headers were not kept"
        # the original bytes: the same record is still in the data topic at that offset
        part, off = int(h["bridge.dlq.partition"]), int(h["bridge.dlq.offset"])
        assert r.key is not None
        orig = [m for m in read_to_end(broker.bootstrap, [topic]) if (m.partition, m.offset) == (part, off)]
        assert [(m.key, m.value) for m in orig] == [(r.key, r.value)]

        samples = scrape(sink_port)
        assert metric_sum(samples, "bridge_dead_letters_total", topic=topic) == 4
        assert metric_sum(samples, "bridge_up", component="sink") == 1


# -- 2. DDL while changes flow ------------------------------------------------------------------


class Writer:
    """Inserts and updates `public.d` in small transactions until stopped; keeps going across DDL."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.txns = 0
        self.error: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        rng = random.Random(3)
        next_id = 1
        try:
            with psycopg.connect(self.dsn, autocommit=False) as conn:
                while not stop.is_set():
                    rows = [(next_id + i, rng.randint(0, 1000), f"s{i}") for i in range(20)]
                    next_id += 20
                    conn.cursor().executemany("INSERT INTO public.d (id, n, s) VALUES (%s, %s, %s)", rows)
                    conn.execute("UPDATE public.d SET n = n + 1 WHERE id = %s", (rng.randint(1, next_id - 1),))
                    conn.commit()
                    self.txns += 1
                    stop.wait(0.01)
        except BaseException as exc:
            self.error = exc


def run_ddl_mid_stream(broker: Broker, source_dsn: str, target_dsn: str, tmp_path: Path,
                       ddls: list[str | tuple[str, ...]], after: list[str], types: dict[str, str],
                       converge_s: float = 60.0, sink_late: bool = False) -> None:
    """Changes flow into `public.d` while `ddls` run on the source, then `after`; the target must
    equal the source on every column and have the source's column `types`. `sink_late`: the sink
    starts only once everything is written, so its first batches span every table version. A
    tuple in `ddls` runs its statements one after the other, 0.3 s apart (the writer commits in
    between), while the producer is stopped (SIGSTOP): it decodes those changes only once the
    catalog is past all of them."""
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.d (id int PRIMARY KEY, n integer, s varchar(10))")
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap)
    slot = json.loads(cfg.read_text())["source"]["slot"]
    producer = BridgeProcess("produce", cfg, tmp_path).start()
    sink = BridgeProcess("sink", cfg, tmp_path)
    if not sink_late:
        sink.start()
    stop = threading.Event()
    writer = Writer(source_dsn)
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)

    def applied() -> int:
        try:
            return table_digest(target_dsn, "public.d", ["id"], "id")[0]
        except psycopg.errors.UndefinedTable:
            return 0

    def changes_flow(what: str) -> None:
        """The writer commits more transactions (or failed) and, with the sink running, the sink
        applies more of them: the DDL lands while changes flow through the whole pipeline."""
        txns, rows = writer.txns, applied() if sink.alive() else 0
        wait_for(lambda: (writer.txns >= txns + 15 and (not sink.alive() or applied() > rows))
                 or writer.error is not None, 60, f"changes flowing {what}",
                 [p for p in (producer, sink) if p.proc is not None])

    with stopped_cleanly(producer, sink):
        try:
            wait_slot_active(source_dsn, slot, producer)
            thread.start()
            for sql in ddls:
                changes_flow(f"before {sql}")
                ahead = isinstance(sql, tuple)
                if ahead:
                    assert producer.proc is not None
                    producer.proc.send_signal(signal.SIGSTOP)
                try:
                    with psycopg.connect(source_dsn, autocommit=True) as conn:
                        conn.execute("SET lock_timeout = '10s'")
                        for stmt in sql if isinstance(sql, tuple) else (sql,):
                            conn.execute(stmt)
                            time.sleep(0.3 if ahead else 0)
                finally:
                    if ahead and producer.proc is not None:
                        producer.proc.send_signal(signal.SIGCONT)
            changes_flow("after the DDL")
            with psycopg.connect(source_dsn, autocommit=True) as conn:
                for sql in after:
                    conn.execute(sql)
            changes_flow("after the last statements")
            stop.set()
            thread.join(30)
            assert writer.error is None, writer.error
            assert writer.txns > 20
            if sink_late:
                sink.start()
            with psycopg.connect(source_dsn) as conn:
                cols = [r[0] for r in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'public.d'::regclass AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum")]
            try:
                wait_converged(source_dsn, target_dsn, {"public.d": (cols, "id")}, timeout=converge_s, procs=[producer, sink])
            except AssertionError as exc:
                src, dst = (set(table_rows(d, "public.d", cols, "id")) for d in (source_dsn, target_dsn))
                bad = sorted(src - dst)
                history = key_history(broker.bootstrap, json.loads(cfg.read_text())["kafka"]["topic_prefix"],
                                      "public.d", bad[0][0]) if bad else []
                raise AssertionError(f"columns {cols}; only in source {bad[:5]}, only in target {sorted(dst - src)[:5]} "
                                     f"({len(bad)} rows differ); records of id={bad[0][0] if bad else None}:\n"
                                     + "\n".join(history)) from exc
            with psycopg.connect(target_dsn) as conn:
                have: dict[str, str] = dict(conn.execute(
                    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'public.d'::regclass AND attnum > 0 AND NOT attisdropped").fetchall())
            assert {k: have.get(k) for k in types} == types, have
        finally:
            stop.set()
            if thread.is_alive():
                thread.join(30)


@pytest.mark.parametrize("sink_late", [False, True], ids=["sink-running", "sink-catching-up"])
@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_ddl_mid_stream_add_column_and_bigint(broker: Broker, source_dsn: str, target_dsn: str,
                                              tmp_path: Path, sink_late: bool) -> None:
    run_ddl_mid_stream(
        broker, source_dsn, target_dsn, tmp_path,
        ddls=["ALTER TABLE public.d ADD COLUMN note text",
              "ALTER TABLE public.d ALTER COLUMN n TYPE bigint"],
        after=["UPDATE public.d SET n = 5000000000 + id, note = 'n' || id WHERE id % 10 = 0",
               "INSERT INTO public.d (id, n, s, note) VALUES (-1, 9000000000, 'z', 'x')"],
        types={"n": "bigint", "note": "text"}, sink_late=sink_late)


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_ddl_mid_stream_add_column_with_default(broker: Broker, source_dsn: str, target_dsn: str,
                                                tmp_path: Path) -> None:
    run_ddl_mid_stream(
        broker, source_dsn, target_dsn, tmp_path,
        ddls=["ALTER TABLE public.d ADD COLUMN flag integer NOT NULL DEFAULT 7",
              # a quote and a % in the value; now() is evaluated once, at the ALTER
              "ALTER TABLE public.d ADD COLUMN tag text DEFAULT 'it''s 100%', ADD COLUMN at timestamptz DEFAULT now()"],
        after=["INSERT INTO public.d (id, n, s, flag) VALUES (-1, 1, 'z', 1)"],
        types={"flag": "integer", "tag": "text", "at": "timestamp with time zone"}, converge_s=20)


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_ddl_mid_stream_add_column_with_default_while_the_catalog_is_ahead(
        broker: Broker, source_dsn: str, target_dsn: str, tmp_path: Path) -> None:
    """ADD COLUMN … DEFAULT, changes, then another DDL, all before the producer decodes them: it
    builds the relation from the change lines (the catalog is ahead), and must still give the
    target column the default that rows older than the ALTER read in the source."""
    run_ddl_mid_stream(
        broker, source_dsn, target_dsn, tmp_path,
        ddls=[("ALTER TABLE public.d ADD COLUMN flag integer NOT NULL DEFAULT 7",
               "ALTER TABLE public.d ADD COLUMN later text")],
        after=["INSERT INTO public.d (id, n, s, flag, later) VALUES (-1, 1, 'z', 1, 'x')"],
        types={"flag": "integer", "later": "text"}, converge_s=30)


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_ddl_mid_stream_varchar_widening(broker: Broker, source_dsn: str, target_dsn: str, tmp_path: Path) -> None:
    """test_decoding prints `character varying` before and after: the producer learns of the wider
    column from the first value that does not fit the old length, and re-reads the catalog."""
    run_ddl_mid_stream(
        broker, source_dsn, target_dsn, tmp_path,
        ddls=["ALTER TABLE public.d ALTER COLUMN s TYPE varchar(50)"],
        after=["UPDATE public.d SET s = repeat('w', 40) WHERE id % 10 = 0",
               "INSERT INTO public.d (id, n, s) VALUES (-1, 1, repeat('z', 50))"],
        types={"s": "character varying(50)"}, converge_s=20)


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_ddl_mid_stream_numeric_widening(broker: Broker, source_dsn: str, target_dsn: str, tmp_path: Path) -> None:
    """numeric(6,2) -> numeric(12,4) prints `numeric` before and after: values with 4 decimals or
    8 integer digits must not stop the producer, and reach the target whole."""
    run_ddl_mid_stream(
        broker, source_dsn, target_dsn, tmp_path,
        ddls=["ALTER TABLE public.d ADD COLUMN amt numeric(6,2) DEFAULT 1.5",
              "ALTER TABLE public.d ALTER COLUMN amt TYPE numeric(12,4)"],
        after=["UPDATE public.d SET amt = 12345678.1234 WHERE id % 10 = 0",
               "INSERT INTO public.d (id, n, s, amt) VALUES (-1, 1, 'z', 0.0001)"],
        types={"amt": "numeric(12,4)"}, converge_s=20)


# -- 3. two sink members, one killed and restarted -----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("broker", KAFKA, indirect=True)
def test_sink_group_member_killed_and_restarted(broker: Broker, source_dsn: str, target_dsn: str,
                                                tmp_path: Path) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute(CHAOS_SCHEMA)
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap,
                       sink__batch_max_rows=2000)
    slot = json.loads(cfg.read_text())["source"]["slot"]
    producer = BridgeProcess("produce", cfg, tmp_path).start()
    sink_a = BridgeProcess("sink", cfg, tmp_path, name="sink-a").start()
    sink_b = BridgeProcess("sink", cfg, tmp_path, name="sink-b").start()
    procs = [producer, sink_a, sink_b]
    stop = threading.Event()
    load = ChaosWorkload(source_dsn, target_changes=50_000, big_txn_rows=5_000)
    versions = VersionMonitor(target_dsn)
    threads = [threading.Thread(target=load.run, args=(stop,), daemon=True),
               threading.Thread(target=versions.run, args=(stop,), daemon=True)]
    with stopped_cleanly(*procs):
        try:
            wait_slot_active(source_dsn, slot, producer)
            for t in threads:
                t.start()

            def both_assigned() -> bool:  # both members hold partitions before one is killed
                return all(re.search(r"assigned [1-9]\d* partitions", p.logfile.read_text(errors="replace"))
                           for p in (sink_a, sink_b))

            wait_for(both_assigned, 120, "both sinks assigned", procs)
            wait_for(lambda: load.changes >= 20_000, 300, "20,000 changes written", procs)

            def applied() -> int:
                try:
                    return table_digest(target_dsn, "public.accounts", ["id"], "id")[0]
                except psycopg.errors.UndefinedTable:
                    return 0  # the sink has not created the target table yet

            wait_for(lambda: applied() > 0, 120, "the sinks applied something", procs)
            applied_before = applied()
            sink_a.kill()
            time.sleep(3.0)  # fault pacing: the group goes on without it for a while
            sink_a.start()
            load.done.wait(600)
            assert load.changes >= 50_000
            wait_converged(source_dsn, target_dsn, dict(CHAOS_TABLES.items()), timeout=300, procs=procs)
            stop.set()
            for t in threads:
                t.join(30)
            assert applied_before > 0, "nothing was applied before the kill: the kill tested nothing"
            assert versions.samples >= 5, versions.samples
            assert not versions.regressions, versions.regressions
            assert sink_a.kills == 1 and sink_a.starts == 2
        finally:
            stop.set()
            for t in threads:
                if t.is_alive():
                    t.join(30)


# -- 4. keyless table without REPLICA IDENTITY FULL ----------------------------------------------


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_keyless_table_without_replica_identity_full(broker: Broker, source_dsn: str, target_dsn: str,
                                                     tmp_path: Path) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.nokey (a int, b text)")
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap)
    prefix = json.loads(cfg.read_text())["kafka"]["topic_prefix"]
    sink_port = free_port()
    producer, sink = start_pipeline(cfg, tmp_path, source_dsn, sink_port)
    cols = (["a", "b"], "a, b")
    with stopped_cleanly(producer, sink):
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.nokey SELECT g, 'v' || g FROM generate_series(1, 50) g")
        wait_converged(source_dsn, target_dsn, {"public.nokey": cols}, procs=[producer, sink])

        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("UPDATE public.nokey SET b = 'changed' WHERE a = 1")
            conn.execute("DELETE FROM public.nokey WHERE a = 2")
            conn.execute("INSERT INTO public.nokey VALUES (51, 'after')")
        # the pipeline goes on: the insert after the refused changes arrives
        wait_for(lambda: table_digest(target_dsn, "public.nokey", ["a"], "a")[0] == 51, 60,
                 "the insert after the update/delete", [producer, sink])
        dead = wait_records(broker.bootstrap, f"{prefix}._dlq", 2, procs=[producer, sink])
        assert len(dead) == 2
        fix = "ALTER TABLE public.nokey REPLICA IDENTITY FULL"
        for m in dead:
            err = dict(m.headers)["bridge.dlq.error"].decode()
            assert "public.nokey" in err and fix in err, err
        log = sink.logfile.read_text(errors="replace")
        assert fix in log, sink.log_tail()
        assert metric_sum(scrape(sink_port), "bridge_dead_letters_total") == 2
        # the update and delete were not applied (the target keeps the old rows)
        with psycopg.connect(target_dsn) as conn:
            assert conn.execute("SELECT b FROM public.nokey WHERE a = 1").fetchone() == ("v1",)
            assert conn.execute("SELECT count(*) FROM public.nokey WHERE a = 2").fetchone() == (1,)
