"""The producer: capture → source transactions → decode → route → emit, and the slot confirm.

A chain of stages wired at construction (`bridge.produce.factory.build_change_producer`), run on
one thread (librdkafka delivery callbacks run inside `poll`, on this thread):

1. read what the capture has (waiting on its socket, never busy-polling);
2. assemble whole transactions (`bridge.source.transactions`: spilling big ones);
3. decode each into `ChangeEvent`s positioned `(commit_lsn, seq)` (`Decoder`);
4. turn each event into records (`Router`: pure) and send them (`Emitter`: tails, back-pressure,
   the ledger) — unless the partition's tail already holds the position (invariant 4);
5. take delivery reports and sink acks (`AckFollower`);
6. confirm the slot up to the watermark — never further (invariant 1).

Snapshot and resnapshot rows are event sources of their own feeding the same Router and Emitter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Protocol

from bridge import metrics
from bridge.ack.watermark import InFlight, Ledger
from bridge.codec.codec import Stamp
from bridge.errors import BridgeError, ModifierError, ProduceError
from bridge.events import ChangeEvent
from bridge.lsn import Lsn
from bridge.produce.acks import AckFollower
from bridge.produce.decode import Decoder
from bridge.produce.emitter import Batch, Emitter
from bridge.produce.hold import SchemaHold, StoppedWhileHeld, StopSignal
from bridge.produce.initial_snapshot import InitialSnapshot
from bridge.produce.resnapshot import SNAPSHOT_PREFIX, Resnapshotter
from bridge.produce.router import Out, Route, Router
from bridge.source.capture import ChangeSource
from bridge.source.lines import MessageLine
from bridge.source.transactions import Message, Transaction, TransactionAssembler
from bridge.tables import TableFilter

log = logging.getLogger(__name__)


class KeyWatchLike(Protocol):
    """Follows key changes no change line shows (`bridge.source.decoder.KeyWatch`)."""

    def tick(self) -> None: ...

    def before_commit(self, commit_lsn: Lsn) -> None: ...


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    topic_prefix: str
    db: str
    tombstones: bool = True
    heartbeat_interval_s: float = 10.0
    confirm_interval_s: float = 0.5
    read_timeout_s: float = 0.1
    max_records_in_flight: int = 200_000
    drain_timeout_s: float = 30.0
    # stream capture only: with nothing in flight and no transaction open, the server's sent
    # position (keepalive walEnd) may be confirmed — every commit before it has been received.
    # (In sql mode pg_current_wal_lsn() may be ahead of commits not yet peeked: never.)
    confirm_idle: bool = False
    # librdkafka's `message.max.bytes` (kafka.config may raise it): named in the error when a
    # record is over it.
    message_max_bytes: int = 1_000_000


@dataclass(frozen=True, slots=True)
class Stages:
    """The producer's stages and their shared state, built by `build_change_producer`."""

    assembler: TransactionAssembler
    decoder: Decoder
    router: Router
    emitter: Emitter
    follower: AckFollower
    ledger: Ledger
    hold: SchemaHold


