"""The real producer with the native core against itself with the Python reference (issue #15).

Two producers read the same backlog (two slots made at the same point): one as shipped
(`BRIDGE_NATIVE` unset: native), one with `BRIDGE_NATIVE=0`. The workload covers every common
type, NULLs, quotes, unchanged TOAST, a primary-key change, a REPLICA IDENTITY FULL table, deletes
(with tombstones), a truncate, an array column (reference path) and a `varchar` widening the lines
do not show (the native core's modifier miss → `ModifierError` → catalog re-read). Every topic
must hold the same records in the same partitions and order: equal keys, headers and decoded
envelopes (all but `ts_ms`, the encoding time). The native producer's log must show that it
installed plans (so the comparison is not reference against reference).
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bridge.codec import EnvelopeDecoder
from bridge.codec.store import TopicSchemaStore
from bridge.local import free_port
from tests.conftest import Broker
from tests.pipeline import BridgeProcess, slot_confirmed, wait_slot_active, write_config
from tests.support.topics import read_to_end

SCHEMA = r'''
CREATE TABLE public.orders (id bigint PRIMARY KEY, account_id integer NOT NULL, amount numeric(12,2),
  status varchar(8) NOT NULL, note text, created_at timestamptz NOT NULL, day date, at time, ts timestamp,
  ok boolean, ratio real, score double precision, blob bytea, u uuid, payload jsonb, small smallint);
CREATE TABLE public."Odd ""Name""" ("k k" int PRIMARY KEY, "v.v" text, tags int[]);
CREATE TABLE public.docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE public.docs ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE public.events (at timestamptz, kind text, n int);
ALTER TABLE public.events REPLICA IDENTITY FULL;
'''

TOPICS = ["public.orders", 'public.Odd "Name"', "public.docs", "public.events"]


def workload(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=False) as conn:
        for r in range(6):
            conn.execute(
                "INSERT INTO public.orders SELECT g, g %% 7, CASE WHEN g %% 5 = 0 THEN NULL ELSE g * 1.25 END, "
                "'new', CASE WHEN g %% 3 = 0 THEN NULL ELSE 'it''s ' || g END, "
                "'2026-11-23 10:00:00+02'::timestamptz + g * interval '1 second', "
                "'2020-02-29'::date + g, '12:34:56.5'::time, '1999-12-31 23:59:59.999999'::timestamp, "
                "g %% 2 = 0, g / 3.0, g * 1e10, decode(md5(g::text), 'hex'), md5(g::text)::uuid, "
                "jsonb_build_object('g', g), g %% 100 FROM generate_series(%s::int, %s::int) g", (r * 100 + 1, r * 100 + 100))
            conn.execute('INSERT INTO public."Odd ""Name""" SELECT g, \'v\' || g, ARRAY[g, NULL] '
                         "FROM generate_series(%s::int, %s::int) g", (r * 10 + 1, r * 10 + 10))
            conn.execute("UPDATE public.orders SET status = 'paid', amount = amount + 1 WHERE id %% 4 = %s", (r % 4,))
            conn.execute("DELETE FROM public.orders WHERE id = %s", (r * 100 + 7,))
            conn.execute("INSERT INTO public.events VALUES (now(), 'tick', %s), (now(), NULL, %s)", (r, r))
            conn.commit()
        conn.execute("INSERT INTO public.docs SELECT g, 'title ' || g, repeat(md5(g::text), 400) "
                     "FROM generate_series(1, 10) g")
        conn.commit()
        conn.execute("UPDATE public.docs SET title = title || ' (edited)' WHERE id <= 5")  # unchanged TOAST
        conn.execute("UPDATE public.orders SET id = id + 100000 WHERE id <= 3")  # primary-key change
        conn.execute("UPDATE public.events SET kind = 'tock' WHERE n = 3")
        conn.execute("DELETE FROM public.events WHERE n = 4")
        conn.commit()


def workload_after_catalog_read(dsn: str) -> None:
    """After the producers read the catalog: a widening the lines do not show."""
    with psycopg.connect(dsn, autocommit=False) as conn:
        conn.execute("ALTER TABLE public.orders ALTER COLUMN status TYPE varchar(20)")  # invisible in lines
        conn.commit()
        conn.execute("UPDATE public.orders SET status = 'shipped-express' WHERE id % 10 = 1")
        conn.execute("INSERT INTO public.orders (id, account_id, status, created_at) VALUES (9999, 1, 'x', now())")
        conn.commit()
        conn.execute('TRUNCATE public."Odd ""Name"""')
        conn.commit()


def records(bootstrap: str, topic: str) -> dict[int, list[Any]]:
    """Every record of `topic`, by partition, in offset order: read to each partition's
    end-of-partition event (`tests.support.topics.read_to_end`); Tansu's high watermark is the
    last batch's base offset + 1, so a read bounded by it stopped early on one side at random."""
    out: dict[int, list[Any]] = {}
    for r in sorted(read_to_end(bootstrap, [topic]), key=lambda r: (r.partition, r.offset)):
        out.setdefault(r.partition, []).append((r.key, r.value, r.headers))
    return out


def decoded(bootstrap: str, prefix: str, topic: str) -> dict[int, list[Any]]:
    dec = EnvelopeDecoder(TopicSchemaStore(bootstrap, prefix), topic_prefix=prefix)
    out: dict[int, list[Any]] = {}
    for p, recs in records(bootstrap, f"{prefix}.{topic}").items():
        rows = []
        for key, value, headers in recs:
            k = None if key is None else dec.decode_key(key)
            if value is None:
                rows.append((k, None, headers))
                continue
            e = dec.decode(value)
            rows.append((k, (e.relation.column_names, e.op, e.position, e.xid, e.commit_ts_us, e.before, e.after,
                             e.unchanged, e.snapshot), headers))
        out[p] = rows
    return out


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_native_producer_writes_what_the_reference_writes(broker: Broker, source_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("SELECT pg_create_logical_replication_slot('nat', 'test_decoding')")
        conn.execute("SELECT pg_copy_logical_replication_slot('nat', 'ref')")
    procs = {}
    nat_port = free_port()
    for slot, env in (("nat", {"BRIDGE_METRICS__PORT": str(nat_port)}), ("ref", {"BRIDGE_NATIVE": "0"})):
        cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=source_dsn, bootstrap=broker.bootstrap,
                           ack="kafka", prefix=f"p{slot}", slot=slot, kafka__tombstones=True)
        procs[slot] = BridgeProcess("produce", cfg, tmp_path, env=env, name=f"produce-{slot}").start()

    def wait_confirmed() -> None:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            end = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + 180
        while any((slot_confirmed(source_dsn, s) or 0) < end for s in procs):
            for proc in procs.values():
                assert proc.alive(), proc.logfile.read_text()[-3000:]
            assert time.monotonic() < deadline, "slots not confirmed past the workload"
            time.sleep(0.5)

    try:
        for slot, proc in procs.items():
            wait_slot_active(source_dsn, slot, proc)
        workload(source_dsn)
        wait_confirmed()
        workload_after_catalog_read(source_dsn)
        wait_confirmed()
        # the producer's decode stage really took the native path (not only installed plans)
        with urllib.request.urlopen(f"http://127.0.0.1:{nat_port}/metrics", timeout=10) as resp:
            scraped = resp.read().decode()
        native = [float(line.split()[-1]) for line in scraped.splitlines()
                  if line.startswith("bridge_producer_native_changes_total ")]
        assert native and native[0] > 100, scraped[-2000:]
    finally:
        for proc in procs.values():
            proc.terminate()
    log = procs["nat"].logfile.read_text()
    assert "native core: plan" in log, log[-3000:]
    assert "native core: plan" not in procs["ref"].logfile.read_text()
    assert "re-reading public.orders" in log  # the varchar widening reached the reference path
    total = 0
    for topic in TOPICS:
        nat, ref = decoded(broker.bootstrap, "pnat", topic), decoded(broker.bootstrap, "pref", topic)
        assert nat.keys() == ref.keys(), topic
        for p in nat:
            assert [r[0] for r in nat[p]] == [r[0] for r in ref[p]], (topic, p, "keys")
            assert [r[1] for r in nat[p]] == [r[1] for r in ref[p]], (topic, p, "envelopes")
            assert [r[2] for r in nat[p]] == [r[2] for r in ref[p]], (topic, p, "headers")
            total += len(nat[p])
    assert total > 700
