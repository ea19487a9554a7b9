"""End to end: producer and sink as real processes, a real source, broker and target.

The workload covers inserts, updates (including primary-key changes), deletes, a table without a
primary key (REPLICA IDENTITY FULL), unchanged TOAST values, a truncate, awkward identifiers and
a table outside the include patterns. The target must equal the source, and the slot must end up
confirmed past the last transaction (the ack loop closed).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Broker
from tests.pipeline import (
    BridgeProcess,
    slot_confirmed,
    stopped_cleanly,
    wait_converged,
    wait_slot_active,
    write_config,
)
from tests.support.waits import wait_for

SCHEMA = r'''
CREATE SCHEMA "My Schema";
CREATE TABLE public.orders (id bigint PRIMARY KEY, account_id integer NOT NULL, amount numeric(12,2) NOT NULL,
  status text NOT NULL, note text, created_at timestamptz NOT NULL, payload jsonb);
CREATE TABLE "My Schema"."Line ""Items""" ("order id" bigint, "line" integer, sku varchar(20) NOT NULL,
  qty smallint, tags text[], PRIMARY KEY ("order id", "line"));
CREATE TABLE public.docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE public.docs ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE public.events (at timestamptz, kind text, n int);
ALTER TABLE public.events REPLICA IDENTITY FULL;
CREATE TABLE public.ignored (id int PRIMARY KEY, v text);
'''

TABLES = {
    "public.orders": (["id", "account_id", "amount", "status", "note", "created_at", "payload::text"], "id"),
    '"My Schema"."Line ""Items"""': (['"order id"', '"line"', "sku", "qty", "tags"], '"order id", "line"'),
    "public.docs": (["id", "title", "md5(body)"], "id"),
    "public.events": (["at", "kind", "n"], "at, kind, n"),
}


def workload(dsn: str, seed: int = 1, rounds: int = 20) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=False) as conn:
        next_id = 1
        for r in range(rounds):
            rows = [(next_id + i, rng.randint(1, 99), f"{rng.uniform(0, 9999):.2f}", rng.choice(["new", "paid"]),
                     None if i % 5 == 0 else f"it's note {i}", '{"k": [1, 2]}') for i in range(50)]
            next_id += 50
            conn.cursor().executemany("INSERT INTO public.orders VALUES (%s,%s,%s,%s,%s,now(),%s)", rows)
            conn.cursor().executemany('INSERT INTO "My Schema"."Line ""Items""" VALUES (%s, %s, %s, %s, %s)',
                                      [(o[0], ln, f"sku-{ln}", ln, ["a", None, 'b"c']) for o in rows[:10]
                                       for ln in (1, 2)])
            conn.execute("UPDATE public.orders SET status = 'shipped', amount = amount + 1 WHERE id %% 7 = %s",
                         (r % 7,))
            conn.execute("DELETE FROM public.orders WHERE id = %s", (rng.randint(1, next_id),))
            conn.execute("INSERT INTO public.events VALUES (now(), 'tick', %s), (now(), 'tick', %s)", (r, r))
            conn.execute("INSERT INTO public.ignored VALUES (%s, 'x') ON CONFLICT DO NOTHING", (r,))
            conn.commit()
            if r == 5:
                conn.execute("INSERT INTO public.docs SELECT g, 'title ' || g, repeat(md5(g::text), 400) "
                             "FROM generate_series(1, 20) g")
                conn.commit()
            if r == 8:
                # TOAST: the body is not rewritten, test_decoding says unchanged-toast-datum.
                conn.execute("UPDATE public.docs SET title = title || ' (edited)' WHERE id <= 10")
                # primary-key change
                conn.execute("UPDATE public.orders SET id = id + 1000000 WHERE id <= 5")
                conn.execute("UPDATE public.events SET kind = 'tock' WHERE n = 3")
                conn.execute("DELETE FROM public.events WHERE n = 4")
                conn.commit()
            if r == 12:
                conn.execute('TRUNCATE "My Schema"."Line ""Items"""')
                conn.commit()


@pytest.mark.parametrize("capture", ["stream", "sql"])
def test_end_to_end(broker: Broker, source_dsn: str, target_dsn: str, tmp_path: Path, capture: str) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap,
                       capture=capture, source__tables=["public.*", "My Schema.*"],
                       source__exclude=["public.ignored"])
    slot = json.loads(cfg.read_text())["source"]["slot"]
    producer = BridgeProcess("produce", cfg, tmp_path).start()
    sink = BridgeProcess("sink", cfg, tmp_path).start()
    with stopped_cleanly(producer, sink):
        wait_slot_active(source_dsn, slot, producer)
        workload(source_dsn)
        wait_converged(source_dsn, target_dsn, {t: (c, o) for t, (c, o) in TABLES.items()}, timeout=180,
                       procs=[producer, sink])
        with psycopg.connect(target_dsn) as conn:
            assert conn.execute("SELECT to_regclass('public.ignored')").fetchone() == (None,), \
                "an excluded table reached the target"
        with psycopg.connect(source_dsn) as conn:
            end = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        assert end is not None
        # Everything written is applied, so the watermark (helped by heartbeats) passes the WAL end.
        wait_for(lambda: (slot_confirmed(source_dsn, slot) or 0) >= int(end[0]), 60,
                 "the slot confirmed past the WAL end: the ack loop closes", [producer, sink],
                 last=lambda: f"confirmed {slot_confirmed(source_dsn, slot)}, WAL end {end[0]}")
