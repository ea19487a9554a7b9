"""Resnapshot one table while streaming: the DBLog watermark method.

`pgbridge snapshot --table s.t` writes a logical message `bridge.snapshot.request` (content: the
table, or a JSON object `{"schema": …, "table": …, "chunk_rows": …}`) on the source. The producer sees it in its stream and reads the table again, chunk by chunk,
without a long transaction and without pausing the stream. For each chunk:

1. write a low watermark `bridge.snapshot.low` (content `<run token>:<job>:<chunk>`);
2. when the stream reaches the low watermark: start remembering the keys that streamed events of
   the table change; read the chunk (`WHERE (pk) > (last) ORDER BY pk LIMIT n`, one statement on
   an autocommit connection, so its own short transaction); write the high watermark
   `bridge.snapshot.high` with the same content;
3. when the stream reaches the high watermark: produce the chunk's rows as op `r` events, except
   those whose keys changed between the two watermarks (the streamed event carries that key's
   state, and a row read before such a change would be stale). They are positioned at the
   high watermark, `(its LSN, 0..n-1)` (inside a transaction: `(commit LSN, seq after its
   changes)`), so they sort after every
   streamed event before it and before every one after it; a truncate of the table in the window
   drops the whole chunk. Then the next chunk, until one comes back short.

The three messages are non-transactional (`pg_logical_emit_message(false, …)`): decoding emits
such a message at its own LSN, in WAL order, between the transactions that committed before it
and those that commit after — exactly the split a watermark needs, and its LSN orders with the
commit LSNs around it. (A transactional message alone in its transaction is printed by
test_decoding with `skip-empty-xacts` without BEGIN/COMMIT, when its transaction commits but at
the message record's own LSN, which may be below a commit already streamed.) A request written
inside a transaction that also changes rows arrives within that transaction and works too.

An event source: everything runs on the producer's loop thread. The hooks below are called for
each transaction and message; the reads and the watermark writes are short SQL statements made
there. The rows come out as op `r` `ChangeEvent`s (`read_events`) that the producer sends
through the same Router and Emitter as streamed changes, in the high-watermark transaction's
ledger entry, so the watermark accounts for them like any other record.

Crash safety: the request transaction's ledger entry is held open until its resnapshot is done,
so the slot is not confirmed past the request; a producer that dies mid-way sees the request
again on restart and starts the table over (messages of the dead run carry another run token and
are ignored). Rows already produced by the dead run stay in Kafka: each was correct at its position.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bridge.ack.watermark import InFlight
from bridge.errors import BridgeError, SchemaError, SourceError
from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.relation import Relation
from bridge.source.session import close_quietly
from bridge.source.snapshot import DEFAULT_CHUNK_ROWS, TableReader
from bridge.source.test_decoding import MessageLine

log = logging.getLogger(__name__)

SNAPSHOT_MESSAGE = "prefix: bridge.snapshot."  # how these lines are spotted cheaply in text
SNAPSHOT_PREFIX = "bridge.snapshot."  # every message prefix below starts with it
REQUEST_PREFIX = "bridge.snapshot.request"
LOW_PREFIX = "bridge.snapshot.low"
HIGH_PREFIX = "bridge.snapshot.high"

Row = tuple[Any, ...]

EMIT_SQL = "SELECT pg_logical_emit_message(false, %s, %s)::text, txid_current()"
"""A non-transactional message is not flushed by itself (before PostgreSQL 17), and walsenders
send only flushed WAL: it would wait for the WAL writer (up to `wal_writer_delay`, twice per
chunk). `txid_current()` gives the statement's transaction an xid, so its commit flushes the WAL
up to and past the message; decoding skips the empty transaction."""


@dataclass(frozen=True, slots=True)
class ResnapshotRequest:
    """What a `bridge.snapshot.request` message asks for."""

    schema: str
    table: str
    chunk_rows: int | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def content(self) -> str:
        if self.chunk_rows is None and "." not in self.schema and '"' not in self.schema + self.table:
            return self.qualified
        d: dict[str, Any] = {"schema": self.schema, "table": self.table}
        if self.chunk_rows is not None:
            d["chunk_rows"] = self.chunk_rows
        return json.dumps(d)


def parse_table_name(text: str) -> tuple[str, str]:
    """`schema.table` → (schema, table); either part may be double-quoted (`"My Schema"."T"`).
    A name without a schema is in `public`. Raises ValueError."""
    parts: list[str] = []
    i, n = 0, len(text)
    while i <= n:
        if i < n and text[i] == '"':
            j, buf = i + 1, []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise ValueError(f"unterminated quoted identifier in {text!r}")
                buf.append(text[j:k])
                if text[k + 1:k + 2] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                break
            parts.append("".join(buf))
            i = k + 1
        else:
            k = text.find(".", i)
            k = n if k < 0 else k
            parts.append(text[i:k])
            i = k
        if i >= n:
            break
        if text[i] != ".":
            raise ValueError(f"not a table name: {text!r}")
        i += 1
    if len(parts) == 1:
        parts.insert(0, "public")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"not a table name: {text!r} (expected schema.table)")
    return parts[0], parts[1]


def parse_request(content: str) -> ResnapshotRequest:
    """The request a message carries. Raises ValueError."""
    text = content.strip()
    if text.startswith("{"):
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"not a resnapshot request: {content!r}")
        if "schema" in d:
            schema, table = str(d["schema"]), str(d["table"])
        else:
            schema, table = parse_table_name(str(d["table"]))
        rows = d.get("chunk_rows")
        if rows is not None and (not isinstance(rows, int) or rows < 1):
            raise ValueError(f"chunk_rows must be a positive integer: {rows!r}")
        return ResnapshotRequest(schema, table, rows)
    schema, table = parse_table_name(text)
    return ResnapshotRequest(schema, table)


def emit_request(conn: psycopg.Connection[Any], request: ResnapshotRequest) -> Lsn:
    """Write the request on the source (autocommit connection); returns the message's LSN.

    Called by `pgbridge snapshot`. Raises SchemaError when the table does not exist, SourceError
    when the statement fails."""
    try:
        row = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))",
                           (request.schema, request.table)).fetchone()
        if row is None or row[0] is None:
            raise SchemaError(f"no table {request.qualified} in the source", table=request.qualified)
        lsn = conn.execute(EMIT_SQL,
                           (REQUEST_PREFIX, request.content())).fetchone()
    except psycopg.Error as exc:
        raise SourceError(f"cannot request a resnapshot: {str(exc).strip()}", sqlstate=exc.sqlstate) from exc
    assert lsn is not None
    return Lsn.parse(lsn[0])


@dataclass(slots=True, eq=False)
class _Job:
    """One table's resnapshot, from its request until its last chunk is produced."""

    number: int
    request: ResnapshotRequest
    held: InFlight  # the request transaction's ledger entry, closed when the job is done
    relation: Relation | None = None
    reader: TableReader | None = None
    key_index: list[int] = field(default_factory=list)
    chunk: int = 0
    last_key: list[str] | None = None
    window: bool = False  # between the low and the high watermark of the current chunk
    changed: set[tuple[Any, ...]] = field(default_factory=set)
    truncated: bool = False
    rows: list[Row] = field(default_factory=list)
    next_key: list[str] | None = None
    full: bool = False  # the chunk read came back with chunk_rows rows: there may be more
    high_seen: bool = False
    produced: int = 0
    dropped: int = 0


