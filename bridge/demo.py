"""`pgbridge demo`: everything local, nothing to set up.

Starts a throwaway PostgreSQL (source and target databases) and a local Kafka-protocol broker
(Tansu, or Apache Kafka with `--broker kafka`), with `--registry` a schema registry (Apicurio,
Confluent framing), runs producer and sink in this process, drives a
realistic workload (inserts, updates, deletes on three tables), shows live progress, then waits
for the sink to catch up, checks that target equals source and prints a summary.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bridge import metrics
from bridge.app import build_producer, build_sink
from bridge.config import load_config
from bridge.health import HealthServer
from bridge.kafka.clients import LIBRDKAFKA_LOGGER

log = logging.getLogger(__name__)

TABLES: dict[str, tuple[str, str]] = {
    # name -> (columns for comparison, order by)
    "public.customers": ("id, name, email, created_at", "id"),
    "public.orders": ("id, account_id, amount, status, note, created_at, payload", "id"),
    'public."Line Items"': ("order_id, line, sku, qty, price", "order_id, line"),
}

DDL = """
CREATE TABLE public.customers (id bigint PRIMARY KEY, name text NOT NULL, email text,
                               created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE public.orders (id bigint PRIMARY KEY, account_id integer NOT NULL, amount numeric(12,2) NOT NULL,
                            status text NOT NULL, note text, created_at timestamptz NOT NULL, payload jsonb);
CREATE TABLE public."Line Items" (order_id bigint, line integer, sku text NOT NULL, qty integer NOT NULL,
                                  price numeric(10,2), PRIMARY KEY (order_id, line));
"""

STATUSES = ["pending", "paid", "shipped_pending", "shipped", "delivered", "cancelled_by_user"]


class Workload:
    """Writes transactions of mixed changes at roughly `rate` changes per second."""

    def __init__(self, dsn: str, rate: int = 2000, seed: int = 7) -> None:
        self.dsn = dsn
        self.rate = rate
        self.rng = random.Random(seed)
        self.changes = 0
        self.next_id = 1
        self.live: list[int] = []

    def run(self, stop: threading.Event) -> None:
        with psycopg.connect(self.dsn, autocommit=False) as conn:
            started = time.monotonic()
            while not stop.is_set():
                self._transaction(conn)
                ahead = self.changes / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    stop.wait(ahead)

    def _transaction(self, conn: psycopg.Connection[Any]) -> None:
        rng = self.rng
        with conn.cursor() as cur:
            rows = []
            for _ in range(rng.randint(5, 40)):
                i = self.next_id
                self.next_id += 1
                self.live.append(i)
                rows.append((i, rng.randint(1, 5000), f"{rng.uniform(1, 99999):.2f}", rng.choice(STATUSES),
                             None if rng.random() < 0.2 else f"note {i} " + "x" * rng.randint(10, 60),
                             json.dumps({"n": i, "tags": ["a", "b"][: rng.randint(0, 2)]})))
            cur.executemany("INSERT INTO public.orders VALUES (%s, %s, %s, %s, %s, now(), %s)", rows)
            cur.executemany('INSERT INTO public."Line Items" VALUES (%s, %s, %s, %s, %s)',
                            [(r[0], ln, f"SKU-{rng.randint(1, 999)}", rng.randint(1, 9), f"{rng.uniform(1, 500):.2f}")
                             for r in rows for ln in range(1, rng.randint(2, 4))])
            cur.execute("INSERT INTO public.customers (id, name, email) VALUES (%s, %s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email",
                        (rng.randint(1, 2000), f"customer {rng.randint(1, 99)}", f"c{rng.randint(1, 9999)}@example.com"))
            n = len(rows) * 3 + 1
            for _ in range(rng.randint(1, 10)):
                if self.live:
                    cur.execute("UPDATE public.orders SET status = %s, amount = amount + 1 WHERE id = %s",
                                (rng.choice(STATUSES), rng.choice(self.live)))
                    n += 1
            if len(self.live) > 100 and rng.random() < 0.5:
                victim = self.live.pop(rng.randrange(len(self.live)))
                cur.execute('DELETE FROM public."Line Items" WHERE order_id = %s', (victim,))
                cur.execute("DELETE FROM public.orders WHERE id = %s", (victim,))
                n += 3
        conn.commit()
        self.changes += n


def _digest(dsn: str, table: str, cols: str, order: str) -> tuple[int, str]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*), coalesce(md5(string_agg(r::text, E'\\n' ORDER BY {order})), '') "
                           f"FROM (SELECT {cols} FROM {table}) r").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def _converged(source: str, target: str) -> bool:
    try:
        return all(_digest(source, t, c, o) == _digest(target, t, c, o) for t, (c, o) in TABLES.items())
    except psycopg.Error:
        return False


def _quantile(hist: Any, q: float) -> float | None:
    """A quantile from a prometheus Histogram's cumulative buckets (upper bound of the bucket)."""
    samples = [(float(s.labels["le"]), s.value) for m in hist.collect() for s in m.samples
               if s.name.endswith("_bucket")]
    if not samples or samples[-1][1] == 0:
        return None
    total = samples[-1][1]
    for le, count in samples:
        if count >= q * total:
            return le
    return None


def run_demo(seconds: float = 30.0, metrics_port: int = 9187, broker_kind: str = "tansu", rate: int = 2000,
             out: Any = sys.stdout, registry: bool = False) -> int:
    """Run the demo; `registry` adds a local Apicurio Registry (installed on first use by
    tools/install-apicurio.sh) as `kafka.schema_registry_url`. Returns the exit code."""
    from bridge.local.brokers import BROKERS
    from bridge.local.postgres import LocalPostgres
    from bridge.local.registry import LocalRegistry

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger(LIBRDKAFKA_LOGGER).setLevel(logging.CRITICAL)  # clients outliving the broker at exit
    print(f"starting PostgreSQL and {broker_kind} …", file=out, flush=True)
    pg = LocalPostgres().start()
    broker = BROKERS[broker_kind]().start()
    reg: LocalRegistry | None = None
    health: HealthServer | None = None
    stop_all = threading.Event()
    try:
        kafka: dict[str, Any] = {"bootstrap_servers": broker.bootstrap, "topic_prefix": "demo", "partitions": 3}
        if registry:
            print("starting the schema registry (Apicurio) …", file=out, flush=True)
            reg = LocalRegistry().start()
            kafka["schema_registry_url"] = reg.url
        source, target = pg.create_database("demo_src"), pg.create_database("demo_dst")
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(DDL)
        cfg_path = _write_config(source, target, kafka, metrics_port)
        health = HealthServer("127.0.0.1", metrics_port).start()
        run = _DemoRun(load_config(str(cfg_path)), source, target, rate, stop_all, out)
        if reg is not None:
            print(f"schema registry: {reg.url} (subjects: {reg.url}/subjects)", file=out, flush=True)
        print(f"config: {cfg_path}\nmetrics: http://127.0.0.1:{health.port}/metrics\n"
              f"workload: ~{rate} changes/s for {seconds:.0f} s (Ctrl-C stops early)\n", file=out, flush=True)
        code = run.run(seconds)
        if code != 2 and reg is not None:
            subjects = reg.request("GET", "/subjects")
            print(f"  registry subjects {len(subjects)} ({', '.join(sorted(subjects))})", file=out)
        if code != 2:
            print(f"  target == source  {'yes' if code == 0 else 'NO'}", file=out, flush=True)
        return min(code, 1)
    finally:
        stop_all.set()
        if health is not None:
            health.stop()
        if reg is not None:
            reg.destroy()
        broker.destroy()
        pg.destroy()


def _write_config(source: str, target: str, kafka: dict[str, Any], metrics_port: int) -> Path:
    """The demo's bridge.yaml (JSON is YAML) in a fresh temporary directory."""
    tmp = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    cfg_path = tmp / "bridge.yaml"
    cfg_path.write_text(json.dumps({
        "source": {"dsn": source, "slot": "demo", "snapshot": "never", "heartbeat_interval_s": 2},
        "kafka": kafka,
        "sink": {"dsn": target, "group_id": "demo-sink", "batch_max_ms": 100},
        "metrics": {"port": metrics_port, "host": "127.0.0.1"},
    }, indent=2))
    return cfg_path


class _DemoRun:
    """Producer, sink and workload in threads of this process, with live progress and a summary."""

    def __init__(self, cfg: Any, source: str, target: str, rate: int, stop_all: threading.Event, out: Any) -> None:
        self.producer, self.close_p = build_producer(cfg)
        self.sink, self.close_s = build_sink(cfg)
        self.source, self.target, self.rate, self.out = source, target, rate, out
        self.stop_all = stop_all
        self.stop_load = threading.Event()
        self.load = Workload(source, rate=rate)
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._guarded(fn), daemon=True)
                        for fn in (self.producer.run, self.sink.run)]
        self.load_thread = threading.Thread(target=self._guarded(lambda _s: self.load.run(self.stop_load)),
                                            daemon=True)

    def _guarded(self, fn: Any) -> Any:
        def run() -> None:
            try:
                fn(self.stop_all)
            except BaseException as exc:
                self.errors.append(exc)
                self.stop_all.set()
        return run

    def run(self, seconds: float) -> int:
        """0: target equals source; 1: it does not; 2: a thread failed (the error is printed)."""
        for t in [*self.threads, self.load_thread]:
            t.start()
        started = time.monotonic()
        self._progress(started, seconds)
        self.stop_load.set()
        self.load_thread.join(30)
        wrote_for = time.monotonic() - started
        print("workload stopped; waiting for the sink to catch up …", file=self.out, flush=True)
        ok = self._wait_converged(time.monotonic() + 120)
        caught_up = time.monotonic() - started
        self.stop_all.set()
        for t in self.threads:
            t.join(30)
        self.close_p()
        self.close_s()
        if self.errors:
            print(f"error: {self.errors[0]}", file=self.out)
            return 2
        self._summary(wrote_for, caught_up)
        return 0 if ok else 1

    def _progress(self, started: float, seconds: float) -> None:
        out, producer, sink = self.out, self.producer, self.sink
        last = (started, 0, 0)
        try:
            while time.monotonic() - started < seconds and not self.stop_all.is_set():
                time.sleep(1.0)
                now = time.monotonic()
                made, applied = producer.produced, sink.applied_rows
                print(f"{now - started:5.0f}s  written {self.load.changes:>8,}  produced {made:>8,} "
                      f"({(made - last[1]) / (now - last[0]):>7,.0f}/s)  applied {applied:>8,} "
                      f"({(applied - last[2]) / (now - last[0]):>7,.0f}/s)  in flight {producer.ledger.in_flight}",
                      file=out, flush=True)
                last = (now, made, applied)
        except KeyboardInterrupt:
            print("stopping the workload …", file=out)

    def _wait_converged(self, deadline: float) -> bool:
        while time.monotonic() < deadline and not self.stop_all.is_set():
            if _converged(self.source, self.target):
                return True
            time.sleep(0.5)
        return False

    def _summary(self, wrote_for: float, caught_up: float) -> None:
        out, load = self.out, self.load
        p50, p99 = _quantile(metrics.END_TO_END_LAG, 0.5), _quantile(metrics.END_TO_END_LAG, 0.99)
        counts = {t: _digest(self.target, t, c, o)[0] for t, (c, o) in TABLES.items()}
        print("\nsummary", file=out)
        print(f"  changes written   {load.changes:,} in {wrote_for:.1f} s", file=out)
        print(f"  records produced  {self.producer.produced:,}; applied {self.sink.applied_rows:,} "
              f"in {self.sink.batches:,} batches", file=out)
        print(f"  throughput        {load.changes / caught_up:,.0f} changes/s end to end (until caught up)",
              file=out)
        print(f"  latency           p50 <= {p50} s, p99 <= {p99} s (commit -> applied, per batch)", file=out)
        print(f"  target rows       {counts}", file=out)
