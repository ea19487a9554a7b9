"""Helpers for end-to-end tests: configs, bridge processes, and source/target comparison."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bridge.local import free_port
from tests.support.topics import Schemas, data_records
from tests.support.waits import logs_of, wait_for

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
        self.exit_requested = False  # the test killed or terminated the running process

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
        self.exit_requested = False
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def unrequested_exit(self) -> int | None:
        """The exit code when the process ended without `kill`/`terminate`, else None."""
        if self.proc is None or self.exit_requested:
            return None
        return self.proc.poll()

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind. A process that already exited by itself stays an
        unrequested exit (`check_alive` reports it)."""
        if self.alive():
            assert self.proc is not None
            self.exit_requested = True
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.kills += 1

    def handles_sigterm(self) -> bool:
        """Whether the process has installed its SIGTERM handler (bit 15 of SigCgt in
        /proc/<pid>/status); before that, SIGTERM kills it (-15) without any cleanup."""
        assert self.proc is not None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return False
        caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
        return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code (that of an earlier exit when it is not running).
        Sends the signal once the process handles it (`handles_sigterm`), so a process started a
        moment ago is stopped the way it would be in production, not killed by the default action."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            deadline = time.monotonic() + 30
            while not self.handles_sigterm() and self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.proc.poll() is None:
            self.exit_requested = True
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


@contextmanager
def stopped_cleanly(*procs: BridgeProcess) -> Iterator[None]:
    """SIGTERM `procs` when the block ends. After a block that passed, each must exit 0 (the
    assertion names them, with their logs). After a block that failed, its failure propagates
    unchanged, with the exit codes as a note: a second assertion never replaces the first."""
    try:
        yield
    except BaseException as exc:
        codes = {p.name: p.terminate() for p in procs}
        exc.add_note(f"exit codes on SIGTERM: {codes}")
        raise
    codes = {p.name: p.terminate() for p in procs}
    bad = {n: c for n, c in codes.items() if c != 0}
    assert not bad, f"unclean exits {bad}:\n{logs_of(procs)}"


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
    """Wait until every table (`name -> (columns, order_by)`) is equal in source and target.

    Fails when one of `procs` exits unasked, or after `timeout` with `divergence` of the tables
    that still differ (and the processes' logs)."""
    last: dict[str, Any] = {}

    def equal() -> bool:
        last.clear()
        for name, (cols, order) in tables.items():
            try:
                s = table_digest(source_dsn, name, cols, order)
                t = table_digest(target_dsn, name, cols, order)
            except psycopg.Error as exc:
                last[name] = str(exc).strip()
                continue
            if s != t:
                last[name] = {"source (rows, md5)": s, "target": t}
        return not last

    try:
        wait_for(equal, timeout, "the target to converge", procs, interval=0.5)
    except AssertionError as exc:
        if "timed out" not in str(exc):
            raise
        report = divergence({n: tables[n] for n in last if not isinstance(last[n], str)}, source_dsn, target_dsn,
                            procs[0].config if procs else None)
        raise AssertionError(f"target did not converge in {timeout:g} s: {last}\n{report}\n{logs_of(procs)}") from None


def divergence(tables: dict[str, tuple[Sequence[str], str]], source_dsn: str, target_dsn: str,
               config: Path | None = None, sample: int = 5) -> str:
    """For a failure message: per table, the keys (`order_by` columns) missing in the target,
    extra in it, or different, with a sample of each. With the bridge's `config`, also where the
    sampled keys' records are in Kafka (topic/partition@offset, position), the sink's applied
    position and its group's committed offset for those partitions. Never raises."""
    out: list[str] = []
    wanted: dict[str, set[tuple[Any, ...]]] = {}
    for name, (cols, order) in tables.items():
        try:
            src, dst = _keyed_rows(source_dsn, name, cols, order), _keyed_rows(target_dsn, name, cols, order)
        except psycopg.Error as exc:
            out.append(f"{name}: cannot compare ({str(exc).strip()})")
            continue
        missing = sorted(k for k in src if k not in dst)
        extra = sorted(k for k in dst if k not in src)
        different = sorted(k for k in src if k in dst and src[k] != dst[k])
        out.append(f"{name} by ({order}): {len(src)} rows in source, {len(dst)} in target; "
                   f"{len(missing)} missing in target {missing[:sample]}, {len(extra)} only in target "
                   f"{extra[:sample]}, {len(different)} different {different[:sample]}")
        for k in different[:sample]:
            out.append(f"  {k}: source {src[k]}\n  {' ' * len(str(k))}  target {dst[k]}")
        wanted[name] = set(missing[:sample] + different[:sample] + extra[:sample])
    if config is not None and any(wanted.values()):
        try:
            out.extend(_records_of(wanted, {n: o for n, (_c, o) in tables.items()}, config, target_dsn))
        except Exception as exc:  # a diagnostic must not hide the failure it explains
            out.append(f"(could not look the keys up in Kafka: {exc!r})")
    return "\n".join(out)


def _keyed_rows(dsn: str, table: str, columns: Sequence[str], order_by: str) -> dict[tuple[Any, ...], str]:
    """`order_by` columns -> the row's `columns` as text."""
    with psycopg.connect(dsn) as conn:
        return {tuple(r[:-1]): r[-1] for r in conn.execute(
            f"SELECT {order_by}, ROW({', '.join(columns)})::text FROM {table}")}


