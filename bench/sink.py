"""Sink throughput and CPU on the standard workload (/work/shared/workload.md), with the limits.

    .venv/bin/python bench/sink.py [--rows 200000] [--batch 10000] [--repeat 1]

Starts its own throwaway PostgreSQL. The records are the producer's framed Avro values
(`TableCodec`); for the insert mix and the mixed mix it measures, on the same rows in the same run:
- the sink's work per batch of `--batch` records: decode every value (`EnvelopeDecoder`) and
  `Applier.apply` — once on the native path (bridge._native) and once on the Python reference
  (`BRIDGE_NATIVE=0`): applied rows/s and the sink process's CPU time per row;
- binary COPY of the rows through psycopg 3 `write_row`;
- binary COPY of the same rows from bytes in hand (the stream encoded before the clock starts,
  handed to `copy.write`): PostgreSQL's own load rate, the limit of any sink;
- COPY of the rows into a staging table plus `INSERT … ON CONFLICT DO UPDATE` (the upsert limit).
and prints the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.arrow_cost import measure as measure_arrow
from bench.arrow_cost import report as report_arrow
from bench.limits import binary_copy_stream, copy_stream
from bench.workload import ORDERS_RELATION as ORDERS
from bridge.codec import EnvelopeDecoder, MemorySchemaStore, TableCodec
from bridge.events import ChangeEvent, Op, Position
from bridge.local.postgres import LocalPostgres
from bridge.lsn import Lsn
from bridge.sink.apply import Applier
from bridge.sink.native_stage import envelope_decoder, tune_gc
from bridge.sink.records import SinkRecord

ORDERS_DDL = """
CREATE TABLE public.orders (
  id bigint PRIMARY KEY, account_id integer NOT NULL, amount numeric(12,2) NOT NULL,
  status text NOT NULL, note text, created_at timestamptz NOT NULL, payload jsonb)
"""
UPSERT = ("INSERT INTO public.orders SELECT * FROM stg ON CONFLICT (id) DO UPDATE SET account_id = EXCLUDED.account_id,"
          " amount = EXCLUDED.amount, status = EXCLUDED.status, note = EXCLUDED.note,"
          " created_at = EXCLUDED.created_at, payload = EXCLUDED.payload")
TYPES = ["int8", "int4", "numeric", "text", "text", "timestamptz", "jsonb"]


STATUSES = ["pending-payment", "shipped-to-customer", "awaiting-stock", "cancelled-by-user", "delivered"]
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def make_row(rng: random.Random, i: int) -> tuple[Any, ...]:
    note = None if rng.random() < 0.1 else f"note {i} " + "x" * 52
    payload = json.dumps({"sku": f"SKU-{rng.randrange(10**6):06d}", "qty": rng.randrange(1, 9),
                          "tags": ["a", "b"], "src": "web", "ref": f"{rng.getrandbits(64):016x}"})
    return (i, rng.randrange(1, 100_000), Decimal(rng.randrange(1, 10**7)).scaleb(-2), rng.choice(STATUSES),
            note, 1_700_000_000_000_000 + i * 1_000, payload)


def insert_stream(n: int, seed: int = 1) -> list[SinkRecord]:
    """n inserts in transactions of 1,000."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ch = ChangeEvent(ORDERS, Op.INSERT, Position(Lsn(1_000_000 + i // 1000), i % 1000), i // 1000, None,
                         None, make_row(rng, i))
        out.append(SinkRecord("bridge.public.orders", 0, i, ch))
    return out


