"""Sink scale-out (issue #16 item 5): N sink processes in one consumer group against one sink, on
the same backlog of topics, each run into a fresh target database.

    .venv/bin/python bench/scaleout.py [--rows 200000] [--mix insert|mixed] [--sinks 1,2]
                                       [--partitions 6] [--broker kafka|tansu]

Standalone, it starts its own throwaway PostgreSQL and broker (Apache Kafka by default: set
BRIDGE_KAFKA_CLASSPATH_FILE, as `make bench` does), writes the workload after creating a slot,
captures the backlog into topics of `--partitions` partitions with the real producer
(`bench/capture.py`, `stream`), then runs the sinks. From bench/run.py, `scaleout_run` reuses the
topics the capture stage wrote.

For each N: N `python -m bridge sink` children are started together (one config each, the same
`group_id`, their own metrics port) on topics that already hold the whole backlog; the group
spreads the partitions over them (range assignment). Measured:
- `rate_from_start`: changes / (first process start → target equal to the source: count, max id
  and an md5 of every row, as the sink stage);
- `rate_from_first_apply`: the changes applied after the target's position table got its first
  row (the sinks' `bridge_sink_rows_applied_total` read then) / the time from then to done;
- `rate_every_member` (N > 1): the same from the moment every member has applied a batch (its
  counter polled every 50 ms): the group's joins and rebalances are over, the steady rate;
- per process: rows it applied (its counter), CPU seconds and µs per row applied (`/proc`), its
  share of a core over the run, peak RSS;
- beside them, in the same window: the CPU of the target database's PostgreSQL backends (the
  sinks' connections, read just before stopping), of the broker process, and the machine's busy
  share of all its cores (`/proc/stat`; the machine is shared) and load average.

`walsenders_run` (standalone, and from bench/run.py on the insert mix) measures the producer's
side of scaling: 1 and then 2 `pg_recvlogical` processes at once, each on its own copy of the
slot (the same backlog), to show what several slots cost the server with test_decoding.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capture import BridgeProc, config_port, write_config
from bench.target import (
    MachineCpu,
    applied_rows,
    backend_pids,
    pid_cpu_seconds,
    wait_first_apply,
    wait_target,
)

log = logging.getLogger(__name__)

DEFAULT_SINKS = (1, 2)


def wait_every_member(procs: list[BridgeProc], ports: list[int], changes: int, interval: float = 0.05,
                      stall: float = 2.0) -> tuple[float, float] | None:
    """Poll the sinks' applied-rows counters until each has applied something; returns
    (perf_counter time, rows applied by all then), or None when the counters stop moving first
    (the backlog was done before every member got a share)."""
    last, moved = -1.0, time.monotonic()
    while True:
        for p in procs:
            p.check()
        counts = [applied_rows(port) for port in ports]
        if all(c > 0 for c in counts):
            return time.perf_counter(), sum(counts)
        total = sum(counts)
        if total != last:
            last, moved = total, time.monotonic()
        elif time.monotonic() - moved > stall or total >= changes:
            return None
        time.sleep(interval)


def sinks_run(source_dsn: str, target_dsn: str, bootstrap: str, workdir: Path, *, prefix: str, changes: int,
              sinks: int, broker_pid: int | None = None) -> dict[str, Any]:
    """`sinks` sink processes in one new consumer group consuming topics `prefix.*` (already
    written) into `target_dsn` (fresh) until it equals the source. Returns the measurements the
    module docstring lists; raises RuntimeError when a sink dies or the target does not catch up."""
    group = f"gso_{uuid.uuid4().hex[:6]}"
    cfgs = [write_config(workdir, source_dsn=source_dsn, bootstrap=bootstrap, slot="unused", prefix=prefix,
                         target_dsn=target_dsn, ack="kafka", group=group) for _ in range(sinks)]
    ports = [config_port(c) for c in cfgs]
    broker_cpu0 = pid_cpu_seconds(broker_pid) if broker_pid else None
    machine = MachineCpu().start()
    procs = [BridgeProc("sink", c, workdir) for c in cfgs]
    try:
        first = wait_first_apply(target_dsn, procs, ports)
        every = wait_every_member(procs, ports, changes) if sinks > 1 else (first.t, first.applied)
        t_done = wait_target(source_dsn, target_dsn, procs)
        cpu = [p.cpu_seconds() for p in procs]
        applied = [applied_rows(port) for port in ports]
        rss = [p.peak_rss_mib() for p in procs]
        dbname = conninfo_to_dict(target_dsn).get("dbname")
        backends = backend_pids(target_dsn, str(dbname)) if dbname else []
        backend_cpu = sum(c for c in (pid_cpu_seconds(pid) for pid in backends) if c is not None)
        broker_cpu = (pid_cpu_seconds(broker_pid) or 0.0) - broker_cpu0 if broker_pid and broker_cpu0 else None
        box = machine.stop()
    finally:
        for p in procs:
            p.stop()
    t_start = min(p.started for p in procs)
    secs = t_done - t_start
    after_first = t_done - first.t
    per: list[dict[str, Any]] = []
    for i in range(sinks):
        c = cpu[i]
        per.append({"applied_rows": applied[i], "cpu_s": c, "peak_rss_mib": rss[i],
                    "cpu_us_per_row": None if c is None or not applied[i] else c * 1e6 / applied[i],
                    "cpu_share": None if c is None else c / (t_done - procs[i].started),
                    "cpu_share_after_first_apply": (None if c is None or first.cpu[i] is None
                                                    else (c - first.cpu[i]) / max(after_first, 1e-9))})
    res: dict[str, Any] = {
        "sinks": sinks, "changes": changes, "seconds": secs, "rate_from_start": changes / secs,
        "first_apply_after_s": first.t - t_start, "applied_at_first_apply": first.applied,
        "seconds_after_first_apply": after_first,
        "rate_from_first_apply": (changes - first.applied) / max(after_first, 1e-9),
        # once every member applied a batch (the group's rebalances over): the steady rate
        "every_member_after_s": None if every is None else every[0] - t_start,
        "applied_when_every_member": None if every is None else every[1],
        "rate_every_member": (None if every is None or every[1] >= changes
                              else (changes - every[1]) / max(t_done - every[0], 1e-9)),
        "processes": per, "sink_cpu_s": sum(c or 0.0 for c in cpu),
        "target_backends": len(backends), "target_backend_cpu_s": backend_cpu,
        "target_backend_cpu_share": backend_cpu / max(secs, 1e-9),
        "broker_cpu_s": broker_cpu, "broker_cpu_share": None if broker_cpu is None else broker_cpu / max(secs, 1e-9),
        "machine_busy": box["busy"], "machine_busy_cores": box["busy_cores"], "load": box["load"],
    }
    log.info("scale-out, %s sink(s): %.0f/s from start, %.0f/s from first apply (%.1fs), sink CPU %s",
             sinks, res["rate_from_start"], res["rate_from_first_apply"], secs,
             [f"{p['cpu_s']:.1f}s" for p in per if p["cpu_s"] is not None])
    return res


def walsenders_run(dsn: str, base_slot: str, changes: int, counts: tuple[int, ...] = (1, 2), *,
                   endpos: str | None = None) -> dict[str, Any]:
    """What splitting the capture over several slots does to the server: for each n in `counts`,
    n `pg_recvlogical` processes (test_decoding, the options the producer uses, to /dev/null)
    started together, each on its own copy of `base_slot` (the same backlog), up to `endpos` (the
    WAL end right after the workload was written: WAL of other databases written later, e.g. by
    the sink stages, would be read too), or the current WAL end when not given. With test_decoding there is no server-side table filter, so each slot's
    walsender decodes and prints every change of the database whatever tables its producer keeps.
    Returns {n: {"seconds" (slowest), "each_rate" (changes/s of the slowest), "decoded_rate" (n x
    changes / seconds: changes decoded by all walsenders together), "walsender_cpu_s"}}."""
    import subprocess

    import psycopg

    from bench.limits import PEEK_OPTIONS, drop_slot, pg_bindir

    exe = str(pg_bindir() / "pg_recvlogical")
    out: dict[str, Any] = {}
    for n in counts:
        slots = [f"{base_slot}_ws{n}_{i}_{uuid.uuid4().hex[:4]}" for i in range(n)]
        with psycopg.connect(dsn, autocommit=True) as conn:
            for sl in slots:
                conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (base_slot, sl))
            row = (endpos,) if endpos else conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        opts: list[str] = []
        for k, v in zip(PEEK_OPTIONS[::2], PEEK_OPTIONS[1::2], strict=True):
            opts += ["-o", f"{k}={v}"]
        seen: dict[str, float] = {}  # slot -> its walsender's CPU seconds, last sampled
        try:
            t0 = time.perf_counter()
            procs = [subprocess.Popen([exe, "-d", dsn, "--slot", sl, "--start", "--endpos", str(row[0]), "--no-loop",
                                       "-f", "/dev/null", "-F", "0", "-s", "1", *opts],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for sl in slots]
            # the walsenders' CPU, sampled from /proc while they run (each exits with its client);
            # one connection finds their pids (a connection per poll would fork a backend each time)
            pids: dict[str, int] = {}
            with psycopg.connect(dsn, autocommit=True) as conn:
                while any(p.poll() is None for p in procs):
                    if len(pids) < n:
                        for name, pid in conn.execute(
                                "SELECT slot_name, active_pid FROM pg_replication_slots"
                                " WHERE slot_name = ANY(%s) AND active_pid IS NOT NULL", (slots,)):
                            pids[name] = int(pid)
                    for name, pid in pids.items():
                        c = pid_cpu_seconds(pid)
                        if c is not None:
                            seen[name] = c
                    time.sleep(0.05)
            secs = time.perf_counter() - t0
            errs = [p.stderr.read().decode() for p in procs if p.returncode != 0 and p.stderr is not None]
            if errs:
                raise RuntimeError(f"pg_recvlogical failed: {errs[0][-300:]}")
        finally:
            for sl in slots:
                drop_slot(dsn, sl)
        out[str(n)] = {"seconds": secs, "each_rate": changes / secs, "decoded_rate": n * changes / secs,
                       "walsender_cpu_s": sum(seen.values()), "walsenders_seen": len(seen)}
        log.info("%s walsender(s): %.1fs, %.0f changes/s each", n, secs, changes / secs)
    return out


def scaleout_run(source_dsn: str, create_database: Any, bootstrap: str, workdir: Path, *, prefix: str,
                 changes: int, sinks: tuple[int, ...] = DEFAULT_SINKS, broker_pid: int | None = None,
                 tag: str = "") -> dict[str, Any]:
    """`sinks_run` for each count in `sinks`, each into a fresh database made by
    `create_database(name) -> dsn`; a failure of one count is recorded as its reason."""
    out: dict[str, Any] = {"partitions": None, "runs": {}}
    for n in sinks:
        try:
            dst = create_database(f"scale{n}{tag}_{uuid.uuid4().hex[:4]}")
            out["runs"][str(n)] = sinks_run(source_dsn, dst, bootstrap, workdir, prefix=prefix, changes=changes,
                                            sinks=n, broker_pid=broker_pid)
        except Exception as exc:
            log.exception("scale-out with %s sinks failed", n)
            out["runs"][str(n)] = f"failed: {exc}"
    return out


def format_scaleout(res: dict[str, Any]) -> str:
    """The runs as a Markdown table."""
    lines = ["| sinks | changes/s from start | from first apply | from every member applying | first apply after "
             "| rows applied per process "
             "| CPU µs per row per process | CPU share per process (after first apply) | target backends' CPU "
             "| broker CPU | machine busy (of its cores) | load |",
             "| ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for n, r in res["runs"].items():
        if not isinstance(r, dict):
            lines.append(f"| {n} | {r} | | | | | | | | | | |")
            continue
        ps = r["processes"]

        def each(key: str, fmt: str, ps: list[dict[str, Any]] = ps) -> str:
            return " / ".join("n/a" if p[key] is None else format(p[key], fmt) for p in ps)
        broker = "n/a" if r["broker_cpu_share"] is None else f"{r['broker_cpu_share']:.0%}"
        lines.append(
            f"| {n} | {r['rate_from_start']:,.0f} | {r['rate_from_first_apply']:,.0f} | "
            f"{'—' if r['rate_every_member'] is None else format(r['rate_every_member'], ',.0f')} | "
            f"{r['first_apply_after_s']:.1f} s | {each('applied_rows', ',.0f')} | {each('cpu_us_per_row', '.1f')} | "
            f"{each('cpu_share_after_first_apply', '.0%')} | {r['target_backend_cpu_share']:.0%} of a core | "
            f"{broker} | {r['machine_busy']:.0%} ({r['machine_busy_cores']:.1f} cores) | {r['load']} |")
    return "\n".join(lines)


def current_wal(dsn: str) -> str:
    """`pg_current_wal_lsn()` as text."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def format_walsenders(res: dict[str, Any]) -> str:
    """`walsenders_run`'s result as a Markdown table."""
    lines = ["| slots read at once (pg_recvlogical each) | seconds (slowest) | changes/s per slot "
             "| changes decoded per second, all walsenders | walsender CPU s (sampled) |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for n, r in res.items():
        if isinstance(r, dict):
            lines.append(f"| {n} | {r['seconds']:.1f} | {r['each_rate']:,.0f} | {r['decoded_rate']:,.0f} | "
                         f"{r['walsender_cpu_s']:.1f} |")
        else:
            lines.append(f"| {n} | {r} | | | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--mix", default="insert", choices=["insert", "mixed"])
    ap.add_argument("--sinks", default="1,2", help="sink counts to compare")
    ap.add_argument("--partitions", type=int, default=6, help="partitions per topic (config `kafka.partitions`)")
    ap.add_argument("--broker", default="kafka", choices=["kafka", "tansu"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("bridge").setLevel(logging.WARNING)

    from bench.capture import capture_run
    from bench.limits import create_slot
    from bench.workload import create_orders, write_mix
    from bridge.local.brokers import BROKERS
    from bridge.local.postgres import LocalPostgres

    workdir = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    pg = LocalPostgres().start()
    broker = BROKERS[args.broker]().start()
    try:
        src = pg.create_database("src")
        create_orders(src)
        create_slot(src, "bench_scaleout")
        counts = write_mix(src, args.mix, args.rows)
        wal_end = current_wal(src)
        cap = capture_run(src, broker.bootstrap, workdir, base_slot="bench_scaleout", counts=counts, mode="stream",
                          partitions=args.partitions)
        proc = getattr(broker, "proc", None)
        res = scaleout_run(src, pg.create_database, broker.bootstrap, workdir, prefix=cap["prefix"],
                           changes=counts.changes, sinks=tuple(int(x) for x in args.sinks.split(",")),
                           broker_pid=proc.pid if proc is not None else None)
        res["partitions"] = args.partitions
        res["walsenders"] = walsenders_run(src, "bench_scaleout", counts.changes, endpos=wal_end)
        print(f"\nscale-out: mix={args.mix} changes={counts.changes:,} partitions={args.partitions} "
              f"broker={args.broker} cpus={os.cpu_count()}\n")
        print(format_scaleout(res))
        print("\n" + format_walsenders(res["walsenders"]))
        print(json.dumps(res, default=str))
    finally:
        broker.destroy()
        pg.destroy()
        log.info("logs kept in %s", workdir)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