class ChangeProducer:
    """Runs the producer loop until `stop` is set. Built by `bridge.produce.factory`."""

    def __init__(self, *, open_source: Callable[[], ChangeSource], stages: Stages, settings: ProducerSettings,
                 stop: StopSignal, snapshot: InitialSnapshot | None = None,
                 resnapshot: Resnapshotter | None = None, key_watch: KeyWatchLike | None = None,
                 heartbeat: Callable[[], object] | None = None, tick: Callable[[], None] = lambda: None,
                 slot: str = "") -> None:
        self.open_source = open_source
        self.stages = stages
        self.assembler, self.decoder, self.router = stages.assembler, stages.decoder, stages.router
        self.emitter, self.follower, self.ledger = stages.emitter, stages.follower, stages.ledger
        self.s = settings
        self.stop = stop
        self.snapshot = snapshot
        self.resnapshot = resnapshot
        self.key_watch = key_watch
        self.heartbeat = heartbeat
        self.tick = tick  # every turn of the loop (cli: the liveness beat, the slot watcher)
        self.slot = slot
        self.source: ChangeSource | None = None
        self._confirmed = self.ledger.watermark()
        self._last_lsn = self._confirmed
        self._last_confirm = 0.0
        self._last_activity = time.monotonic()
        self._reconnects = 0
        self.produced = 0

    @property
    def held_for(self) -> str | None:
        """The schema registry subject a refused schema holds the stream for, or None."""
        return self.stages.hold.held_for

    @property
    def skipped_present(self) -> int:
        return self.emitter.skipped_present

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Snapshot (if planned), then stream until `stop`; then drain and confirm what is safe."""
        self.stop.watch(stop)
        self.follower.catch_up()
        metrics.UP.labels("producer").set(1)
        try:
            try:
                self._run_snapshot()
                if not self.stop.is_set():
                    self.source = self.open_source()
                    self._reconnects = getattr(self.source, "reconnects", 0)
                while not self.stop.is_set():
                    self.step()
            except StoppedWhileHeld:
                log.warning("stopped while held for the schema of %s; it is asked for again at the next start",
                            self.held_for)
            self.drain()
        finally:
            metrics.UP.labels("producer").set(0)
            if self.source is not None:
                self.source.close()

    def _run_snapshot(self) -> None:
        """The planned initial snapshot, before streaming (its rows sort before every change)."""
        if self.snapshot is None:
            return
        self._last_lsn = max(self._last_lsn, self.snapshot.consistent_point)
        if self.snapshot.run(self.stop.is_set):
            self.snapshot = None

    def step(self) -> None:
        """One turn of the loop: read, produce, collect reports and acks, maybe confirm."""
        self.tick()
        self.emitter.check()
        if self.source is None:
            raise ProduceError("step() before the capture was opened (run() opens it)")
        if self.ledger.records_in_flight >= self.s.max_records_in_flight:
            self.follower.poll(0.05)  # back-pressure: let deliveries catch up
            batch = []
        else:
            batch = self.source.read(self.s.read_timeout_s)
        if self.key_watch is not None:
            self.key_watch.tick()
        reconnects = getattr(self.source, "reconnects", 0)
        if reconnects != self._reconnects:
            # The server resends from the confirmed position: drop the half-read transaction.
            self._reconnects = reconnects
            self.assembler.reset()
        for msg in batch:
            done = self.assembler.feed(msg.lsn, msg.data)
            if done is None:
                continue
            if isinstance(done, Transaction):
                self._publish(done)
            else:
                self._message(done)
            self._last_activity = time.monotonic()
        self.follower.poll(0)
        if self.s.confirm_idle and self.ledger.in_flight == 0 and not self.assembler.in_transaction:
            idle = self.source.server_wal_end
            if idle > self._last_lsn:
                self._last_lsn = idle
                self.ledger.advance_idle(idle)
        self._maybe_heartbeat()
        self._maybe_confirm()
        self.emitter.check()

    def drain(self) -> None:
        """SIGTERM: finish in-flight deliveries (bounded), confirm what is safe."""
        deadline = time.monotonic() + self.s.drain_timeout_s
        while self.ledger.records_in_flight and time.monotonic() < deadline:
            self.follower.poll(0.1)
        self.emitter.flush(max(0.0, deadline - time.monotonic()))
        self._maybe_confirm(force=True)

    def _maybe_heartbeat(self) -> None:
        if self.heartbeat is None:
            return
        now = time.monotonic()
        if now - self._last_activity >= self.s.heartbeat_interval_s:
            self._last_activity = now
            self.heartbeat()
            metrics.HEARTBEATS.inc()

    def _maybe_confirm(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_confirm < self.s.confirm_interval_s:
            return
        self._last_confirm = now
        self._flush_metrics()
        wm = self.ledger.watermark()
        metrics.WATERMARK_LSN.set(wm.value)
        if wm > self._confirmed and self.source is not None:
            self.source.confirm(wm)
            self._confirmed = wm
            metrics.SLOT_CONFIRMED_LSN.labels(self.slot).set(wm.value)
            metrics.LAST_PROGRESS.labels("producer").set(time.time())

    def _flush_metrics(self) -> None:
        """Add the counts kept per table version to the labelled metrics (every confirm interval:
        a `Counter.inc` per record was ~10 % of the loop)."""
        for route in self.router.routes():
            for op, n in route.captured.items():
                if n:
                    metrics.CHANGES_CAPTURED.labels(route.relation.qualified, op.value).inc(n)
                    route.captured[op] = 0
            if route.produced:
                metrics.RECORDS_PRODUCED.labels(route.topic).inc(route.produced)
                self.produced += route.produced
                route.produced = 0

    # -- messages and transactions -----------------------------------------------------------

    def _message(self, msg: Message) -> None:
        """A non-transactional logical message (a heartbeat, a resnapshot watermark): a position
        with no records of its own. Decoding emits it between the transactions that committed
        before and after it, so its LSN keeps the ledger in commit order."""
        if msg.lsn <= self._last_lsn:
            return
        self._last_lsn = msg.lsn
        entry = self.ledger.open(msg.lsn)
        hold = False
        if self.resnapshot is not None and msg.message.prefix.startswith(SNAPSHOT_PREFIX):
            hold = self.resnapshot.on_message(msg.message, entry)
            self._resnapshot_end(self._batch(entry, 0, None), 0)
        if not hold:
            self.ledger.close(entry)

    def _batch(self, entry: InFlight, xid: int, commit_ts_us: int | None) -> Batch:
        return self.emitter.batch(entry, Stamp(entry.commit_lsn.value, xid, commit_ts_us, False,
                                               time.time_ns() // 1_000_000))

    def _publish(self, txn: Transaction) -> None:
        """One committed transaction: its events through the Router and the Emitter, in one
        ledger entry (kept open while a resnapshot it requested runs)."""
        if txn.commit_lsn <= self._last_lsn:
            # Re-sent after a capture reconnect: already produced (or in flight) in this session.
            txn.discard()
            return
        self._last_lsn = txn.commit_lsn
        self.emitter.passed(txn.commit_lsn)
        if self.key_watch is not None:
            self.key_watch.before_commit(txn.commit_lsn)
        metrics.TRANSACTIONS.inc()
        entry = self.ledger.open(txn.commit_lsn)
        batch = self._batch(entry, txn.xid or 0, txn.commit_ts_us)
        try:
            hold = self._events(batch, txn)
        except BridgeError as exc:
            exc.context.setdefault("xid", txn.xid or 0)
            exc.context.setdefault("commit_lsn", str(txn.commit_lsn))
            raise
        finally:
            txn.discard()
        if not hold:
            self.ledger.close(entry)

    def _events(self, batch: Batch, txn: Transaction) -> bool:
        """Route and emit every event of `txn`; True when a resnapshot request holds its entry."""
        router, emitter, resnap = self.router, self.emitter, self.resnapshot
        hold = False
        # the native core encodes whole changes, except while a resnapshot window needs the rows
        stamp = batch.stamp if resnap is None or not resnap.active else None
        with closing(self.decoder.events(txn, stamp)) as events:
            for event in events:
                if type(event) is tuple:
                    relation, op, key, value, seq, key_hash = event
                    route, records = router.encoded(relation, op, key, value, key_hash)
                    emitter.emit(batch, route, records, seq)
                elif type(event) is ChangeEvent:
                    if resnap is not None:
                        resnap.observe_event(event)
                    try:
                        route, records = router.records(event, batch.stamp)
                    except ModifierError as exc:
                        route, records = self._redecode(event, batch.stamp, exc)
                    emitter.emit(batch, route, records, event.position.seq)
                elif isinstance(event, MessageLine) and resnap is not None:
                    hold = resnap.on_message(event, batch.entry) or hold
        if resnap is not None:
            self._resnapshot_end(batch, self.decoder.positions)
        return hold

    def _redecode(self, event: ChangeEvent, stamp: Stamp, exc: ModifierError) -> tuple[Route, list[Out]]:
        """A value longer or more precise than the relation allows: the column was widened by a
        DDL the lines do not show. Re-read the table (nothing of this change was sent)."""
        log.info("%s; re-reading %s from the catalog", exc, event.relation.qualified)
        try:
            return self.router.records(self.decoder.retry(event), stamp)
        except ModifierError:
            return self.router.records(self.decoder.retry(event, from_line=True), stamp)

    def _resnapshot_end(self, batch: Batch, seq: int) -> None:
        """After a transaction or message: produce a finished resnapshot chunk's rows in its
        entry from `seq` on, and close the entries of finished resnapshot requests."""
        assert self.resnapshot is not None
        stamp = batch.stamp
        taken = self.resnapshot.read_events(Lsn(stamp.commit_lsn), seq, stamp.xid, stamp.commit_ts_us)
        if taken is not None:
            relation, reads = taken
            snap = Stamp(stamp.commit_lsn, stamp.xid, stamp.commit_ts_us, True, stamp.ts_ms)
            for event in reads:
                route, records = self.router.records(event, snap)
                self.emitter.emit(batch, route, records, event.position.seq)
            metrics.SNAPSHOT_ROWS.labels(relation.qualified).inc(len(reads))
        for held in self.resnapshot.release():
            self.ledger.close(held)


def kafka_producer_config(bootstrap: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka settings for the change producer. `extra` (kafka.config) wins."""
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,  # no duplicates or reordering from retries
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,  # batches of thousands of records at full rate, 20 ms at worst when idle
        "batch.num.messages": 20_000,
        "batch.size": 4 << 20,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1 << 20,  # 1 GiB
        "message.timeout.ms": 0,  # never give a record up: a broker outage is waited out
        **(extra or {}),
    }


__all__ = ["ChangeProducer", "ProducerSettings", "Stages", "TableFilter", "kafka_producer_config"]