class Resnapshotter:
    """Drives resnapshots from the producer loop. Built by `cli.py`; one per producer run.

    The producer calls, per transaction, in order: `on_message` for each logical message inside
    it (keeping the transaction's ledger entry open when it returns True), `observe` /
    `observe_truncate` for each change or truncate of a replicated table, and after the last
    line `take_reads` (rows to produce at the end of this transaction) and `release` (held
    entries of finished jobs, to close).
    """

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], relation_of: Callable[[str, str], Relation],
                 include: Callable[[str, str], bool], chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        self._connect = connect
        self._conn: psycopg.Connection[Any] | None = None
        self.relation_of = relation_of
        self.include = include
        self.chunk_rows = chunk_rows
        self.token = uuid.uuid4().hex[:12]
        self._queue: deque[_Job] = deque()
        self._job: _Job | None = None
        self._jobs = 0
        self._release: list[InFlight] = []
        self.completed: list[tuple[str, int, int]] = []  # (table, rows produced, rows dropped)

    @property
    def active(self) -> bool:
        return self._job is not None

    # -- hooks --------------------------------------------------------------------------------

    def on_message(self, msg: MessageLine, entry: InFlight) -> bool:
        """A logical message inside a transaction. True when `entry` must stay open (a request
        was accepted: its entry is closed through `release` when the job is done)."""
        prefix = msg.prefix
        if prefix == REQUEST_PREFIX:
            return self._request(msg.content, entry)
        job = self._job
        if job is None or prefix not in (LOW_PREFIX, HIGH_PREFIX) or msg.content != self._mark(job):
            return False  # not ours (another run's, or a stale chunk's)
        if prefix == LOW_PREFIX:
            if not job.window:
                self._read_chunk(job)
        elif job.window:
            job.high_seen = True
        return False

    def observe(self, relation: Relation, before: Row | None, after: Row | None) -> None:
        """A streamed change of a replicated table: inside a window, remember its key(s)."""
        job = self._job
        if job is None or not job.window or job.relation is None:
            return
        if relation.table != job.relation.table or relation.schema != job.relation.schema:
            return
        idx = [relation.index[k] for k in job.relation.primary_key if k in relation.index]
        if len(idx) != len(job.key_index):
            job.truncated = True  # the key changed shape (DDL): this chunk cannot be trusted
            return
        for row in (before, after):
            if row is not None:
                job.changed.add(tuple(row[i] for i in idx))

    def observe_event(self, event: ChangeEvent) -> None:
        """A streamed event of a replicated table (called for each, before it is sent)."""
        if self._job is None:
            return
        if event.op is Op.TRUNCATE:
            self.observe_truncate(event.relation.schema, event.relation.table)
        else:
            self.observe(event.relation, event.before, event.after)

    def observe_truncate(self, schema: str, table: str) -> None:
        job = self._job
        if job is not None and job.window and job.request.schema == schema and job.request.table == table:
            job.truncated = True

    def take_reads(self) -> tuple[Relation, list[Row]] | None:
        """At the end of a transaction: when it held the current chunk's high watermark, the
        chunk's rows to produce now, at positions after the transaction's own changes; the next
        chunk's low watermark is written (or the job finishes)."""
        job = self._job
        if job is None or not job.high_seen:
            return None
        assert job.relation is not None
        rows = job.rows
        if job.truncated:
            out: list[Row] = []
        elif job.changed:
            ki = job.key_index
            changed = job.changed
            out = [r for r in rows if tuple(r[i] for i in ki) not in changed]
        else:
            out = rows
        job.dropped += len(rows) - len(out)
        job.produced += len(out)
        job.last_key = job.next_key
        job.window = job.high_seen = job.truncated = False
        job.rows = []
        job.changed = set()
        rel = job.relation
        if job.full:
            self._write(LOW_PREFIX, job)
        else:
            self._finish(job)
        return rel, out

    def read_events(self, commit_lsn: Lsn, first: int, xid: int, commit_ts_us: int | None
                    ) -> tuple[Relation, list[ChangeEvent]] | None:
        """`take_reads` as op `r` events at `(commit_lsn, first)`, `(commit_lsn, first + 1)`, …"""
        taken = self.take_reads()
        if taken is None:
            return None
        rel, rows = taken
        return rel, [ChangeEvent(relation=rel, op=Op.READ, position=Position(commit_lsn, seq), xid=xid,
                                 commit_ts_us=commit_ts_us, before=None, after=row, snapshot=True)
                     for seq, row in enumerate(rows, first)]

    def release(self) -> list[InFlight]:
        """Ledger entries of requests whose resnapshot is done (or refused late): close them."""
        out, self._release = self._release, []
        return out

    def close(self) -> None:
        close_quietly(self._conn)
        self._conn = None

    # -- steps --------------------------------------------------------------------------------

    def _request(self, content: str, entry: InFlight) -> bool:
        try:
            request = parse_request(content)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring resnapshot request %r: %s", content, exc)
            return False
        if not self.include(request.schema, request.table):
            log.warning("ignoring resnapshot request for %s: not a replicated table", request.qualified,
                        extra={"table": request.qualified})
            return False
        self._jobs += 1
        job = _Job(self._jobs, request, entry)
        log.info("resnapshot of %s requested (job %d)", request.qualified, job.number,
                 extra={"table": request.qualified})
        self._queue.append(job)
        if self._job is None:
            self._start_next()
        return True

    def _start_next(self) -> None:
        while self._queue and self._job is None:
            job = self._queue.popleft()
            try:
                rel = self.relation_of(job.request.schema, job.request.table)
            except BridgeError as exc:
                log.warning("resnapshot of %s refused: %s", job.request.qualified, exc)
                self._release.append(job.held)
                continue
            if not rel.primary_key:
                log.warning("resnapshot of %s refused: the table has no primary key, so streamed changes "
                            "cannot be told apart from rows read", rel.qualified, extra={"table": rel.qualified})
                self._release.append(job.held)
                continue
            job.relation = rel
            job.reader = TableReader(rel, job.request.chunk_rows or self.chunk_rows)
            job.key_index = list(job.reader.key_index)
            self._job = job
            self._write(LOW_PREFIX, job)

    def _finish(self, job: _Job) -> None:
        log.info("resnapshot of %s done: %d rows produced, %d left to the stream (changed during a chunk), "
                 "%d chunks", job.request.qualified, job.produced, job.dropped, job.chunk,
                 extra={"table": job.request.qualified})
        self.completed.append((job.request.qualified, job.produced, job.dropped))
        self._release.append(job.held)
        self._job = None
        self._start_next()

    def _mark(self, job: _Job) -> str:
        return f"{self.token}:{job.number}:{job.chunk}"

    def _read_chunk(self, job: _Job) -> None:
        """At the low watermark: open the window, read the chunk, write the high watermark."""
        reader = job.reader
        assert reader is not None
        job.window = True
        job.changed = set()
        job.truncated = False
        job.rows, job.next_key = self._sql(lambda conn: reader.read_chunk(conn, job.last_key), job.request.qualified)
        job.full = len(job.rows) >= reader.chunk_rows
        self._write(HIGH_PREFIX, job, advance=False)

    def _write(self, prefix: str, job: _Job, advance: bool = True) -> None:
        if advance:
            job.chunk += 1
        mark = self._mark(job)
        self._sql(lambda conn: conn.execute(EMIT_SQL, (prefix, mark)),
                  job.request.qualified)

    def _sql(self, fn: Callable[[psycopg.Connection[Any]], Any], table: str) -> Any:
        """Run `fn` on the autocommit connection; reconnect and retry once when it fails."""
        for attempt in (1, 2):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                return fn(self._conn)
            except psycopg.Error as exc:
                self.close()
                if attempt == 2:
                    raise SourceError(f"resnapshot of {table}: {str(exc).strip()}", table=table,
                                      sqlstate=exc.sqlstate) from exc
                log.warning("resnapshot of %s: %s; reconnecting", table, str(exc).strip())
        raise AssertionError("unreachable")


__all__ = ["HIGH_PREFIX", "LOW_PREFIX", "REQUEST_PREFIX", "SNAPSHOT_MESSAGE", "SNAPSHOT_PREFIX", "ResnapshotRequest", "Resnapshotter", "emit_request",
           "parse_request", "parse_table_name"]
