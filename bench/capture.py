"""Capture → Kafka: the real producer (`python -m bridge produce`, `ack: kafka`) reading a backlog.

    .venv/bin/python bench/capture.py [--rows 200000] [--mix insert] [--broker kafka|tansu]

Starts its own throwaway PostgreSQL and broker, creates a test_decoding slot, writes the workload,
measures the decoding limits (`pg_peek_count`, `pg_recvlogical`) on that backlog, then for each
capture mode (`stream`: the replication protocol; `sql`: `pg_logical_slot_peek_changes` batches)
runs the producer as a child process on a copy of the slot (same start point, so every run reads
the same changes) and times it from the process's start until every record is in the table's
topic (the sum of the partitions' end offsets reaches the expected count; polled every 0.1 s).

Reported per mode: rows/s from process start (`rate`, start-up included: imports, connections,
topic creation) and from the first record in the topic (`stream_rate`), the ratios to the limits of
the same run, and the producer's peak RSS (`VmHWM` of /proc/<pid>/status, read before it is
stopped), and its CPU time per change (`/proc/<pid>/stat`), for the whole run and from the first
record on. Targets (issue #15, in bench/run.py): ≥ 0.8x `pg_recvlogical`, ≤ 5 µs of CPU per change.

From bench/run.py: `capture_run(...)`, and the process helpers `BridgeProc`, `write_config`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.limits import create_slot, drop_slot, pg_peek_count, pg_recvlogical
from bench.target import MachineCpu
from bench.workload import MixCounts, create_orders, write_mix

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)

TARGET_RECVLOGICAL = 0.8  # capture rate / pg_recvlogical's on the same backlog (issue #15)
MODES = ("stream", "sql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(workdir: Path, *, source_dsn: str, bootstrap: str, slot: str, prefix: str,
                 target_dsn: str | None = None, capture: str = "stream", ack: str = "kafka",
                 group: str | None = None, partitions: int = 6, **sections: dict[str, Any]) -> Path:
    """A bridge config (JSON is YAML) for one run; `sections` are merged into the named sections."""
    cfg: dict[str, Any] = {
        "source": {"dsn": source_dsn, "slot": slot, "capture": capture, "tables": ["public.orders"],
                   "snapshot": "never", "heartbeat_interval_s": 10.0},
        "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": prefix, "partitions": partitions},
        "ack": ack,
        "metrics": {"port": free_port(), "host": "127.0.0.1"},
        "logging": {"format": "text", "level": "INFO"},
    }
    if target_dsn is not None:
        cfg["sink"] = {"dsn": target_dsn, "group_id": group or f"g_{prefix}"}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = workdir / f"bridge-{prefix}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def config_port(path: Path) -> int:
    return int(json.loads(path.read_text())["metrics"]["port"])


class BridgeProc:
    """`python -m bridge <command> --config F` as a child process (own session), output to a file."""

    def __init__(self, command: str, config: Path, workdir: Path, *, wrap: list[str] | None = None) -> None:
        self.command = command
        self.config = config
        self.logfile = workdir / f"{command}-{config.stem}.log"
        # BRIDGE_NATIVE passes through: `--native off` measures the Python reference path (#15)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("BRIDGE_") or k in ("BRIDGE_KAFKA_CLASSPATH_FILE", "BRIDGE_NATIVE")}
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen([*(wrap or [sys.executable]), "-m", "bridge", command, "--config", str(config)],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                         start_new_session=True)
        self.started = time.perf_counter()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss_mib(self) -> float | None:
        """VmHWM (peak resident set) of the process, in MiB; None once it has exited."""
        return self._status_mib("VmHWM:")

    def rss_mib(self) -> float | None:
        """VmRSS (resident set now) of the process, in MiB; None once it has exited."""
        return self._status_mib("VmRSS:")

    def _status_mib(self, key: str) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the process (all its threads) so far; None once it has exited."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.command} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the bridge's graceful stop), SIGKILL after `timeout`."""
        if not self.alive():
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class EndOffsets:
    """The sum of a topic's partitions' high watermarks (0 while the topic does not exist)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-watch-{uuid.uuid4().hex[:6]}",
                           "enable.auto.commit": False})
        self.parts: list[int] = []

    def total(self) -> int:
        if not self.parts:
            try:
                md = self.c.list_topics(self.topic, timeout=2)
            except KafkaException:
                return 0
            t = md.topics.get(self.topic)
            if t is None or t.error is not None or not t.partitions:
                return 0
            self.parts = sorted(t.partitions)
        n = 0
        for p in self.parts:
            try:
                _lo, hi = self.c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=2, cached=False)
            except KafkaException:
                return 0
            n += max(hi, 0)
        return n

    def close(self) -> None:
        self.c.close()


def slot_holder_cpu(dsn: str, slot: str) -> float | None:
    """CPU seconds so far of the server process holding `slot` (`active_pid`: the walsender in
    stream mode, the peeking backend in sql mode), None when no process holds it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    if row is None or row[0] is None:
        return None
    try:
        fields = Path(f"/proc/{int(row[0])}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def copy_slot(dsn: str, base: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (base, name))


def expected_records(counts: MixCounts, tombstones: bool = True) -> int:
    """Records the producer writes to the table's topic: one per change, plus a tombstone per delete."""
    return counts.changes + (counts.deletes if tombstones else 0)


def capture_run(source_dsn: str, bootstrap: str, workdir: Path, *, base_slot: str, counts: MixCounts,
                mode: str = "stream", timeout: float = 1800.0, prefix: str | None = None,
                wrap: list[str] | None = None, partitions: int = 6) -> dict[str, Any]:
    """Run the producer (`capture: mode`, `ack: kafka`) on a copy of `base_slot` until every record
    of the backlog is in its topic. Returns {"mode", "prefix", "records", "seconds", "rate",
    "stream_seconds", "stream_rate", "peak_rss_mib", "cpu_us_per_change" (the producer's CPU time, start-up
    included, per change), "cpu_share" (of one core over the run), "load"}; raises RuntimeError if the producer
    dies or times out. The topics (prefix `prefix`) are left for the sink benchmark.
    Also "cpu_us_per_change_streaming" and "cpu_share_streaming": the same from the first record
    in the topic on (start-up, imports and connections left out; "startup_cpu_s" is that part)."""
    prefix = prefix or f"bc{mode}{uuid.uuid4().hex[:6]}"
    slot = f"{base_slot}_{mode}_{uuid.uuid4().hex[:6]}"
    copy_slot(source_dsn, base_slot, slot)
    want = expected_records(counts)
    cfg = write_config(workdir, source_dsn=source_dsn, bootstrap=bootstrap, slot=slot, prefix=prefix,
                       capture=mode, ack="kafka", partitions=partitions)
    watch = EndOffsets(bootstrap, f"{prefix}.public.orders")
    machine = MachineCpu().start()
    proc = BridgeProc("produce", cfg, workdir, wrap=wrap)
    first: float | None = None
    first_records, first_cpu, first_server_cpu = 0, None, None
    try:
        deadline = time.monotonic() + timeout
        while True:
            n = watch.total()
            now = time.perf_counter()
            if n and first is None:
                first, first_records, first_cpu = now, n, proc.cpu_seconds()
                first_server_cpu = slot_holder_cpu(source_dsn, slot)
            if n >= want:
                break
            proc.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"capture {mode}: {n} of {want} records after {timeout:.0f}s\n{proc.log_tail()}")
            time.sleep(0.1)
        secs = now - proc.started
        rss = proc.peak_rss_mib()
        cpu = proc.cpu_seconds()
        server_cpu = slot_holder_cpu(source_dsn, slot)
        box = machine.stop()
        if n > want:
            log.warning("capture %s: %s records in the topic, expected %s", mode, n, want)
    finally:
        proc.stop()
        watch.close()
        drop_slot(source_dsn, slot)
    assert first is not None
    # CPU per change while records flowed: from the first record seen in the topic to the last,
    # over the changes written in between (records counted with tombstones, scaled to changes)
    streamed = counts.changes * (want - first_records) / want
    steady = (None if cpu is None or first_cpu is None or streamed <= 0
              else (cpu - first_cpu) * 1e6 / streamed)
    res = {"mode": mode, "prefix": prefix, "records": want, "changes": counts.changes, "seconds": secs,
           "rate": counts.changes / secs, "stream_seconds": now - first,
           "stream_rate": counts.changes / max(now - first, 1e-9), "peak_rss_mib": rss,
           "cpu_us_per_change": None if cpu is None else cpu * 1e6 / counts.changes,
           "cpu_share": None if cpu is None else cpu / secs,
           "cpu_us_per_change_streaming": steady,
           "cpu_share_streaming": None if cpu is None or first_cpu is None else (cpu - first_cpu) / max(now - first, 1e-9),
           "startup_cpu_s": first_cpu,
           # the server process holding the slot (stream: the walsender decoding it): its whole
           # life per change, and its share of a core from the first record on
           "walsender_cpu_us_per_change": None if server_cpu is None else server_cpu * 1e6 / counts.changes,
           "walsender_cpu_share_streaming": (None if server_cpu is None or first_server_cpu is None
                                             else (server_cpu - first_server_cpu) / max(now - first, 1e-9)),
           "machine_busy": box["busy"], "load": os.getloadavg()[0]}
    log.info("capture %s: %s changes in %.1fs (%.0f/s; %.0f/s from the first record), peak RSS %.0f MiB",
             mode, counts.changes, secs, res["rate"], res["stream_rate"], rss or 0)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--mix", default="insert", choices=["insert", "mixed", "big"])
    ap.add_argument("--broker", default="kafka", choices=["kafka", "tansu"])
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each limit (median)")
    ap.add_argument("--modes", default="stream,sql")
    ap.add_argument("--native", default="on", choices=["on", "off", "both"],
                    help="the producer's native core (BRIDGE_NATIVE), or both one after the other")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import tempfile

    from bridge.local.brokers import BROKERS, LocalBroker
    from bridge.local.postgres import LocalPostgres

    pg = LocalPostgres().start()
    broker: LocalBroker | None = None
    workdir = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    try:
        src = pg.create_database("src")
        create_orders(src)
        create_slot(src, "bench_capture")
        bootstrap = args.bootstrap
        if bootstrap is None:
            broker = BROKERS[args.broker]().start()
            bootstrap = broker.bootstrap
        counts = write_mix(src, args.mix, args.rows)
        peek = pg_peek_count(src, "bench_capture", repeat=args.repeat)
        recv = pg_recvlogical(src, "bench_capture", repeat=args.repeat, changes=counts.changes)
        print(f"\ncapture: mix={args.mix} changes={counts.changes:,} broker={args.broker} "
              f"pg_peek_count={peek:,.0f}/s pg_recvlogical={recv:,.0f}/s\n")
        print("| mode | native | rows/s (from start) | from first record | x pg_peek_count | x pg_recvlogical "
              "| producer CPU µs/change | peak RSS | target |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        natives = ["on", "off"] if args.native == "both" else [args.native]
        for mode in args.modes.split(","):
            for nat in natives:
                os.environ["BRIDGE_NATIVE"] = "1" if nat == "on" else "0"
                r = capture_run(src, bootstrap, workdir, base_slot="bench_capture", counts=counts, mode=mode)
                cpu = r["cpu_us_per_change"]
                print(f"| {mode} | {nat} | {r['rate']:,.0f} | {r['stream_rate']:,.0f} | {r['rate'] / peek:.2f} | "
                      f"{r['rate'] / recv:.2f} | {'' if cpu is None else f'{cpu:.1f}'} | "
                      f"{r['peak_rss_mib']:.0f} MiB | ≥ {TARGET_RECVLOGICAL}x pg_recvlogical: "
                      f"{r['rate'] / recv / TARGET_RECVLOGICAL:.0%} |",
                      flush=True)
        print(f"\nlogs: {workdir}")
    finally:
        if broker is not None:
            broker.destroy()
        pg.destroy()


if __name__ == "__main__":
    main()
