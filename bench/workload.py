"""The standard workload (/work/shared/workload.md): the `public.orders` table and its mixes.

Every benchmark writes its changes with these functions, so numbers compare across stages, runs
and tools. The point is to create WAL quickly: rows are generated server-side with
`generate_series` and deterministic hash expressions of `(id, seed)`, statements are sent in
psycopg pipeline mode, and the only client-side state is the plan of the mixed mix.

    create_orders(dsn)                         # the table (drop=True to start again)
    write_insert_mix(dsn, 1_000_000)           # 1,000 transactions of 1,000 inserts
    write_mixed_mix(dsn, 1_000_000)            # 10,000 transactions of 50 ins / 30 upd / 20 del
    write_big_transaction(dsn, 1_000_000)      # one transaction of 1,000,000 inserts
    write_mix(dsn, "insert" | "mixed" | "big", rows, seed=0)

Scale: every mix takes its size in rows (changes); tests use TEST_ROWS (10,000), benchmarks
BENCH_ROWS (1,000,000). The row values depend only on (id, seed), the
mixed mix's choice of rows only on the seed, so two runs with the same arguments write the same WAL.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bridge.relation import Column, Relation

TABLE = "public.orders"
COLUMNS = ("id", "account_id", "amount", "status", "note", "created_at", "payload")
PG_TYPES = ("int8", "int4", "numeric", "text", "text", "timestamptz", "jsonb")
"""Type names of COLUMNS, in order (for `copy.set_types`)."""


def orders_relation(**kw: Any) -> Relation:
    """The bridge's `Relation` of `public.orders`, as the catalog describes it (for tests and
    benchmarks that encode or apply its rows without a source database); `kw` as `Relation`'s."""
    return Relation("public", "orders", (
        Column("id", "bigint", "int8", not_null=True),
        Column("account_id", "integer", "int4", not_null=True),
        Column("amount", "numeric(12,2)", "numeric", not_null=True, precision=12, scale=2),
        Column("status", "text", "text", not_null=True),
        Column("note", "text", "text"),
        Column("created_at", "timestamp with time zone", "timestamptz", not_null=True),
        Column("payload", "jsonb", "jsonb"),
    ), ("id",), **kw)


ORDERS_RELATION = orders_relation()
"""The table as the bridge's `Relation` (what the sink's row encoders are generated from)."""


TEST_ROWS = 10_000
BENCH_ROWS = 1_000_000

INSERT_TXN = 1_000
MIXED_TXN = 100
MIX_INSERT, MIX_UPDATE, MIX_DELETE = 50, 30, 20
"""Per 100 changes of the mixed mix."""

MIXES = ("insert", "mixed", "big")

STATUSES = ("pending_payment", "awaiting_fulfilment", "shipped_to_customer",
            "delivered_ok", "cancelled_by_user", "refunded_in_full")
"""10 to 20 characters each."""

DDL = """
CREATE TABLE {table} (
  id          bigint PRIMARY KEY,
  account_id  integer NOT NULL,
  amount      numeric(12,2) NOT NULL,
  status      text NOT NULL,
  note        text,
  created_at  timestamptz NOT NULL,
  payload     jsonb
)"""

# One row per id of the series `g(id)`; %(seed)s is the workload seed. Deterministic: hash
# functions of (id, seed) only. note: 59 characters, NULL for one id in ten; payload: ~100 bytes.
# Written for speed (the cost of generating a row is most of the cost of writing it): to_hex of
# hashes rather than md5, and jsonb parsed from text (2x cheaper than jsonb_build_object).
_STATUS_ARRAY = "ARRAY[" + ", ".join(f"'{s}'" for s in STATUSES) + "]"
_H = "hashint8extended(g.id, %(seed)s::bigint + {})"
_ROW_EXPRS = f"""
  g.id,
  1 + abs({_H.format(0)} %% 10000)::int,
  (abs({_H.format(1)} %% 10000000))::numeric(12,2) / 100,
  ({_STATUS_ARRAY})[1 + abs({_H.format(2)} %% {len(STATUSES)})],
  CASE WHEN abs({_H.format(3)} %% 10) = 0 THEN NULL
       ELSE 'order ' || lpad(g.id::text, 8, '0') || ' placed, ref '
            || lpad(to_hex({_H.format(4)}), 16, '0') || lpad(to_hex({_H.format(5)}), 16, '0') END,
  timestamptz '2026-01-01 00:00:00+00' + g.id * interval '1 second',
  ('{{"sku": "SKU-' || lpad((abs({_H.format(6)} %% 100000))::text, 6, '0')
   || '", "qty": ' || (1 + abs({_H.format(7)} %% 9))::text
   || ', "channel": "web", "tags": ["gift", "express"], "ref": "' || to_hex({_H.format(8)}) || '"}}')::jsonb"""

