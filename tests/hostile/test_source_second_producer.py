"""Two `capture: sql` producers on one slot: the second must stop at start with a clear error.

A streamed slot is marked active by its walsender, so PostgreSQL itself refuses a second stream;
a peeked slot is active only during each peek, so two sql producers both started and the second
died later with a slot-advance error (after both had produced the same changes). Now the
producer takes a session-level advisory lock keyed by the slot name on the source first.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg

from bridge.codec.names import topic_name
from tests.conftest import Broker
from tests.pipeline import BridgeProcess, wait_slot_active, write_config
from tests.support.topics import decoded
from tests.support.waits import wait_for


def test_second_sql_producer_on_a_slot_fails_at_start(broker: Broker, source_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=source_dsn, bootstrap=broker.bootstrap,
                       capture="sql", ack="kafka")
    body = json.loads(cfg.read_text())
    slot, prefix = body["source"]["slot"], body["kafka"]["topic_prefix"]
    first = BridgeProcess("produce", cfg, tmp_path, name="first").start()
    second = BridgeProcess("produce", cfg, tmp_path, name="second")
    try:
        wait_slot_active(source_dsn, slot, first)
        second.start()
        assert second.proc is not None
        try:
            code = second.proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the second producer is still running:\n{second.log_tail()}") from None
        log = second.log_tail(100)
        assert code == 1, log
        assert "Traceback" not in log, log
        assert f"another producer is already running on slot '{slot}'" in log, log
        # The first one is unharmed and goes on.
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.t SELECT generate_series(1, 10)")
        topic = topic_name(prefix, "public", "t")
        wait_for(lambda: len(decoded(broker.bootstrap, prefix, topic)) == 10, 60, "the rows", [first])
        assert first.alive(), first.log_tail()
    finally:
        second.kill()
        first.terminate()
