"""A slot whose WAL was removed (`wal_status = 'lost'`, after `max_slot_wal_keep_size`).

`pgbridge status --json` used to exit 0 with no errors for it; it must exit 1 and report the
error in its JSON. `pgbridge check` must fail too (exit 1, naming wal_status 'lost'). The slot is
made lost for real, on a cluster of this test's own with `max_slot_wal_keep_size = 1MB`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bridge.local.postgres import LocalPostgres
from tests.conftest import Broker
from tests.pipeline import REPO, write_config

SLOT = "lost_slot"


@pytest.fixture
def small_wal_cluster() -> Iterator[LocalPostgres]:
    cluster = LocalPostgres()
    cluster.init()
    with open(cluster.datadir / "postgresql.conf", "a") as conf:
        conf.write("max_slot_wal_keep_size = 1MB\nmin_wal_size = 32MB\nmax_wal_size = 64MB\n")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


def _lose_slot(dsn: str) -> None:
    """Create the slot, then write and switch WAL segments and checkpoint until it is lost."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (SLOT,))
        conn.execute("CREATE TABLE junk (x text)")
        deadline = time.monotonic() + 60
        while True:
            for _ in range(3):
                conn.execute("INSERT INTO junk SELECT repeat('x', 100) FROM generate_series(1, 1000)")
                conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchone()
            if row is not None and row[0] == "lost":
                return
            assert time.monotonic() < deadline, f"slot not lost: {row}"


def _pgbridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_status_and_check_fail_for_a_lost_slot(small_wal_cluster: LocalPostgres, broker: Broker,
                                               tmp_path: Path) -> None:
    dsn = small_wal_cluster.create_database("src")
    cfg = write_config(tmp_path, source_dsn=dsn, target_dsn=dsn, bootstrap=broker.bootstrap, slot=SLOT)
    _lose_slot(dsn)

    res = _pgbridge("status", "--config", str(cfg), "--json")
    out = json.loads(res.stdout)
    assert out["slot"]["wal_status"] == "lost", out
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert any("wal_status 'lost'" in e for e in out["errors"]), out["errors"]

    res = _pgbridge("status", "--config", str(cfg))
    assert res.returncode == 1 and "wal_status 'lost'" in res.stdout, res.stdout

    res = _pgbridge("check", "--config", str(cfg))
    assert res.returncode == 1, res.stdout + res.stderr
    line = next((ln for ln in res.stdout.splitlines() if "slot_wal_status" in ln), "")
    assert line.startswith("FAIL") and "lost" in line, res.stdout