_INSERT_SERIES = "INSERT INTO {table} (" + ", ".join(COLUMNS) + ") SELECT" + _ROW_EXPRS + \
    " FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g(id)"
_UPDATE = ("UPDATE {table} SET amount = amount + 1.00, status = 'shipped_to_customer',"
           " note = 'updated ' || to_hex(hashint8extended(id, %(seed)s::bigint + 9)),"
           " payload = payload || jsonb_build_object('updated', true)"
           " WHERE id = ANY(%(ids)s)")
_DELETE = "DELETE FROM {table} WHERE id = ANY(%(ids)s)"


@dataclass(frozen=True, slots=True)
class MixedTxn:
    """One transaction of the mixed mix: insert ids `first_insert..last_insert`, then update and delete."""

    first_insert: int
    last_insert: int
    updates: tuple[int, ...]
    deletes: tuple[int, ...]

    @property
    def changes(self) -> int:
        return self.last_insert - self.first_insert + 1 + len(self.updates) + len(self.deletes)


@dataclass(frozen=True, slots=True)
class MixCounts:
    """What a mix wrote: row changes by kind and transactions. `changes` is what a decoder must emit."""

    inserts: int
    updates: int
    deletes: int
    transactions: int
    next_id: int
    """The first id not yet used by an insert (to continue the table with a later mix)."""

    @property
    def changes(self) -> int:
        return self.inserts + self.updates + self.deletes


def _table(table: str) -> sql.Composable:
    return sql.Identifier(*table.split("."))


def _stmt(template: str, table: str) -> bytes:
    """`template` with `{table}` replaced by the quoted name (the row expressions hold JSON braces,
    so `sql.SQL.format` cannot be used)."""
    return template.replace("{table}", _table(table).as_string()).encode()


