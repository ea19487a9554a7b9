"""The test helpers themselves, against a real PostgreSQL and real bridge processes: a wait that
returns too early or an exit that passes unnoticed would make every test built on them weaker."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.conftest import BROKER_KINDS, Broker, PgServer
from tests.pipeline import BridgeProcess, stopped_cleanly, wait_slot_active, write_config
from tests.support.waits import check_alive, wait_for

TANSU = ["tansu"] if "tansu" in BROKER_KINDS else BROKER_KINDS


def _config(tmp_path: Path, source_dsn: str, broker: Broker, **overrides: object) -> Path:
    return write_config(tmp_path, source_dsn=source_dsn, target_dsn=source_dsn, bootstrap=broker.bootstrap,
                        ack="kafka", **overrides)


def test_an_exit_nobody_asked_for_fails_with_the_log(tmp_path: Path) -> None:
    """`python -m bridge produce` with a config it refuses exits by itself (2): check_alive and
    wait_for fail naming it, with its log; after a kill by the test they do not."""
    bad = tmp_path / "bad.yaml"
    bad.write_text('{"surce": {}}')
    proc = BridgeProcess("produce", bad, tmp_path).start()
    assert proc.proc is not None
    proc.proc.wait(60)
    with pytest.raises(AssertionError, match=r"produce exited 2 without being asked to:\n.*surce"):
        check_alive([proc])
    with pytest.raises(AssertionError, match="produce exited 2"):
        wait_for(lambda: False, 30, "something", [proc])


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_a_kill_nobody_asked_for_fails_too(broker: Broker, source_dsn: str, tmp_path: Path) -> None:
    """A SIGKILL from elsewhere (the OOM killer, say) is no kill by the test."""
    proc = BridgeProcess("produce", _config(tmp_path, source_dsn, broker), tmp_path).start()
    assert proc.proc is not None
    os.killpg(proc.proc.pid, signal.SIGKILL)
    proc.proc.wait(30)
    with pytest.raises(AssertionError, match="produce exited -9 without being asked to"):
        check_alive([proc])


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_an_exit_0_nobody_asked_for_fails_too(broker: Broker, source_dsn: str, tmp_path: Path) -> None:
    """`pgbridge check` ends by itself with 0: for a process that should keep running that is a failure."""
    proc = BridgeProcess("check", _config(tmp_path, source_dsn, broker), tmp_path).start()
    assert proc.proc is not None
    assert proc.proc.wait(120) == 0, proc.log_tail()
    with pytest.raises(AssertionError, match="check exited 0 without being asked to"):
        check_alive([proc])


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_a_kill_or_terminate_by_the_test_is_no_failure(broker: Broker, source_dsn: str, tmp_path: Path) -> None:
    proc = BridgeProcess("produce", _config(tmp_path, source_dsn, broker), tmp_path).start()
    proc.kill()
    check_alive([proc])
    proc.start()
    assert proc.terminate() == 0, proc.log_tail()  # the handler was installed before SIGTERM
    check_alive([proc])


def test_wait_slot_active_waits_for_a_user_of_the_slot(pg: PgServer, source_dsn: str, tmp_path: Path) -> None:
    """A slot that exists but that no producer uses is not active (this returned at once)."""
    slot = f"idle_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
    try:
        for capture in ("stream", "sql"):
            with pytest.raises(AssertionError, match=f"slot {slot} in use"):
                wait_slot_active(source_dsn, slot, timeout=1.0, capture=capture)
    finally:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


@pytest.mark.parametrize("capture", ["stream", "sql"])
@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_wait_slot_active_sees_the_producer(broker: Broker, source_dsn: str, tmp_path: Path, capture: str) -> None:
    cfg = _config(tmp_path, source_dsn, broker, capture=capture)
    slot = json.loads(cfg.read_text())["source"]["slot"]
    producer = BridgeProcess("produce", cfg, tmp_path).start()
    try:
        with stopped_cleanly(producer):
            wait_slot_active(source_dsn, slot, producer)
    finally:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", (slot,))
