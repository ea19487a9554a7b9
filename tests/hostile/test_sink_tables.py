"""Tables the target cannot take, and a target that cannot be reached: reported, never a stall.

- A keyless table with REPLICA IDENTITY FULL and 900 columns needs a staging table of 1,804
  columns, over PostgreSQL's 1,600: its records go to the dead-letter topic with the reason and
  the remedy, while another table in the same transactions keeps flowing.
- A sink whose target is unreachable says so in its log at once, even with nothing to consume.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from bridge.local import free_port
from tests.conftest import BROKER_KINDS, Broker
from tests.hostile.rig import drop_slot
from tests.pipeline import BridgeProcess, wait_converged, wait_slot_active, write_config
from tests.support.topics import wait_records
from tests.support.waits import check_alive, wait_for

TANSU = ["tansu"] if "tansu" in BROKER_KINDS else BROKER_KINDS
WIDE = 900


def test_a_wide_keyless_table_is_rejected_while_the_others_flow(broker: Broker, source_dsn: str, target_dsn: str,
                                                               tmp_path: Path) -> None:
    cols = ", ".join(f"c{i} int" for i in range(WIDE))
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE public.wide ({cols})")
        conn.execute("ALTER TABLE public.wide REPLICA IDENTITY FULL")
        conn.execute("CREATE TABLE public.small (id int PRIMARY KEY, v text)")
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap)
    conf = json.loads(cfg.read_text())
    producer = BridgeProcess("produce", cfg, tmp_path).start()
    sink = BridgeProcess("sink", cfg, tmp_path).start()
    try:
        wait_slot_active(source_dsn, conf["source"]["slot"], producer)
        values = ", ".join(str(i) for i in range(WIDE))
        for n in range(3):
            with psycopg.connect(source_dsn) as conn:  # one transaction touching both tables
                conn.execute(f"INSERT INTO public.wide VALUES ({values})")
                conn.execute("INSERT INTO public.small VALUES (%s, 'v')", (n,))
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("UPDATE public.wide SET c1 = -1")
            conn.execute("INSERT INTO public.small SELECT g, 'late' FROM generate_series(10, 50) g")
        wait_converged(source_dsn, target_dsn, {"public.small": (["id", "v"], "id")}, timeout=180,
                       procs=[producer, sink])
        dead = wait_records(broker.bootstrap, conf["kafka"]["topic_prefix"] + "._dlq", 6, procs=[producer, sink])
        reasons = {(r.header("bridge.dlq.error") or b"").decode() for r in dead}
        assert len(dead) == 6, reasons
        assert all("public.wide" in r and "1600" in r.replace(",", "") and "primary key" in r for r in reasons), reasons
        check_alive([producer, sink])
    finally:
        producer.terminate()
        sink.terminate()
        drop_slot(source_dsn, conf["source"]["slot"])


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_an_unreachable_target_is_logged_with_nothing_to_consume(broker: Broker, source_dsn: str, tmp_path: Path
                                                                 ) -> None:
    dead_target = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=2"
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=dead_target, bootstrap=broker.bootstrap)
    sink = BridgeProcess("sink", cfg, tmp_path).start()
    try:
        def said() -> str:
            text = sink.logfile.read_text(errors="replace") if sink.logfile.exists() else ""
            return text if "target unavailable" in text else ""

        text = wait_for(said, 30, "the sink to say the target is unavailable", [sink])
        assert "127.0.0.1" in text or "connection" in text.lower()
        assert sink.alive(), sink.log_tail()
    finally:
        sink.terminate()