def create_orders(dsn: str, *, table: str = TABLE, drop: bool = False) -> None:
    """Create the standard table (`drop=True`: drop it first). Called once before a mix is written."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if drop:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_table(table)))
        conn.execute(sql.SQL(DDL).format(table=_table(table)))


def write_insert_mix(dsn: str, rows: int, *, txn: int = INSERT_TXN, start_id: int = 1, seed: int = 0,
                     table: str = TABLE) -> MixCounts:
    """Insert `rows` rows with ids `start_id..` in transactions of `txn` rows (the last may be short).

    Each transaction is one server-side `INSERT … SELECT … FROM generate_series` followed by a Sync,
    sent in pipeline mode. Raises psycopg errors (e.g. a duplicate key if the ids are taken).
    """
    stmt = _stmt(_INSERT_SERIES, table)
    n_txn = 0
    with psycopg.connect(dsn, autocommit=True) as conn, conn.pipeline() as pipe:
        for lo in range(start_id, start_id + rows, txn):
            hi = min(lo + txn, start_id + rows) - 1
            conn.execute(stmt, {"seed": seed, "lo": lo, "hi": hi}, prepare=True)
            # Sync ends the statement's transaction: without it, every statement up to the next
            # Sync would run in one implicit transaction (extended protocol).
            pipe.sync()
            n_txn += 1
    return MixCounts(rows, 0, 0, n_txn, start_id + rows)


def write_big_transaction(dsn: str, rows: int, *, start_id: int = 1, seed: int = 0,
                          table: str = TABLE) -> MixCounts:
    """Insert `rows` rows with ids `start_id..` in a single transaction (one statement)."""
    stmt = _stmt(_INSERT_SERIES, table)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(stmt, {"seed": seed, "lo": start_id, "hi": start_id + rows - 1})
    return MixCounts(rows, 0, 0, 1, start_id + rows)


def mixed_plan(changes: int, *, txn: int = MIXED_TXN, seed: int = 0, start_id: int = 1,
               existing: Sequence[int] = ()) -> Iterator[MixedTxn]:
    """The mixed mix as a plan: per `txn` changes, 50 % inserts, 30 % updates, 20 % deletes.

    Pure and deterministic in its arguments. Inserts take new ids `start_id, start_id + 1, …`; the
    updated and deleted rows of a transaction are distinct rows that exist once its inserts are done
    (`existing` ids, plus earlier inserts, minus earlier deletes), chosen uniformly with
    `random.Random(seed)`. A last partial transaction keeps the proportions (rounded down, the
    remainder inserts).
    """
    rng = random.Random(seed)
    live: list[int] = list(existing)
    next_id = start_id
    done = 0
    while done < changes:
        size = min(txn, changes - done)
        n_upd = size * MIX_UPDATE // 100
        n_del = size * MIX_DELETE // 100
        n_ins = size - n_upd - n_del
        first = next_id
        live.extend(range(first, first + n_ins))
        next_id += n_ins
        # distinct rows to touch: swap each chosen one to the tail, so deletes pop in O(1)
        k = n_upd + n_del
        n = len(live)
        for j in range(k):
            i = rng.randrange(n - j)
            live[i], live[n - 1 - j] = live[n - 1 - j], live[i]
        touched = live[n - k:] if k else []
        updates = tuple(touched[:n_upd])
        deletes = tuple(touched[n_upd:])
        if n_del:
            del live[n - n_del:]  # deletes are the last n_del of `touched`, i.e. the tail
        yield MixedTxn(first, next_id - 1, updates, deletes)
        done += size


class MixedStatements:
    """The three prepared statements of a mixed-mix transaction on `table`."""

    def __init__(self, table: str = TABLE) -> None:
        self.ins, self.upd, self.dele = _stmt(_INSERT_SERIES, table), _stmt(_UPDATE, table), _stmt(_DELETE, table)

    def execute(self, conn: psycopg.Connection[Any], tx: MixedTxn, seed: int) -> None:
        """One planned transaction, BEGIN to COMMIT (queued: `conn` is in pipeline mode)."""
        conn.execute("BEGIN")
        if tx.last_insert >= tx.first_insert:
            conn.execute(self.ins, {"seed": seed, "lo": tx.first_insert, "hi": tx.last_insert}, prepare=True)
        if tx.updates:
            conn.execute(self.upd, {"seed": seed, "ids": list(tx.updates)}, prepare=True)
        if tx.deletes:
            conn.execute(self.dele, {"ids": list(tx.deletes)}, prepare=True)
        conn.execute("COMMIT")


def write_mixed_mix(dsn: str, changes: int, *, txn: int = MIXED_TXN, seed: int = 0, start_id: int | None = None,
                    table: str = TABLE) -> MixCounts:
    """Write `changes` row changes as the mixed mix (see `mixed_plan`) in transactions of `txn`.

    Rows already in the table may be updated or deleted: their ids are read first, and new ids
    start after the largest (or at `start_id`). Each transaction is an `INSERT … generate_series`,
    an `UPDATE … WHERE id = ANY(…)` and a `DELETE … WHERE id = ANY(…)`, sent in pipeline mode.
    """
    t = _table(table)
    stmts = MixedStatements(table)
    with psycopg.connect(dsn, autocommit=True) as conn:
        existing = [r[0] for r in conn.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(t))]
        first_id = start_id if start_id is not None else (existing[-1] + 1 if existing else 1)
        n_ins = n_upd = n_del = n_txn = 0
        next_id = first_id
        with conn.pipeline() as pipe:
            for tx in mixed_plan(changes, txn=txn, seed=seed, start_id=first_id, existing=existing):
                stmts.execute(conn, tx, seed)
                pipe.sync()
                n_ins += tx.last_insert - tx.first_insert + 1
                n_upd += len(tx.updates)
                n_del += len(tx.deletes)
                n_txn += 1
                next_id = tx.last_insert + 1
    return MixCounts(n_ins, n_upd, n_del, n_txn, next_id)


def write_mix(dsn: str, mix: str, rows: int, *, seed: int = 0, table: str = TABLE) -> MixCounts:
    """Write the named mix (`insert`, `mixed` or `big`) of `rows` changes into an existing table."""
    if mix == "insert":
        return write_insert_mix(dsn, rows, seed=seed, table=table)
    if mix == "mixed":
        return write_mixed_mix(dsn, rows, seed=seed, table=table)
    if mix == "big":
        return write_big_transaction(dsn, rows, seed=seed, table=table)
    raise ValueError(f"unknown mix {mix!r}: expected one of {MIXES}")


def fetch_rows(dsn: str, *, table: str = TABLE, limit: int | None = None) -> list[tuple[Any, ...]]:
    """The table's rows ordered by id: the "same rows" the load-rate limits COPY back in.

    Types as psycopg loads them (int, int, Decimal, str, str | None, datetime), except `payload`,
    which is the jsonb document's text (its value form in docs/internals.md: `str`, unparsed).
    """
    cols: list[sql.Composable] = [sql.Identifier(c) for c in COLUMNS]
    cols[-1] = sql.SQL("{}::text").format(cols[-1])
    q = sql.SQL("SELECT {} FROM {} ORDER BY id").format(sql.SQL(", ").join(cols), _table(table))
    if limit is not None:
        q = q + sql.SQL(" LIMIT {}").format(sql.Literal(limit))
    with psycopg.connect(dsn) as conn:
        return conn.execute(q).fetchall()
