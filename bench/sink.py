"""Sink apply throughput on the standard workload (/work/shared/workload.md), with the limits.

    .venv/bin/python bench/sink.py [--rows 200000] [--batch 10000] [--repeat 1]

Starts its own throwaway PostgreSQL. For the insert mix and the mixed mix it measures, on the
same rows in the same run:
- `Applier.apply` in batches of `--batch` records (applied rows/s);
- binary COPY of the rows through psycopg 3 `write_row` (PostgreSQL's own load rate);
- COPY of the rows into a staging table plus `INSERT … ON CONFLICT DO UPDATE` (the upsert path).
and prints the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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

from bridge.events import ChangeEvent, Op, Position
from bridge.local.postgres import LocalPostgres
from bridge.lsn import Lsn
from bridge.relation import Column, Relation
from bridge.sink.apply import Applier
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

ORDERS = Relation("public", "orders", (
    Column("id", "bigint", "int8", not_null=True),
    Column("account_id", "integer", "int4", not_null=True),
    Column("amount", "numeric(12,2)", "numeric", not_null=True, precision=12, scale=2),
    Column("status", "text", "text", not_null=True),
    Column("note", "text", "text"),
    Column("created_at", "timestamp with time zone", "timestamptz", not_null=True),
    Column("payload", "jsonb", "jsonb"),
), primary_key=("id",))

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


CPU: list[float] = []  # applier rows per second of the bench process's own CPU time


def run_applier(dsn: str, records: list[SinkRecord], batch: int, expect: dict[int, tuple[Any, ...]]) -> float:
    applier = Applier(dsn)
    try:
        def go() -> None:
            for i in range(0, len(records), batch):
                applier.apply(records[i:i + batch])
        cpu0 = time.process_time()
        took = timed(go)
        CPU.append(len(records) / max(time.process_time() - cpu0, 1e-9))
    finally:
        applier.close()
    # the applied state must be the expected one, or the rate means nothing
    with psycopg.connect(dsn) as c:
        got = c.execute("SELECT count(*), coalesce(sum(id), 0), coalesce(sum(account_id), 0),"
                        " coalesce(sum(amount), 0) FROM public.orders").fetchone()
    want = (len(expect), sum(expect), sum(r[1] for r in expect.values()), sum(r[2] for r in expect.values()))
    assert got == want, f"target state differs: {got} != {want}"
    return took


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

    pg = LocalPostgres().start()
    try:
        dsn = pg.create_database("bench")
        results: dict[str, dict[str, float]] = {}

        # insert mix
        ins = insert_stream(n)
        ins_rows = [py_row(r.change.after) for r in ins]  # type: ignore[arg-type]
        ins_batches = [ins_rows[i:i + batch] for i in range(0, n, batch)]
        med: dict[str, list[float]] = {"applier": [], "copy": [], "upsert": []}
        for _ in range(args.repeat):
            reset(dsn, [])
            med["applier"].append(n / run_applier(dsn, ins, batch, {r[0]: r for r in ins_rows}))
            reset(dsn, [])
            med["copy"].append(n / run_copy(dsn, ins_rows))
            reset(dsn, [])
            med["upsert"].append(n / run_upsert(dsn, ins_batches))
        results["insert"] = {k: statistics.median(v) for k, v in med.items()}
        cpu = {"insert": statistics.median(CPU)}
        CPU.clear()

        # mixed mix over n existing rows
        preload = [py_row(r.change.after) for r in insert_stream(n, seed=3)]  # type: ignore[arg-type]
        mix = mixed_stream(n, n)
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
        med = {"applier": [], "copy": [], "upsert": []}
        for _ in range(args.repeat):
            reset(dsn, preload)
            med["applier"].append(n / run_applier(dsn, mix, batch, final))
            reset(dsn, [])
            med["copy"].append(n / run_copy(dsn, ins_rows))  # same row shape, distinct keys
            reset(dsn, preload)
            med["upsert"].append(n / run_upsert(dsn, mix_batches))
        results["mixed"] = {k: statistics.median(v) for k, v in med.items()}
        cpu["mixed"] = statistics.median(CPU)

        print(f"rows={n} batch={batch} repeat={args.repeat}")
        print(f"{'mix':<8}{'applier rows/s':>16}{'binary COPY':>14}{'COPY+upsert':>14}{'vs COPY':>10}{'vs upsert':>11}")
        for mixname, r in results.items():
            print(f"{mixname:<8}{r['applier']:>16,.0f}{r['copy']:>14,.0f}{r['upsert']:>14,.0f}"
                  f"{r['applier'] / r['copy']:>10.0%}{r['applier'] / r['upsert']:>11.0%}"
                  f"   (Python side alone: {cpu[mixname]:,.0f} rows per CPU second)")
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