def _records_of(wanted: dict[str, set[tuple[Any, ...]]], order_by: dict[str, str], config: Path,
                target_dsn: str) -> list[str]:
    """Where the records of the `wanted` keys are in Kafka, and how far the sink got there."""
    conf = json.loads(config.read_text())
    bootstrap, prefix = conf["kafka"]["bootstrap_servers"], conf["kafka"]["topic_prefix"]
    schema = conf.get("sink", {}).get("state_schema", "pgbridge_state")
    schemas = Schemas(bootstrap, prefix)
    schemas.load()
    records = data_records(bootstrap, prefix, timeout=120)
    table_of: dict[str, str] = {}  # topic -> "schema.table" from the envelopes
    for r in records:
        if r.value is not None and r.topic not in table_of:
            src = schemas.decode(r.value)["source"]
            table_of[r.topic] = f"{src['schema']}.{src['table']}"
    key_cols = {n: [c.strip().strip('"') for c in o.split(",")] for n, o in order_by.items()}
    plain = {n.replace('"', ""): n for n in wanted}
    found: dict[tuple[str, tuple[Any, ...]], list[str]] = {}
    partitions: set[tuple[str, int]] = set()
    for r in records:
        name = plain.get(table_of.get(r.topic, ""))
        if name is None or r.key is None:
            continue
        key_rec = schemas.decode(r.key)
        if not isinstance(key_rec, dict):
            continue
        key = tuple(key_rec.get(c) for c in key_cols[name])
        if key in wanted[name]:
            op = "tombstone" if r.value is None else schemas.decode(r.value)["op"]
            found.setdefault((name, key), []).append(f"{r.topic}/{r.partition}@{r.offset} {op} at {r.position}")
            partitions.add((r.topic, r.partition))
    out = [f"records in Kafka ({len(records)} read from the data topics of {prefix}):"]
    for name, keys in wanted.items():
        for key in sorted(keys):
            recs = found.get((name, key), [])
            out.append(f"  {name} {key}: " + ("; ".join(recs[-4:]) if recs else "no record in Kafka"))
    applied: dict[tuple[str, int], str] = {}
    try:
        with psycopg.connect(target_dsn) as conn:
            for topic, part, lsn, seq in conn.execute(
                    f"SELECT topic, partition, commit_lsn::text, seq FROM {schema}.bridge_positions"):
                applied[(topic, part)] = f"{lsn}#{seq}"
    except psycopg.Error as exc:
        out.append(f"  (no applied positions: {str(exc).strip()})")
    committed = _committed(bootstrap, conf["sink"]["group_id"], sorted(partitions))
    for tp in sorted(partitions):
        out.append(f"  {tp[0]}/{tp[1]}: sink applied up to {applied.get(tp)}, group committed offset "
                   f"{committed.get(tp)}")
    return out


def _committed(bootstrap: str, group: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets (read without joining the group)."""
    from confluent_kafka import Consumer, TopicPartition

    if not partitions:
        return {}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return {(tp.topic, tp.partition): tp.offset
                for tp in c.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)}
    finally:
        c.close()


def slot_confirmed(dsn: str, slot: str) -> int | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
                           "WHERE slot_name = %s", (slot,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def wait_slot_created(dsn: str, slot: str, proc: BridgeProcess | None = None, timeout: float = 60.0) -> None:
    """Wait until the slot exists: changes committed from then on are captured. With an initial
    snapshot this is the moment to write concurrently with it (the slot is used, and active, only
    once the snapshot is read: use `wait_slot_active` for that)."""
    wait_for(lambda: slot_confirmed(dsn, slot) is not None, timeout, f"slot {slot} created",
             [proc] if proc else [], interval=0.1)


def wait_slot_active(dsn: str, slot: str, proc: BridgeProcess | None = None, timeout: float = 60.0,
                     capture: str | None = None) -> None:
    """Wait until the producer uses its slot: with `capture: stream`, the slot is active with
    a walsender (`active` and `active_pid`); with `capture: sql`, whose slot is active only during a
    peek, a session is peeking, or the producer holds its slot lock (taken at start, for its life). `capture`
    defaults to the one in `proc`'s config, else stream. Fails when `proc` exits."""
    if capture is None:
        capture = json.loads(proc.config.read_text())["source"].get("capture", "stream") if proc else "stream"
    state: list[Any] = []

    def used() -> bool:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = %s",
                               (slot,)).fetchone()
            state[:] = [row]
            if row is None:
                return False
            if capture != "sql":
                return bool(row[0]) and row[1] is not None
            # A peek in progress is seen only while it runs (an idle session shows its last
            # statement, the ROLLBACK after the peek): so also the producer's slot lock, which a
            # `capture: sql` producer holds from start to stop (bridge.source.slot_lock).
            peeked = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND query LIKE '%%pg_logical_slot_peek_changes%%'").fetchone()
            locked = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                "AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)",
                (f"pgbridge.slot.{slot}",)).fetchone()
            return bool(peeked and peeked[0]) or bool(locked and locked[0])

    wait_for(used, timeout, f"slot {slot} in use ({capture} capture)", [proc] if proc else [], interval=0.1,
             last=lambda: f"(active, active_pid) = {state[0] if state else None}")
