"""A row larger than the broker's maximum message size.

Policy (README, "Oversized records"): the producer stops with exit code 1 and one line naming
table, key, record size, the limit and the settings to raise; the slot is never confirmed past
the change, so after the limits are raised a restart produces it (nothing lost). It used to exit
with a raw `KafkaException` traceback on every restart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import psycopg
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from bridge.codec.names import topic_name
from tests.conftest import Broker
from tests.pipeline import BridgeProcess, wait_slot_active, write_config
from tests.support.topics import decoded
from tests.support.waits import wait_for

BIG = 1_500_000  # characters of incompressible text: over librdkafka's and Kafka's 1 MB defaults


def _exit_code(proc: BridgeProcess, timeout: float = 60.0) -> int:
    assert proc.proc is not None
    try:
        return proc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{proc.name} did not stop:\n{proc.log_tail()}") from None


def _still_in_slot(dsn: str, slot: str) -> bool:
    """Whether the slot still delivers the oversized insert: it has not been confirmed past its
    transaction. (An LSN compare would be too strict: the slot may be confirmed to a keepalive's
    position between the insert record and its commit record, which re-delivers the transaction.)
    Peeking is non-destructive; the producer has stopped, so the slot is free."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_logical_slot_peek_changes(%s, NULL, NULL)"
                           " WHERE data LIKE 'table public.docs: INSERT: id[integer]:2 %%'", (slot,)).fetchone()
    return row == (1,)


def test_oversized_record_stops_with_an_actionable_error(broker: Broker, source_dsn: str, tmp_path: Path) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id int PRIMARY KEY, body text)")
        conn.execute("ALTER TABLE public.docs ALTER body SET STORAGE EXTERNAL")  # no TOAST compression
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=source_dsn, bootstrap=broker.bootstrap,
                       ack="kafka", prefix=prefix)
    slot_name = json.loads(cfg.read_text())["source"]["slot"]
    topic = topic_name(prefix, "public", "docs")
    producer = BridgeProcess("produce", cfg, tmp_path).start()
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        wait_slot_active(source_dsn, slot_name, producer)
        conn.execute("INSERT INTO public.docs VALUES (1, 'small')")
        wait_for(lambda: any(r.value and r.value["after"]["id"] == 1 for r in decoded(broker.bootstrap, prefix, topic)),
                 60, "the small row", [producer])
        big = os.urandom(BIG // 2).hex()
        conn.execute("INSERT INTO public.docs VALUES (2, %s)", (big,))

    for attempt in range(2):  # the first run, then a restart: the same clear error, not a loop of tracebacks
        code = _exit_code(producer)
        log = producer.log_tail(200)
        assert code == 1, log
        assert "Traceback" not in log, log
        lines = [ln for ln in log.splitlines() if "over the producer's limit" in ln]
        assert lines, log
        line = lines[-1]
        for part in ("public.docs", "{'id': 2}", "limit=1000000", 'kafka.config."message.max.bytes"',
                     "max.message.bytes"):
            assert part in line, (part, line)
        size = re.search(r"size=(\d+)", line)
        assert size is not None and BIG < int(size.group(1)) < BIG + 1000, line
        assert _still_in_slot(source_dsn, slot_name), "slot confirmed past the oversized change"
        if attempt == 0:
            producer.logfile.unlink()
            producer.start()

    # The remedy the message names: raise both limits, restart; the row arrives. (Apache Kafka
    # first: with only the producer's limit raised, the broker refuses the record, and the
    # delivery report stops the producer the same way.)
    raised = write_config(tmp_path, source_dsn=source_dsn, target_dsn=source_dsn, bootstrap=broker.bootstrap,
                          ack="kafka", prefix=prefix, slot=slot_name,
                          kafka__config={"message.max.bytes": 8 << 20})
    if broker.kind == "kafka":
        producer = BridgeProcess("produce", raised, tmp_path, name="broker-limit").start()
        assert _exit_code(producer) == 1, producer.log_tail()
        log = producer.log_tail(200)
        assert "Traceback" not in log, log
        lines = [ln for ln in log.splitlines() if "over the broker's limit" in ln]
        assert lines and "public.docs" in lines[-1] and "max.message.bytes" in lines[-1], log
        assert _still_in_slot(source_dsn, slot_name), "slot confirmed past the oversized change"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
            ConfigEntry("max.message.bytes", str(8 << 20), incremental_operation=AlterConfigOpType.SET)])
        for fut in admin.incremental_alter_configs([res]).values():
            fut.result(30)
    producer = BridgeProcess("produce", raised, tmp_path, name="raised").start()
    try:
        def big_row() -> bool:
            return any(r.value and r.value["after"]["id"] == 2 and len(r.value["after"]["body"]) == BIG // 2 * 2
                       for r in decoded(broker.bootstrap, prefix, topic))

        wait_for(big_row, 90, "the oversized row after the limits were raised", [producer])
    finally:
        producer.terminate()
