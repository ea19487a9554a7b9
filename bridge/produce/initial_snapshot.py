"""The initial snapshot as an event source: every selected table's rows as op `r` events.

Called by the producer before streaming starts, when a snapshot is planned (a new slot created
with an exported snapshot, or the rest of an interrupted one). The rows go through the same
Router and Emitter as streamed changes, positioned `(consistent_point, seq)`, all in one ledger
entry at the consistent point. Guarantees: progress is saved after each chunk's records are
delivered (`plan.save` waits for them), so a crash resumes after the last completed chunk; a
resumed table skips the keys the dead run already delivered; on `stop` it returns early,
leaving the entry open, so the slot is not confirmed past the consistent point until the
snapshot is complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge import metrics, native
from bridge.ack.watermark import InFlight, Ledger
from bridge.codec.codec import Stamp
from bridge.errors import SourceError
from bridge.events import ChangeEvent, Op, Position, Row
from bridge.lsn import Lsn
from bridge.produce.acks import AckFollower
from bridge.produce.emitter import Emitter
from bridge.produce.outputs import TopicSet
from bridge.produce.router import Route, Router
from bridge.relation import Relation
from bridge.source.native_snapshot import NativeTableReader, Record
from bridge.source.snapshot import SnapshotState, TableProgress, TableReader, begin_snapshot_transaction

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SnapshotPlan:
    """What the snapshot reads: the state to continue, on which connection and snapshot."""

    state: SnapshotState
    conn: Any  # psycopg.Connection, a plain SQL connection to the source
    snapshot_name: str | None  # the exported snapshot, or None when resuming in a fresh one
    save: Callable[[SnapshotState], None]
    finished: Callable[[], None]  # releases the exporting replication connection
    chunk_rows: int = 10_000
    # resuming: (topic, partitions, consistent point, from seq, scan) -> (keys already there, top seq)
    delivered: Callable[[str, int, int, int, int], tuple[set[bytes], int]] | None = None


class InitialSnapshot:
    """Runs one `SnapshotPlan` through the Router and the Emitter."""

    def __init__(self, plan: SnapshotPlan, *, relation_of: Callable[[str, str], Relation], router: Router,
                 emitter: Emitter, ledger: Ledger, topics: TopicSet, follower: AckFollower) -> None:
        self.plan = plan
        self._relation_of = relation_of
        self._router = router
        self._emitter = emitter
        self._ledger = ledger
        self._topics = topics
        self._follower = follower

    @property
    def consistent_point(self) -> Lsn:
        return Lsn(self.plan.state.consistent_point)

    def run(self, stopped: Callable[[], bool]) -> bool:
        """Produce every table not done yet; True when the snapshot is complete (its entry closed,
        the exporting connection released), False when `stopped()` interrupted it."""
        plan, state = self.plan, self.plan.state
        cp = self.consistent_point
        entry = self._ledger.open(cp)
        begin_snapshot_transaction(plan.conn, plan.snapshot_name)
        remaining = [t for t in state.tables.values() if not t.done]
        metrics.SNAPSHOT_TABLES_REMAINING.set(len(remaining))
        log.info("snapshot: %d tables to read at %s", len(remaining), cp, extra={"position": str(cp)})
        for prog in remaining:
            if not self._table(prog, entry, stopped):
                return False
            prog.done = True
            plan.save(state)
            metrics.SNAPSHOT_TABLES_REMAINING.dec()
            log.info("snapshot: %s done, %d rows", f"{prog.schema}.{prog.table}", prog.rows,
                     extra={"table": f"{prog.schema}.{prog.table}"})
        plan.conn.execute("ROLLBACK")
        plan.finished()
        self._ledger.close(entry)
        return True

    def _table(self, prog: TableProgress, entry: InFlight, stopped: Callable[[], bool]) -> bool:
        """One table's chunks; False when `stop` interrupted it (after a saved chunk). Read with
        binary COPY and the native core when it covers the table (and `BRIDGE_NATIVE` is not
        off), else by the reference `TableReader`."""
        plan = self.plan
        rel = self._relation_of(prog.schema, prog.table)
        route = self._router.route(rel)
        present = self._resume(rel, prog, entry) if plan.delivered is not None and rel.primary_key else set()
        plan.delivered = None
        reader = NativeTableReader.plan(rel, route.codec, route.partitions, plan.chunk_rows) \
            if native.enabled() else None
        if reader is None:
            return self._reference_table(route, prog, entry, stopped, present)
        log.info("snapshot: %s read through binary COPY (native core)", rel.qualified, extra={"table": rel.qualified})
        if rel.primary_key:
            return self._native_keyed(reader, route, prog, entry, stopped, present)
        return self._native_keyless(reader, route, prog, entry, stopped)

    @staticmethod
    def _stamp(entry: InFlight) -> Stamp:
        return Stamp(entry.commit_lsn.value, 0, None, True, time.time_ns() // 1_000_000)

    def _reference_rows(self, route: Route, rows: list[Row], entry: InFlight, present: set[bytes]) -> None:
        """One chunk's converted rows through the Router and the Emitter (the reference path)."""
        state, rel = self.plan.state, route.relation
        batch = self._emitter.batch(entry, self._stamp(entry))
        for row in rows:
            if present and self._router.key(route, row) in present:
                continue
            seq = state.next_seq
            state.next_seq += 1
            route, records = self._router.records(self._event(rel, row, entry.commit_lsn, seq), batch.stamp)
            self._emitter.emit(batch, route, records, seq)

    def _send(self, route: Route, records: list[Record], entry: InFlight, stamp: Stamp) -> None:
        """One chunk's natively encoded records, numbered from the state's next seq."""
        state = self.plan.state
        self._emitter.emit_each(self._emitter.batch(entry, stamp), route, records, state.next_seq)
        state.next_seq += len(records)

    def _chunk_done(self, prog: TableProgress, rows: int, last_key: list[str] | None,
                    stopped: Callable[[], bool]) -> bool:
        """After a chunk's records were sent: progress saved (once they are delivered); False
        when `stop` interrupts the snapshot here."""
        prog.rows += rows
        prog.last_key = last_key
        metrics.SNAPSHOT_ROWS.labels(f"{prog.schema}.{prog.table}").inc(rows)
        self._emitter.flush(60.0)
        self._emitter.check()  # a failed delivery raises here, before the state says the chunk is done
        self.plan.save(self.plan.state)  # waits for the chunk's deliveries first, then writes the state
        self._follower.poll(0)
        if stopped():
            log.info("snapshot interrupted in %s after %d rows", f"{prog.schema}.{prog.table}", prog.rows)
            return False
        return True

    def _reference_table(self, route: Route, prog: TableProgress, entry: InFlight, stopped: Callable[[], bool],
                         present: set[bytes]) -> bool:
        plan = self.plan
        for rows, last_key in TableReader(route.relation, plan.chunk_rows).chunks(plan.conn, prog.last_key):
            self._reference_rows(route, rows, entry, present)
            if not self._chunk_done(prog, len(rows), last_key, stopped):
                return False
        return True

    def _native_keyed(self, reader: NativeTableReader, route: Route, prog: TableProgress, entry: InFlight,
                      stopped: Callable[[], bool], present: set[bytes]) -> bool:
        """Keyset chunks through binary COPY; a chunk the core misses is read by the reference.
        Pipelined: chunk N+1 is read while chunk N's records are delivered, and chunk N's
        progress is saved (after its deliveries) before chunk N+1 is sent."""
        plan = self.plan
        reader.core.skip(list(present))
        read_key, pending = prog.last_key, 0
        while True:
            stamp = self._stamp(entry)
            got = reader.read_chunk(plan.conn, read_key, plan.state.next_seq, stamp)
            if pending and not self._chunk_done(prog, pending, read_key, stopped):
                return False
            if got is None:
                rows, last = TableReader(route.relation, plan.chunk_rows).read_chunk(plan.conn, read_key)
                self._reference_rows(route, rows, entry, present)
                n = len(rows)
            else:
                records, n, last = got
                self._send(route, records, entry, stamp)
            if n == 0:
                return True
            if n < plan.chunk_rows:
                return self._chunk_done(prog, n, last, stopped)
            read_key, pending = last, n

    def _native_keyless(self, reader: NativeTableReader, route: Route, prog: TableProgress, entry: InFlight,
                        stopped: Callable[[], bool]) -> bool:
        """A table without a key in one binary COPY (pipelined as `_native_keyed`). A miss before
        any record was sent hands the table to the reference; after, it raises (the rows sent
        cannot be taken back)."""
        if prog.last_key is not None:
            return True  # read in one pass: it was finished
        pending = 0
        for chunk in reader.scan(self.plan.conn, self.plan.state.next_seq, lambda: self._stamp(entry)):
            if chunk is None:
                if pending:
                    raise SourceError(f"the native snapshot of {route.relation.qualified} met a value it cannot "
                                      "encode after rows were sent; BRIDGE_NATIVE=0 reads it on the reference path",
                                      table=route.relation.qualified)
                return self._reference_table(route, prog, entry, stopped, set())
            if pending and not self._chunk_done(prog, pending, None, stopped):
                return False
            stamp, records, pending = chunk
            self._send(route, records, entry, stamp)
        return not pending or self._chunk_done(prog, pending, None, stopped)

    def _resume(self, rel: Relation, prog: TableProgress, entry: InFlight) -> set[bytes]:
        """The dead run may have delivered part of the next chunk: the keys to skip (the rest
        is numbered after them, see `snapshot_state.delivered_after`)."""
        plan, state = self.plan, self.plan.state
        assert plan.delivered is not None
        route = self._router.route(rel)
        cp = entry.commit_lsn
        present, top = plan.delivered(route.topic, route.partitions, cp.value, state.next_seq, plan.chunk_rows)
        state.next_seq = top + 1
        log.info("snapshot: resuming %s after %s; %d rows of the interrupted chunk are already in Kafka",
                 rel.qualified, prog.last_key, len(present), extra={"table": rel.qualified})
        for p, tail in self._topics.tails(route.topic).items():
            if tail.position.commit_lsn == cp:  # the slot waits for those to be acked too
                self._ledger.present(entry, (route.topic, p), tail.position.seq)
        return present

    @staticmethod
    def _event(relation: Relation, row: Row, cp: Lsn, seq: int) -> ChangeEvent:
        return ChangeEvent(relation=relation, op=Op.READ, position=Position(cp, seq), xid=0, commit_ts_us=None,
                           before=None, after=row, snapshot=True)


__all__ = ["InitialSnapshot", "SnapshotPlan"]