def mixed_stream(n: int, existing: int, seed: int = 2) -> list[SinkRecord]:
    """n changes (50 % inserts, 30 % updates, 20 % deletes) in transactions of 100, over `existing` rows."""
    rng = random.Random(seed)
    live = list(range(existing))
    where = {k: j for j, k in enumerate(live)}
    nxt = existing
    out = []
    for i in range(n):
        pos = Position(Lsn(2_000_000 + i // 100), i % 100)
        r = rng.random()
        if r < 0.5 or len(live) < 10:
            row = make_row(rng, nxt)
            where[nxt] = len(live)
            live.append(nxt)
            nxt += 1
            ch = ChangeEvent(ORDERS, Op.INSERT, pos, 0, None, None, row)
        elif r < 0.8:
            k = live[rng.randrange(len(live))]
            ch = ChangeEvent(ORDERS, Op.UPDATE, pos, 0, None, None, make_row(rng, k))
        else:
            j = rng.randrange(len(live))
            k = live[j]
            last = live.pop()
            if j < len(live):
                live[j] = last
                where[last] = j
            del where[k]
            ch = ChangeEvent(ORDERS, Op.DELETE, pos, 0, None, (k, None, None, None, None, None, None), None)
        out.append(SinkRecord("bridge.public.orders", 0, i, ch))
    return out


def py_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The value form as the Python objects psycopg dumps (for the limits)."""
    return (row[0], row[1], row[2], row[3], row[4], EPOCH + dt.timedelta(microseconds=row[5]),
            Jsonb(json.loads(row[6])) if row[6] is not None else None)


def reset(dsn: str, preload: list[tuple[Any, ...]]) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS public.orders")
        c.execute("DROP SCHEMA IF EXISTS bridge CASCADE")
        c.execute("DROP SCHEMA IF EXISTS pgbridge_state CASCADE")  # the positions: a repeat must not skip all
        c.execute(ORDERS_DDL)
        if preload:
            with c.cursor().copy("COPY public.orders FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(TYPES)
                for r in preload:
                    cp.write_row(r)
        c.execute("VACUUM ANALYZE public.orders")


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


CPU: dict[str, list[float]] = {}  # path -> the bench process's CPU seconds per applied row


def framed(records: list[SinkRecord]) -> tuple[MemorySchemaStore, list[tuple[str, int, bytes]]]:
    """The records as the producer writes them: (topic, offset, framed Avro value)."""
    store = MemorySchemaStore()
    codec = TableCodec(ORDERS, store, db="bench", topic_prefix="bridge")
    return store, [(r.topic, r.offset, codec.value(r.change)) for r in records]  # type: ignore[arg-type]


def run_sink(dsn: str, store: MemorySchemaStore, values: list[tuple[str, int, bytes]], batch: int,
             expect: dict[int, tuple[Any, ...]], path: str) -> float:
    """Decode + apply in batches, as the sink does, on `path` (native or python)."""
    os.environ["BRIDGE_NATIVE"] = "1" if path == "native" else "0"
    decoder: EnvelopeDecoder = envelope_decoder(store, topic_prefix="bridge")
    applier = Applier(dsn)  # its table plans (and encoders) follow the switch
    try:
        def go() -> None:
            dec = decoder.decode
            for i in range(0, len(values), batch):
                applier.apply([SinkRecord(t, 0, o, dec(v)) for t, o, v in values[i:i + batch]])  # type: ignore[arg-type]
        cpu0 = time.process_time()
        took = timed(go)
        CPU.setdefault(path, []).append((time.process_time() - cpu0) / len(values))
    finally:
        applier.close()
        os.environ.pop("BRIDGE_NATIVE", None)
    # the applied state must be the expected one, or the rate means nothing
    with psycopg.connect(dsn) as c:
        got = c.execute("SELECT count(*), coalesce(sum(id), 0), coalesce(sum(account_id), 0),"
                        " coalesce(sum(amount), 0) FROM public.orders").fetchone()
    want = (len(expect), sum(expect), sum(r[1] for r in expect.values()), sum(r[2] for r in expect.values()))
    assert got == want, f"target state differs: {got} != {want}"
    return took


def run_copy_bytes(dsn: str, rows: list[tuple[Any, ...]]) -> float:
    """Binary COPY of `rows` (value form) from bytes in hand: `bench.limits.binary_copy_stream`
    encodes the stream before the clock starts, `bench.limits.copy_stream` times COPY + commit."""
    stream = binary_copy_stream(rows)
    with psycopg.connect(dsn) as c:
        return copy_stream(c, "public.orders", stream)


def run_copy(dsn: str, rows: list[tuple[Any, ...]]) -> float:
    with psycopg.connect(dsn) as c:
        def go() -> None:
            with c.cursor().copy("COPY public.orders FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(TYPES)
                for r in rows:
                    cp.write_row(r)
            c.commit()
        return timed(go)


def run_upsert(dsn: str, batches: list[list[tuple[Any, ...]]]) -> float:
    with psycopg.connect(dsn) as c:
        c.execute("CREATE TEMP TABLE stg (LIKE public.orders) ON COMMIT DELETE ROWS")
        c.commit()

        def go() -> None:
            for rows in batches:
                cur = c.cursor()
                with cur.copy("COPY stg FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(TYPES)
                    for r in rows:
                        cp.write_row(r)
                cur.execute(UPSERT)
                c.commit()
        return timed(go)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the median is printed")
    args = ap.parse_args()
    n, batch = args.rows, args.batch

    tune_gc()  # as the sink process does (bridge.cli)
    pg = LocalPostgres().start()
    try:
        dsn = pg.create_database("bench")
        results: dict[str, dict[str, float]] = {}

        # insert mix
        ins = insert_stream(n)
        ins_rows = [py_row(r.change.after) for r in ins]  # type: ignore[arg-type]
        ins_value_rows = [r.change.after for r in ins]
        ins_store, ins_values = framed(ins)
        ins_batches = [ins_rows[i:i + batch] for i in range(0, n, batch)]
        kinds = ["native", "python", "copy", "copy_bytes", "upsert"]
        med: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(args.repeat):
            for path in ("native", "python"):
                reset(dsn, [])
                med[path].append(n / run_sink(dsn, ins_store, ins_values, batch, {r[0]: r for r in ins_rows}, path))
            reset(dsn, [])
            med["copy"].append(n / run_copy(dsn, ins_rows))
            reset(dsn, [])
            med["copy_bytes"].append(n / run_copy_bytes(dsn, ins_value_rows))  # type: ignore[arg-type]
            reset(dsn, [])
            med["upsert"].append(n / run_upsert(dsn, ins_batches))
        results["insert"] = {k: statistics.median(v) for k, v in med.items()}
        cpu = {"insert": {p: statistics.median(v) for p, v in CPU.items()}}
        CPU.clear()

        # mixed mix over n existing rows
        preload = [py_row(r.change.after) for r in insert_stream(n, seed=3)]  # type: ignore[arg-type]
        mix = mixed_stream(n, n)
        mix_store, mix_values = framed(mix)
        full: dict[int, tuple[Any, ...]] = {r[0]: r for r in preload}
        limit_rows: list[tuple[Any, ...]] = []
        for r in mix:
            ch = r.change
            if ch.after is not None:
                full[ch.after[0]] = py_row(ch.after)
                limit_rows.append(full[ch.after[0]])
            else:
                assert ch.before is not None
                limit_rows.append(full[ch.before[0]])
        final = dict(full)
        for r in mix:
            if r.change.op == Op.DELETE:
                assert r.change.before is not None
                final.pop(r.change.before[0], None)
            else:
                assert r.change.after is not None
                final[r.change.after[0]] = r.change.after
        mix_batches = []
        for i in range(0, n, batch):
            dedup = {row[0]: row for row in limit_rows[i:i + batch]}
            mix_batches.append(list(dedup.values()))
        med = {k: [] for k in kinds}
        for _ in range(args.repeat):
            for path in ("native", "python"):
                reset(dsn, preload)
                med[path].append(n / run_sink(dsn, mix_store, mix_values, batch, final, path))
            reset(dsn, [])
            med["copy"].append(n / run_copy(dsn, ins_rows))  # same row shape, distinct keys
            reset(dsn, [])
            med["copy_bytes"].append(n / run_copy_bytes(dsn, ins_value_rows))  # type: ignore[arg-type]
            reset(dsn, preload)
            med["upsert"].append(n / run_upsert(dsn, mix_batches))
        results["mixed"] = {k: statistics.median(v) for k, v in med.items()}
        cpu["mixed"] = {p: statistics.median(v) for p, v in CPU.items()}

        print(f"rows={n} batch={batch} repeat={args.repeat}  (rows/s; CPU = the sink process's CPU per row: "
              f"decode + stage + apply, PostgreSQL's own CPU not counted)")
        print(f"{'mix':<8}{'path':<8}{'sink rows/s':>13}{'CPU/row':>10}{'write_row':>12}{'COPY bytes':>12}"
              f"{'COPY+upsert':>13}{'vs bytes':>10}{'vs upsert':>11}")
        for mixname, r in results.items():
            for path in ("native", "python"):
                print(f"{mixname:<8}{path:<8}{r[path]:>13,.0f}{cpu[mixname][path] * 1e6:>8.2f}us"
                      f"{r['copy']:>12,.0f}{r['copy_bytes']:>12,.0f}{r['upsert']:>13,.0f}"
                      f"{r[path] / r['copy_bytes']:>10.2f}{r[path] / r['upsert']:>11.2f}")
        # the pyarrow decision (bench/arrow_cost.py) against this run's native sink CPU per row
        arrow = measure_arrow(n, cpu["insert"]["native"] * 1e6)
        report_arrow(arrow)
        print(json.dumps({"results": results, "cpu_us_per_row": {m: {p: v * 1e6 for p, v in c.items()}
                                                                 for m, c in cpu.items()}, "arrow": arrow}))
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
