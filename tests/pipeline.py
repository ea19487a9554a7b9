"""Helpers for end-to-end tests: configs, bridge processes, and source/target comparison."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from bridge.local import free_port

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp: Path, *, source_dsn: str, target_dsn: str, bootstrap: str, capture: str = "stream",
                 ack: str = "sink", prefix: str | None = None, slot: str | None = None,
                 **overrides: Any) -> Path:
    """A bridge.yaml (as JSON, which is YAML) for one test; `overrides` are `section__key=value`."""
    tag = uuid.uuid4().hex[:8]
    cfg: dict[str, Any] = {
        "source": {"dsn": source_dsn, "slot": slot or f"s_{tag}", "capture": capture, "tables": ["public.*"],
                   "snapshot": "never", "heartbeat_interval_s": 1.0},
        "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": prefix or f"b{tag}", "partitions": 3},
        "sink": {"dsn": target_dsn, "group_id": f"g_{tag}", "batch_max_rows": 5000, "batch_max_ms": 100},
        "ack": ack,
        "metrics": {"port": free_port(), "host": "127.0.0.1"},
    }
    for k, v in overrides.items():
        section, _, key = k.partition("__")
        cfg.setdefault(section, {})[key] = v
    path = tmp / f"bridge-{tag}.yaml"
    path.write_text(json.dumps(cfg, indent=2))
    return path


class BridgeProcess:
    """`python -m bridge <command> --config F` as a child process whose output goes to a file."""

    def __init__(self, command: str, config: Path, log_dir: Path, env: dict[str, str] | None = None,
                 name: str | None = None) -> None:
        self.command = command
        self.name = name or command
        self.config = config
        self.log_dir = log_dir
        self.env = {k: v for k, v in os.environ.items() if k != "BRIDGE_METRICS__PORT"}
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.started_at = 0.0

    @property
    def logfile(self) -> Path:
        return self.log_dir / f"{self.name}-{self.config.stem}.log"

    def start(self, extra_env: dict[str, str] | None = None) -> BridgeProcess:
        log = open(self.logfile, "ab")
        env = {"BRIDGE_METRICS__PORT": str(free_port()), **self.env, **(extra_env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", self.command, "--config", str(self.config),
                                      "--log-format", "text"], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=REPO, env=env, start_new_session=True)
        log.close()
        self.starts += 1
        self.started_at = time.monotonic()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.kills += 1

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait. A process started a moment ago first gets 2 s to reach `main()`:
        a signal that arrives before the interpreter has installed any handler kills it (-15)."""
        if self.proc is None:
            return 0
        time.sleep(max(0.0, self.started_at + 2.0 - time.monotonic()))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def table_digest(dsn: str, table: str, columns: Sequence[str], order_by: str) -> tuple[int, str]:
    """(row count, md5 of all rows' text) for `columns` of `table`, ordered by `order_by`."""
    cols = ", ".join(columns)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT count(*), coalesce(md5(string_agg(r::text, E'\\n' ORDER BY {order_by})), '') "
            f"FROM (SELECT {cols} FROM {table}) r").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def table_rows(dsn: str, table: str, columns: Sequence[str], order_by: str) -> list[tuple[Any, ...]]:
    cols = ", ".join(columns)
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(f"SELECT {cols} FROM {table} ORDER BY {order_by}").fetchall())


def wait_converged(source_dsn: str, target_dsn: str, tables: dict[str, tuple[Sequence[str], str]],
                   timeout: float = 120.0, procs: Sequence[BridgeProcess] = ()) -> None:
    """Wait until every table (`name -> (columns, order_by)`) is equal in source and target."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while True:
        diffs = {}
        for name, (cols, order) in tables.items():
            try:
                s = table_digest(source_dsn, name, cols, order)
                t = table_digest(target_dsn, name, cols, order)
            except psycopg.Error as exc:
                diffs[name] = str(exc).strip()
                continue
            if s != t:
                diffs[name] = (s, t)
        if not diffs:
            return
        last = diffs
        check_alive(procs)
        if time.monotonic() > deadline:
            raise AssertionError(f"target did not converge: {last}\n{logs_of(procs)}")
        time.sleep(0.5)


def check_alive(procs: Sequence[BridgeProcess]) -> None:
    """Fail with its log when a process exited by itself (0 and a SIGKILL by the test are expected)."""
    for p in procs:
        if p.proc is not None and p.proc.poll() is not None and p.proc.returncode not in (0, -9):
            raise AssertionError(f"{p.name} exited {p.proc.returncode}:\n{p.log_tail()}")


def logs_of(procs: Sequence[BridgeProcess]) -> str:
    return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in procs)


def slot_confirmed(dsn: str, slot: str) -> int | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
                           "WHERE slot_name = %s", (slot,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def wait_slot_active(dsn: str, slot: str, proc: BridgeProcess | None = None, timeout: float = 60.0) -> None:
    """Wait until the producer holds its slot (created and streaming or peeking)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if row is not None:
            return
        if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"{proc.name} exited {proc.proc.returncode}:\n{proc.log_tail()}")
        time.sleep(0.2)
    raise AssertionError(f"slot {slot} never appeared")
