"""The source workloads the end-to-end, fault and chaos tests drive.

Each runs in a thread (`run(stop)`), stops when `stop` is set or its target is reached, and sets
`done` at the end. Both survive PostgreSQL restarts (they reconnect), so fault tests can use them.

- `ChaosWorkload`: inserts, versioned updates, deletes and primary-key changes over the chaos
  schema (`CHAOS_SCHEMA`), plus one big transaction; every row's `v` only grows.
- `CountedWorkload`: set-based transactions over `COUNTED_SCHEMA`, each logging its own change
  count in `public.txlog`, so the source says exactly how many changes were committed
  (`source_totals`).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

CHAOS_SCHEMA = """
CREATE TABLE public.accounts (id bigint PRIMARY KEY, v bigint NOT NULL, owner text NOT NULL,
                              balance numeric(14,2) NOT NULL, bio text);
ALTER TABLE public.accounts ALTER COLUMN bio SET STORAGE EXTERNAL;
CREATE TABLE public.transfers (id bigint PRIMARY KEY, v bigint NOT NULL, src bigint, dst bigint,
                               amount numeric(12,2), at timestamptz NOT NULL DEFAULT now());
CREATE TABLE public."Audit Log" (id bigint PRIMARY KEY, v bigint NOT NULL, what text, at timestamptz DEFAULT now());
"""

CHAOS_TABLES: dict[str, tuple[list[str], str]] = {
    "public.accounts": (["id", "v", "owner", "balance", "md5(bio)"], "id"),
    "public.transfers": (["id", "v", "src", "dst", "amount", "at"], "id"),
    'public."Audit Log"': (["id", "v", "what", "at"], "id"),
}


@dataclass
class ChaosWorkload:
    """Transactions of inserts, versioned updates, deletes and primary-key changes over three tables,
    plus one big transaction. Reconnects and retries when PostgreSQL restarts."""

    dsn: str
    target_changes: int
    big_txn_rows: int
    seed: int = 11
    changes: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, stop: threading.Event) -> None:
        rng = random.Random(self.seed)
        next_id = {"a": 1, "t": 1, "l": 1}
        big_done = False
        conn: psycopg.Connection[Any] | None = None
        try:
            while self.changes < self.target_changes and not stop.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self.dsn, autocommit=False)
                    if not big_done and self.changes >= self.target_changes // 3:
                        self._big(conn, next_id)
                        big_done = True
                        continue
                    self._txn(conn, rng, next_id)
                except psycopg.OperationalError:
                    conn = None
                    time.sleep(0.2)
        finally:
            if conn is not None and not conn.closed:
                conn.close()
            self.done.set()

    def _big(self, conn: psycopg.Connection[Any], next_id: dict[str, int]) -> None:
        start = next_id["l"]
        conn.execute('INSERT INTO public."Audit Log" (id, v, what) SELECT g, 1, \'bulk \' || g '
                     "FROM generate_series(%s::bigint, %s::bigint) g", (start, start + self.big_txn_rows - 1))
        conn.commit()
        next_id["l"] += self.big_txn_rows
        self.changes += self.big_txn_rows

    def _txn(self, conn: psycopg.Connection[Any], rng: random.Random, next_id: dict[str, int]) -> None:
        cur = conn.cursor()
        n = 0
        a0 = next_id["a"]
        accts = [(a0 + i, 1, f"owner {a0 + i}", f"{rng.uniform(0, 1e6):.2f}",
                  ("bio " * 3000) if i == 0 else None) for i in range(20)]
        cur.executemany("INSERT INTO public.accounts VALUES (%s, %s, %s, %s, %s)", accts)
        n += len(accts)
        t0 = next_id["t"]
        cur.executemany("INSERT INTO public.transfers (id, v, src, dst, amount) VALUES (%s, 1, %s, %s, %s)",
                        [(t0 + i, rng.randint(1, a0 + 19), rng.randint(1, a0 + 19), f"{rng.uniform(1, 500):.2f}")
                         for i in range(30)])
        n += 30
        l0 = next_id["l"]
        cur.executemany('INSERT INTO public."Audit Log" (id, v, what) VALUES (%s, 1, %s)',
                        [(l0 + i, f"event {l0 + i}") for i in range(10)])
        n += 10
        # versioned updates of random existing rows (TOAST column untouched: unchanged-toast-datum)
        for _ in range(25):
            cur.execute("UPDATE public.accounts SET v = v + 1, balance = balance + 1 WHERE id = %s",
                        (rng.randint(1, a0 + 19),))
            n += cur.rowcount
        cur.execute("UPDATE public.transfers SET v = v + 1, amount = amount * 2 WHERE id = %s",
                    (rng.randint(1, t0 + 29),))
        n += cur.rowcount
        # deletes
        cur.execute("DELETE FROM public.transfers WHERE id = %s", (rng.randint(1, t0 + 29),))
        n += cur.rowcount
        # a primary-key change: the row moves to a fresh id, its version grows
        old = rng.randint(1, l0 + 9)
        cur.execute('UPDATE public."Audit Log" SET id = %s, v = v + 1 WHERE id = %s', (10**12 + l0, old))
        n += cur.rowcount
        conn.commit()
        next_id["a"] += 20
        next_id["t"] += 30
        next_id["l"] += 10
        self.changes += n



COUNTED_SCHEMA = """
CREATE TABLE public.items (id bigint PRIMARY KEY, v int NOT NULL, pad text);
CREATE TABLE public.notes (id bigint PRIMARY KEY, body text NOT NULL);
CREATE TABLE public.txlog (txn bigint PRIMARY KEY, changes int NOT NULL, deletes int NOT NULL);
"""

@dataclass
class CountedWorkload:
    """Transactions of set-based inserts, updates and deletes over two tables. Each transaction
    also inserts its own `txlog` row `(txn, changes incl. that row, deletes)`, so the source
    itself says how many changes were committed. Survives PostgreSQL restarts: after a failed
    commit it looks its `txlog` row up to learn whether the transaction happened."""

    dsn: str
    target_changes: int
    seed: int = 7
    inserts: int = 300
    rate: float = 0.0  # changes per second at most (0: as fast as it goes)
    txns: int = 0
    changes: int = 0
    errors: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, stop: threading.Event) -> None:
        rng = random.Random(self.seed)
        next_id = 1
        conn: psycopg.Connection[Any] | None = None
        started = time.monotonic()
        try:
            while self.changes < self.target_changes and not stop.is_set():
                txn = self.txns + 1
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self.dsn, autocommit=False, connect_timeout=3)
                    n, _deletes = self._txn(conn, rng, txn, next_id)
                except psycopg.OperationalError:
                    self.errors += 1
                    if conn is not None:
                        conn.close()
                    conn = None
                    found = self._committed(txn, stop)
                    if found is None:
                        continue  # rolled back: do it again (same ids, same txn number)
                    n = found
                self.txns = txn
                self.changes += n
                next_id += self.inserts
                if self.rate:
                    stop.wait(max(0.0, started + self.changes / self.rate - time.monotonic()))
        finally:
            if conn is not None and not conn.closed:
                conn.close()
            self.done.set()

    def _txn(self, conn: psycopg.Connection[Any], rng: random.Random, txn: int, first: int) -> tuple[int, int]:
        cur = conn.cursor()
        cur.execute("INSERT INTO public.items SELECT g, 1, md5(g::text) "
                    "FROM generate_series(%s::bigint, %s::bigint) g", (first, first + self.inserts - 1))
        n = cur.rowcount
        lo = rng.randint(1, first + self.inserts - 100)
        cur.execute("UPDATE public.items SET v = v + 1 WHERE id BETWEEN %s AND %s", (lo, lo + 99))
        n += cur.rowcount
        lo = rng.randint(1, first + self.inserts - 30)
        cur.execute("DELETE FROM public.items WHERE id BETWEEN %s AND %s", (lo, lo + 29))
        deletes = cur.rowcount
        n += deletes
        cur.execute("INSERT INTO public.notes VALUES (%s, %s), (%s, %s) ON CONFLICT (id) DO UPDATE SET body = "
                    "excluded.body", (txn % 50, f"note {txn}", 1000 + txn, "x" * (txn % 300)))
        n += cur.rowcount
        n += 1  # the txlog row itself
        cur.execute("INSERT INTO public.txlog VALUES (%s, %s, %s)", (txn, n, deletes))
        conn.commit()
        return n, deletes

    def _committed(self, txn: int, stop: threading.Event) -> int | None:
        """After a lost connection: the committed transaction's change count, or None."""
        while not stop.is_set():
            try:
                with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                    row = conn.execute("SELECT changes FROM public.txlog WHERE txn = %s", (txn,)).fetchone()
                return None if row is None else int(row[0])
            except psycopg.OperationalError:
                time.sleep(0.2)
        return None


def source_totals(dsn: str) -> tuple[int, int, int]:
    """(committed transactions, changes, deletes) as the source's txlog has them."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*), coalesce(sum(changes), 0), coalesce(sum(deletes), 0) "
                           "FROM public.txlog").fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])
