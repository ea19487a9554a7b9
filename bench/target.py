"""Watching a benchmark's target database and processes: when the target equals the source, when
the sink applied its first batch, and how much CPU who used meanwhile.

Shared by bench/run.py (sink and end-to-end stages) and bench/scaleout.py.
"""

from __future__ import annotations

import logging
import os
import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg

from bench.workload import COLUMNS, TABLE

log = logging.getLogger(__name__)

STATE_POSITIONS = "pgbridge_state.bridge_positions"
"""The sink's position table in the target (config `sink.state_schema`, default): its first row
is written in the transaction of the first applied batch."""


class Proc(Protocol):
    """What the watchers need of a bridge child process (`bench.capture.BridgeProc`)."""

    def check(self) -> None: ...

    def log_tail(self, n: int = 30) -> str: ...

    def cpu_seconds(self) -> float | None: ...


def source_state(dsn: str) -> tuple[int, int]:
    """(count, max id) of the workload's table."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*), coalesce(max(id), -1) FROM {TABLE}").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def digest(dsn: str) -> tuple[int, str]:
    """(count, md5 of every row's text in id order) of the workload's table."""
    cols = ", ".join(COLUMNS)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*), coalesce(md5(string_agg(r::text, E'\\n' ORDER BY id)), '')"
                           f" FROM (SELECT {cols} FROM {TABLE}) r").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def wait_target(source_dsn: str, target_dsn: str, procs: list[Any], timeout: float = 1800.0) -> float:
    """Wait until the target's orders equal the source's (static by now); returns the
    perf_counter time of the poll that first saw max(id) and count equal (confirmed by a digest).
    Raises RuntimeError when a process dies or on timeout."""
    want = source_state(source_dsn)
    want_digest: tuple[int, str] | None = None
    deadline = time.monotonic() + timeout
    conn = psycopg.connect(target_dsn, autocommit=True)
    try:
        while True:
            for p in procs:
                p.check()
            try:
                row = conn.execute(f"SELECT coalesce(max(id), -1) FROM {TABLE}").fetchone()
                if row is not None and int(row[0]) == want[1]:
                    cnt = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
                    if cnt is not None and int(cnt[0]) == want[0]:
                        t = time.perf_counter()
                        if want_digest is None:
                            want_digest = digest(source_dsn)
                        got = digest(target_dsn)
                        if got == want_digest:
                            return t
                        log.info("target count/max equal but rows differ; waiting")
            except psycopg.errors.UndefinedTable:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"target did not catch up in {timeout:.0f}s\n"
                                   + "\n".join(p.log_tail() for p in procs))
            time.sleep(0.1)
    finally:
        conn.close()


def applied_rows(port: int) -> float:
    """The sink's `bridge_sink_rows_applied_total`, summed over tables and ops (one scrape)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(m.group(1)) for m in
               re.finditer(r"^bridge_sink_rows_applied_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


@dataclass(frozen=True, slots=True)
class FirstApply:
    """The moment the first batch was seen committed in the target, and what had happened by then."""

    t: float  # perf_counter
    applied: float  # rows applied by then, summed over the sinks (their metrics)
    cpu: tuple[float | None, ...]  # each sink's CPU seconds by then


def wait_first_apply(target_dsn: str, procs: list[Any], ports: list[int], timeout: float = 600.0,
                     interval: float = 0.02) -> FirstApply:
    """Poll the target's position table every `interval` s until it holds a row (the sink commits
    its first batch with it), then read each sink's applied-rows counter and CPU time. Raises
    RuntimeError when a process dies or on timeout."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        q = f"SELECT EXISTS (SELECT 1 FROM {STATE_POSITIONS})".encode()
        while True:
            for p in procs:
                p.check()
            try:
                row = conn.execute(q).fetchone()
                if row is not None and row[0]:
                    break
            except psycopg.errors.UndefinedTable:
                pass
            except psycopg.errors.InvalidSchemaName:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no batch applied in {timeout:.0f}s\n" + "\n".join(p.log_tail() for p in procs))
            time.sleep(interval)
    t = time.perf_counter()
    cpu = tuple(p.cpu_seconds() for p in procs)
    return FirstApply(t, sum(applied_rows(port) for port in ports), cpu)


def pid_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all threads), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_pids(dsn: str, database: str) -> list[int]:
    """PostgreSQL backends connected to `database` (other than the one asking)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,))]


class MachineCpu:
    """Busy share of all the machine's cores between `start()` and `stop()` (/proc/stat), and the
    load average: the machine is shared, so a saturated box is part of the explanation."""

    def __init__(self) -> None:
        self._t0: tuple[int, int] | None = None

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    def start(self) -> MachineCpu:
        self._t0 = self._read()
        return self

    def stop(self) -> dict[str, float]:
        """{"busy": share of all cores busy, "busy_cores": the same in cores, "load": 1-min load}."""
        assert self._t0 is not None
        busy1, total1 = self._read()
        busy = (busy1 - self._t0[0]) / max(total1 - self._t0[1], 1)
        return {"busy": busy, "busy_cores": busy * (os.cpu_count() or 1), "load": round(os.getloadavg()[0], 2)}
