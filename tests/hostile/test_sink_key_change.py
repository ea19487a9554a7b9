"""A primary-key change while streaming, end to end: the target follows the new key.

After `ALTER TABLE … DROP CONSTRAINT …, ADD PRIMARY KEY (b)` on the source, rows may repeat the
old key `a`; the sink must upsert on `b` (it mirrors the ALTER in the target) and the
target must equal the source, while another table flows throughout.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tests.conftest import Broker
from tests.hostile.rig import drop_slot
from tests.pipeline import BridgeProcess, wait_converged, wait_slot_active, write_config
from tests.support.waits import check_alive

TABLES = {"public.acct": (["a", "b", "v"], "b"), "public.other": (["id", "v"], "id")}


def test_the_target_follows_a_primary_key_change(broker: Broker, source_dsn: str, target_dsn: str,
                                                 tmp_path: Path) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.acct (a int PRIMARY KEY, b int NOT NULL, v text)")
        conn.execute("CREATE TABLE public.other (id int PRIMARY KEY, v text)")
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap)
    producer = BridgeProcess("produce", cfg, tmp_path).start()
    sink = BridgeProcess("sink", cfg, tmp_path).start()
    procs = [producer, sink]
    try:
        wait_slot_active(source_dsn, json.loads(cfg.read_text())["source"]["slot"], producer)
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.acct SELECT g, 1000 + g, 'old' FROM generate_series(1, 20) g")
            conn.execute("INSERT INTO public.other SELECT g, 'x' FROM generate_series(1, 20) g")
        wait_converged(source_dsn, target_dsn, TABLES, timeout=120, procs=procs)
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE public.acct DROP CONSTRAINT acct_pkey, ADD PRIMARY KEY (b)")
            conn.execute("DELETE FROM public.acct WHERE b = 1003")
            # `a` repeats now: only the new key tells these rows apart
            conn.execute("INSERT INTO public.acct VALUES (1, 2001, 'same a, new b'), (2, 2002, 'same a')")
            conn.execute("UPDATE public.acct SET v = 'updated' WHERE b IN (1001, 2001)")
            conn.execute("UPDATE public.acct SET b = 3005 WHERE b = 1005")
            conn.execute("INSERT INTO public.other SELECT g, 'y' FROM generate_series(21, 40) g")
        wait_converged(source_dsn, target_dsn, TABLES, timeout=180, procs=procs)
        with psycopg.connect(target_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM public.acct WHERE a = 1").fetchone() == (2,)
        assert "primary key (a) replaced by the source's (b)" in sink.logfile.read_text(errors="replace")
        check_alive(procs)
    finally:
        producer.terminate()
        sink.terminate()
        drop_slot(source_dsn, json.loads(cfg.read_text())["source"]["slot"])
