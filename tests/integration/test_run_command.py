"""`pgbridge run`: producer and sink as two supervised children; SIGTERM stops both cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Broker
from tests.pipeline import REPO, wait_converged, wait_slot_active, write_config


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_run_supervises_and_stops_both(broker: Broker, source_dsn: str, target_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.items (id int PRIMARY KEY, name text)")
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap)
    slot = json.loads(cfg.read_text())["source"]["slot"]
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "run", "--config", str(cfg), "--log-format", "text"],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        wait_slot_active(source_dsn, slot)
        kids = _children(proc.pid)
        assert len(kids) == 2, f"expected a producer and a sink child, got {kids}"
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.items SELECT g, 'n' || g FROM generate_series(1, 500) g")
            conn.execute("DELETE FROM public.items WHERE id % 10 = 0")
        wait_converged(source_dsn, target_dsn, {"public.items": (["id", "name"], "id")}, timeout=90)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, (tmp_path / "run.log").read_text()[-3000:]
        # `run` waits for its children before it exits: none may be left now
        for pid in kids:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), \
                f"child {pid} outlived pgbridge run"
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
