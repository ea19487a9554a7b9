"""The producer: slot → transactions → typed events → Avro → Kafka, and the slot confirm.

One loop, one thread (librdkafka delivery callbacks run inside `poll`, on this thread):

1. read what the capture has (waiting on its socket, never busy-polling);
2. assemble whole transactions (spilling big ones); at each COMMIT, give every change its
   position `(commit_lsn, seq)`, decode it with the relation's converters, encode key and
   envelope, and produce it to its table's topic and partition — unless that partition's tail
   already holds the position (restart after a crash: invariant 4);
3. account each record in the ledger; take delivery reports and sink acks;
4. confirm the slot up to the watermark — never further (invariant 1).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from bridge import metrics
from bridge.ack.channel import AckReader
from bridge.ack.watermark import InFlight, Ledger
from bridge.codec.codec import Stamp
from bridge.errors import (
    BridgeError,
    DecodeError,
    ModifierError,
    ProduceError,
    RecordTooLargeError,
    RegistryUnavailableError,
    SchemaRefusedError,
)
from bridge.events import Op, Position, Row
from bridge.lsn import Lsn
from bridge.produce.resnapshot import SNAPSHOT_MESSAGE, Resnapshotter
from bridge.produce.topics import (
    HEADER_LSN,
    HEADER_SEQ,
    HEADER_XID,
    Tail,
    TailReader,
    TopicManager,
    partition_for,
    position_from_headers,
)
from bridge.produce.transactions import Message as WalMessageLine
from bridge.produce.transactions import Transaction, TransactionAssembler
from bridge.relation import Relation
from bridge.signing import Signer
from bridge.source.capture import ChangeSource
from bridge.source.converters import timestamptz_us
from bridge.source.snapshot import SnapshotState, TableReader, begin_snapshot_transaction
from bridge.source.test_decoding import ChangeLine, MessageLine, TruncateLine, parse_line
from bridge.tables import TableFilter

log = logging.getLogger(__name__)

_HOLD_MAX_WAIT_S = 30.0  # a refused schema is asked for again after 1, 2, 4 ... at most 30 s


class _StoppedWhileHeld(Exception):
    """`stop` was set while the stream was held for a refused schema (caught by `run`)."""


class ChangeDecoderLike(Protocol):
    def decode(self, change: ChangeLine) -> tuple[Relation, Op, Any, Any, tuple[str, ...]]: ...

    def redecode(self, change: ChangeLine, *, from_line: bool = False
                 ) -> tuple[Relation, Op, Any, Any, tuple[str, ...]]: ...


class KeyWatchLike(Protocol):
    """Follows key changes no change line shows (`bridge.source.decoder.KeyWatch`)."""

    def tick(self) -> None: ...

    def before_commit(self, commit_lsn: Lsn) -> None: ...


class TableCodecLike(Protocol):
    def key(self, row: Any) -> bytes | None: ...

    def envelope(self, before: Row | None, after: Row | None, op: str, seq: int, stamp: Stamp,
                 unchanged: tuple[str, ...] = ()) -> bytes: ...


@dataclass(slots=True)
class SnapshotPlan:
    """What `run_snapshot` reads: the state to continue, on which connection and snapshot."""

    state: SnapshotState
    conn: Any  # psycopg.Connection, a plain SQL connection to the source
    snapshot_name: str | None  # the exported snapshot, or None when resuming in a fresh one
    save: Callable[[SnapshotState], None]
    finished: Callable[[], None]  # releases the exporting replication connection
    chunk_rows: int = 10_000
    # resuming: (topic, partitions, consistent point, from seq, scan) -> (keys already there, top seq)
    delivered: Callable[[str, int, int, int, int], tuple[set[bytes], int]] | None = None


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


Headers = list[tuple[str, str | bytes | None]]


class _TableOut:
    """Where one relation version's records go, looked up once per version: its codec, topic,
    partition count, the (topic, partition) pairs, the topic's partition tails (non-empty only
    after a restart), and counts not yet added to the metrics (added every confirm interval)."""

    __slots__ = ("captured", "codec", "partitions", "produced", "relation", "tails", "topic", "tps")

    def __init__(self, relation: Relation, codec: TableCodecLike, topic: str, partitions: int,
                 tails: dict[int, Tail]) -> None:
        self.relation = relation
        self.codec = codec
        self.topic = topic
        self.partitions = partitions
        self.tps = [(topic, p) for p in range(partitions)]
        self.tails = tails
        self.captured: dict[Op, int] = dict.fromkeys(Op, 0)
        self.produced = 0


class _Batch:
    """One ledger entry's records in the making (a transaction, a message, a snapshot chunk run):
    the entry, the stamp its envelopes share, its position headers and one delivery callback."""

    __slots__ = ("entry", "lsn_header", "on_delivery", "stamp", "xid_header")

    def __init__(self, producer: ChangeProducer, entry: InFlight, stamp: Stamp) -> None:
        self.entry = entry
        self.stamp = stamp
        self.lsn_header = str(entry.commit_lsn).encode()
        self.xid_header = str(stamp.xid).encode()
        self.on_delivery = producer._delivery_callback(entry)

    def headers(self, seq: int) -> Headers:
        return [(HEADER_LSN, self.lsn_header), (HEADER_SEQ, str(seq).encode()), (HEADER_XID, self.xid_header)]


class ChangeProducer:
    """Runs the producer loop until `stop` is set. Built by `cli.py` from its collaborators."""

    def __init__(
        self,
        *,
        open_source: Callable[[], ChangeSource],
        decoder: ChangeDecoderLike,
        relation_of: Callable[[str, str], Relation],
        codec_for: Callable[[Relation], TableCodecLike],
        producer: Producer,
        topics: TopicManager,
        tails: TailReader,
        ledger: Ledger,
        acks: AckReader | None,
        include: TableFilter,
        settings: ProducerSettings,
        heartbeat: Callable[[], object] | None = None,
        key_watch: KeyWatchLike | None = None,
        assembler: TransactionAssembler | None = None,
        slot: str = "",
        signer: Signer | None = None,
    ) -> None:
        self.open_source = open_source
        self.signer = signer
        self.source: ChangeSource | None = None
        self.snapshot: SnapshotPlan | None = None
        self.resnapshot: Resnapshotter | None = None  # set by cli.py: `pgbridge snapshot` requests
        self.decoder = decoder
        self.relation_of = relation_of
        self.codec_for = codec_for
        self.producer = producer
        self.topics = topics
        self.tail_reader = tails
        self.ledger = ledger
        self.acks = acks
        self.include = include
        self.s = settings
        self.heartbeat = heartbeat
        self.key_watch = key_watch
        self.assembler = assembler or TransactionAssembler()
        self.slot = slot
        self._tails: dict[str, dict[int, Tail]] = {}
        self._tails_until: Lsn | None = None  # the highest commit LSN among the loaded tails
        self._partitions: dict[str, int] = {}
        self._topic_of: dict[tuple[str, str], str] = {}
        self._outs: dict[int, _TableOut] = {}  # by id() of the relation version
        self._confirmed = ledger.watermark()
        self._last_lsn = self._confirmed
        self._last_confirm = 0.0
        self._last_activity = time.monotonic()
        self._reconnects = 0
        self.skipped_present = 0
        self.produced = 0
        self.fatal: BaseException | None = None
        self._stop = threading.Event()  # run()'s event, so a hold can end on SIGTERM
        self.held_for: str | None = None  # the subject a refused schema holds the stream for
        # called every 0.2 s while held: cli.py beats the liveness check with it (a held producer
        # is alive and must not be restarted, which would only meet the same refusal)
        self.hold_tick: Callable[[], None] = lambda: None

    # -- topics -----------------------------------------------------------------------------

    def _topic(self, schema: str, table: str) -> str:
        key = (schema, table)
        t = self._topic_of.get(key)
        if t is None:
            from bridge.codec.names import topic_name

            t = self._topic_of[key] = topic_name(self.s.topic_prefix, schema, table)
            n = self._partitions[t] = self.topics.ensure(t)
            tails = self._tails[t] = self.tail_reader.tails_with_kind(t, n)
            if tails:
                log.info("topic %s: resuming after tails %s", t,
                         {p: str(v.position) for p, v in tails.items()}, extra={"topic": t})
                top = max(v.position.commit_lsn for v in tails.values())
                if self._tails_until is None or top > self._tails_until:
                    self._tails_until = top
        return t

    def _out(self, relation: Relation) -> _TableOut:
        out = self._outs.get(id(relation))
        if out is None or out.relation is not relation:
            topic = self._topic(relation.schema, relation.table)
            out = self._outs[id(relation)] = _TableOut(relation, self._codec(relation), topic,
                                                       self._partitions[topic], self._tails[topic])
        return out

    def _codec(self, relation: Relation) -> TableCodecLike:
        """The relation version's codec; while the schema registry refuses its schema (the
        subject's compatibility level) or does not answer, hold the stream here and ask again.

        Called before anything of the change at hand is sent. Holding keeps every guarantee:
        the transaction's ledger entry stays open, so the slot is not confirmed past it, and
        nothing after it is produced out of order. Meanwhile delivery reports and acks are still
        taken. A restart would only meet the same refusal (a crash loop), so the producer stays
        up and says, at each attempt, which subject and level refused what and what to do. A
        replication connection that times out meanwhile is reopened by the capture afterwards;
        what the server then sends again up to this transaction is skipped (`_publish`).
        Raises `_StoppedWhileHeld` when `stop` is set during the hold.
        """
        delay = 1.0
        while True:
            try:
                codec = self.codec_for(relation)
            except (SchemaRefusedError, RegistryUnavailableError) as exc:
                self.held_for = str(exc.context.get("subject", relation.qualified))
                log.error("%s; holding the stream of slot %s at this transaction, next attempt in %.0fs",
                          exc, self.slot, delay, extra={"slot": self.slot, "table": relation.qualified})
                self._wait_held(delay)
                delay = min(delay * 2, _HOLD_MAX_WAIT_S)
                continue
            if self.held_for is not None:
                log.warning("schema accepted for %s: the stream goes on", relation.qualified,
                            extra={"table": relation.qualified})
                self.held_for = None
            return codec

    def _wait_held(self, seconds: float) -> None:
        """Wait `seconds` while taking delivery reports and acks; raise `_StoppedWhileHeld` on stop."""
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            self.hold_tick()
            self.producer.poll(0.2)
            if self.acks is not None:
                for ack in self.acks.poll(0):
                    self.ledger.acked((ack.topic, ack.partition), ack.position)
        if self._stop.is_set():
            raise _StoppedWhileHeld()

    def _passed_tails(self, commit_lsn: Lsn) -> None:
        """Records after every loaded tail cannot be in Kafka yet: stop checking tails."""
        if self._tails_until is not None and commit_lsn > self._tails_until:
            for tails in self._tails.values():
                tails.clear()  # in place: every _TableOut of the topic shares the dict
            self._tails_until = None

    def _flush_metrics(self) -> None:
        """Add the counts kept per table version to the labelled metrics (every confirm interval:
        a `Counter.inc` per record was ~10 % of the loop)."""
        for out in self._outs.values():
            for op, n in out.captured.items():
                if n:
                    metrics.CHANGES_CAPTURED.labels(out.relation.qualified, op.value).inc(n)
                    out.captured[op] = 0
            if out.produced:
                metrics.RECORDS_PRODUCED.labels(out.topic).inc(out.produced)
                self.produced += out.produced
                out.produced = 0

    def _delivery_callback(self, entry: InFlight) -> Callable[[KafkaError | None, Message], None]:
        """The delivery report handler of one ledger entry's records (one closure per entry)."""
        ledger = self.ledger

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                ledger.delivered(entry, True)
                return
            ledger.delivered(entry, False)
            if self.fatal is None:
                metrics.PRODUCE_ERRORS.inc()
                pos = position_from_headers(msg.headers())
                if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    out = self._out_of_topic(msg.topic() or "")
                    self.fatal = self._too_large(out, msg.key(), msg.value(), "the broker's", None,
                                                 partition=msg.partition(), position=str(pos) if pos else None)
                    return
                self.fatal = ProduceError(f"delivery failed: {err}", topic=msg.topic(), partition=msg.partition(),
                                          position=str(pos))

        return on_delivery

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Snapshot (if planned), then stream until `stop`; then drain and confirm what is safe."""
        if self.acks is not None:
            for ack in self.acks.read_to_end():
                self.ledger.acked((ack.topic, ack.partition), ack.position)
        metrics.UP.labels("producer").set(1)
        self._stop = stop
        try:
            try:
                if self.snapshot is not None:
                    self.run_snapshot(self.snapshot, stop)
                    self.snapshot = None
                if not stop.is_set():
                    self.source = self.open_source()
                    self._reconnects = getattr(self.source, "reconnects", 0)
                while not stop.is_set():
                    self.step()
            except _StoppedWhileHeld:
                log.warning("stopped while held for the schema of %s; it is asked for again at the next start",
                            self.held_for)
            self.drain()
        finally:
            metrics.UP.labels("producer").set(0)
            if self.source is not None:
                self.source.close()

    def run_snapshot(self, plan: SnapshotPlan, stop: threading.Event) -> None:
        """Produce every selected table's rows as op `r` events at `(consistent_point, seq)`.

        Called before streaming starts. Progress is saved after each chunk's records are
        delivered, so a crash resumes after the last completed chunk. On `stop` it returns
        early, leaving its ledger entry open: the slot is not confirmed past the consistent
        point until the snapshot is complete."""
        state = plan.state
        cp = Lsn(state.consistent_point)
        entry = self.ledger.open(cp)
        self._last_lsn = max(self._last_lsn, cp)
        begin_snapshot_transaction(plan.conn, plan.snapshot_name)
        remaining = [t for t in state.tables.values() if not t.done]
        metrics.SNAPSHOT_TABLES_REMAINING.set(len(remaining))
        log.info("snapshot: %d tables to read at %s", len(remaining), cp, extra={"position": str(cp)})
        for prog in remaining:
            rel = self.relation_of(prog.schema, prog.table)
            reader = TableReader(rel, plan.chunk_rows)
            out = self._out(rel)
            codec, topic, n = out.codec, out.topic, out.partitions
            present: set[bytes] = set()
            if plan.delivered is not None and rel.primary_key:
                # The dead run may have delivered part of the next chunk: skip those keys, number
                # the rest after them (see snapshot_state.delivered_after).
                present, top = plan.delivered(topic, n, cp.value, state.next_seq, plan.chunk_rows)
                state.next_seq = top + 1
                log.info("snapshot: resuming %s after %s; %d rows of the interrupted chunk are already in Kafka",
                         rel.qualified, prog.last_key, len(present), extra={"table": rel.qualified})
                for p, tail in out.tails.items():
                    if tail.position.commit_lsn == cp:  # the slot waits for those to be acked too
                        self.ledger.present(entry, (topic, p), tail.position.seq)
            plan.delivered = None
            for rows, last_key in reader.chunks(plan.conn, prog.last_key):
                batch = _Batch(self, entry, Stamp(cp.value, 0, None, True, time.time_ns() // 1_000_000))
                for row in rows:
                    key = codec.key(row)
                    if present and key in present:
                        continue
                    seq = state.next_seq
                    state.next_seq += 1
                    value = codec.envelope(None, row, Op.READ, seq, batch.stamp)
                    self._send(batch, out, partition_for(key, n), key, value, batch.headers(seq), seq)
                prog.rows += len(rows)
                prog.last_key = last_key
                metrics.SNAPSHOT_ROWS.labels(rel.qualified).inc(len(rows))
                plan.save(state)  # waits for the chunk's deliveries first
                if self.acks is not None:
                    for ack in self.acks.poll(0):
                        self.ledger.acked((ack.topic, ack.partition), ack.position)
                if stop.is_set():
                    log.info("snapshot interrupted in %s after %d rows", rel.qualified, prog.rows)
                    return
            prog.done = True
            plan.save(state)
            metrics.SNAPSHOT_TABLES_REMAINING.dec()
            log.info("snapshot: %s done, %d rows", rel.qualified, prog.rows, extra={"table": rel.qualified})
        plan.conn.execute("ROLLBACK")
        plan.finished()
        self.ledger.close(entry)

    def step(self) -> None:
        """One turn of the loop: read, produce, collect reports and acks, maybe confirm."""
        if self.fatal is not None:
            raise self.fatal
        if self.source is None:
            raise ProduceError("step() before the capture was opened (run() opens it)")
        if self.ledger.records_in_flight >= self.s.max_records_in_flight:
            self.producer.poll(0.05)  # back-pressure: let deliveries catch up
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
        self.producer.poll(0)
        if self.acks is not None:
            for ack in self.acks.poll(0):
                self.ledger.acked((ack.topic, ack.partition), ack.position)
                metrics.ACKED_LSN.set(ack.position.commit_lsn.value)
        if self.s.confirm_idle and self.ledger.in_flight == 0 and not self.assembler.in_transaction:
            idle = self.source.server_wal_end
            if idle > self._last_lsn:
                self._last_lsn = idle
                self.ledger.advance_idle(idle)
        self._maybe_heartbeat()
        self._maybe_confirm()
        if self.fatal is not None:
            raise self.fatal

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

    def drain(self) -> None:
        """SIGTERM: finish in-flight deliveries (bounded), confirm what is safe."""
        deadline = time.monotonic() + self.s.drain_timeout_s
        while self.ledger.records_in_flight and time.monotonic() < deadline:
            self.producer.poll(0.1)
            if self.acks is not None:
                for ack in self.acks.poll(0):
                    self.ledger.acked((ack.topic, ack.partition), ack.position)
        self.producer.flush(max(0.0, deadline - time.monotonic()))
        self._maybe_confirm(force=True)

    # -- messages and transactions -----------------------------------------------------------

    def _message(self, msg: WalMessageLine) -> None:
        """A non-transactional logical message (a heartbeat): a position with no records.

        Decoding emits it between the transactions that committed before and after it, so
        its LSN keeps the ledger in commit order."""
        if msg.lsn > self._last_lsn:
            self._last_lsn = msg.lsn
            entry = self.ledger.open(msg.lsn)
            hold = False
            if self.resnapshot is not None and SNAPSHOT_MESSAGE in msg.line[:80]:
                parsed = parse_line(msg.line)
                if isinstance(parsed, MessageLine):
                    hold = self.resnapshot.on_message(parsed, entry)
                self._resnapshot_end(_Batch(self, entry, Stamp(msg.lsn.value, 0, None, False, _now_ms())), 0)
            if not hold:
                self.ledger.close(entry)

    def _publish(self, txn: Transaction) -> None:
        if txn.commit_lsn <= self._last_lsn:
            # Re-sent after a capture reconnect: already produced (or in flight) in this session.
            txn.discard()
            return
        self._last_lsn = txn.commit_lsn
        self._passed_tails(txn.commit_lsn)
        if self.key_watch is not None:
            self.key_watch.before_commit(txn.commit_lsn)
        metrics.TRANSACTIONS.inc()
        entry = self.ledger.open(txn.commit_lsn)
        xid = txn.xid or 0
        batch = _Batch(self, entry, Stamp(txn.commit_lsn.value, xid, _commit_ts(txn.commit_ts), False, _now_ms()))
        include, change = self.include, self._change
        seq = 0
        hold = False  # a resnapshot request keeps its entry open until the table is read
        decoded_bytes = 0  # counted once per transaction, not per line
        # native core (#15): a decoder with a native `encode` encodes whole changes in Rust; a
        # miss (None) takes the reference path below. Not while a resnapshot window needs rows.
        native_encode: Callable[[str, int, Stamp], Any] | None = getattr(self.decoder, "encode", None)
        try:
            for line in txn.lines():
                decoded_bytes += len(line)
                if native_encode is not None and (self.resnapshot is None or not self.resnapshot.active):
                    done = native_encode(line, seq, batch.stamp)
                    if done is not None:
                        self._emit_native(batch, seq, *done)
                        seq += 1
                        continue
                parsed = parse_line(line)
                if parsed.__class__ is ChangeLine:
                    if include(parsed.schema, parsed.table):
                        change(batch, parsed, seq)
                    seq += 1
                elif isinstance(parsed, TruncateLine):
                    for schema, table in parsed.relations:
                        if include(schema, table):
                            self._truncate(batch, schema, table, seq)
                    seq += 1
                elif isinstance(parsed, MessageLine):
                    if self.resnapshot is not None and self.resnapshot.on_message(parsed, entry):
                        hold = True
                else:
                    raise DecodeError("unexpected line inside a transaction", line=line[:200], offset=0)
            if self.resnapshot is not None:
                self._resnapshot_end(batch, seq)
        except BridgeError as exc:
            exc.context.setdefault("xid", xid)
            exc.context.setdefault("commit_lsn", str(txn.commit_lsn))
            raise
        finally:
            metrics.DECODED_BYTES.inc(decoded_bytes)
            txn.discard()
        if not hold:
            self.ledger.close(entry)

    def _resnapshot_end(self, batch: _Batch, seq: int) -> None:
        """After a transaction or message: produce a finished resnapshot chunk's rows in its
        entry from `seq` on, and close the entries of finished resnapshot requests."""
        assert self.resnapshot is not None
        reads = self.resnapshot.take_reads()
        if reads is not None:
            self._reads(batch, reads[0], reads[1], seq)
        for held in self.resnapshot.release():
            self.ledger.close(held)

    def _reads(self, batch: _Batch, relation: Relation, rows: list[Any], first: int) -> None:
        """A resnapshot chunk's rows as op `r` events at seq `first`, `first + 1`, … of `batch`."""
        out = self._out(relation)
        stamp = Stamp(batch.stamp.commit_lsn, batch.stamp.xid, batch.stamp.commit_ts_us, True, batch.stamp.ts_ms)
        for seq, row in enumerate(rows, first):
            key = out.codec.key(row)
            value = out.codec.envelope(None, row, Op.READ, seq, stamp)
            self._send(batch, out, partition_for(key, out.partitions), key, value, batch.headers(seq), seq)
        metrics.SNAPSHOT_ROWS.labels(relation.qualified).inc(len(rows))

    def _change(self, batch: _Batch, change: ChangeLine, seq: int) -> None:
        try:
            self._emit(batch, seq, self.decoder.decode(change))
        except ModifierError as exc:
            # A value longer or more precise than the relation allows: the column was widened
            # by a DDL the lines do not show. Re-read the table (nothing of this change was sent).
            log.info("%s; re-reading %s.%s from the catalog", exc, change.schema, change.table)
            try:
                self._emit(batch, seq, self.decoder.redecode(change))
            except ModifierError:
                self._emit(batch, seq, self.decoder.redecode(change, from_line=True))

    def _emit(self, batch: _Batch, seq: int, decoded: tuple[Relation, Op, Row | None, Row | None, tuple[str, ...]]
              ) -> None:
        """Encode one decoded change's records, then send them (all encoded before any is sent,
        so an encoding error leaves nothing half-sent)."""
        relation, op, before, after, unchanged = decoded
        if self.resnapshot is not None:
            self.resnapshot.observe(relation, before, after)
        out = self._outs.get(id(relation))
        if out is None or out.relation is not relation:
            out = self._out(relation)
        codec = out.codec
        key = codec.key(after if after is not None else before)
        partition = partition_for(key, out.partitions)
        captured = op
        gone: tuple[int, bytes | None, bytes] | None = None
        if op is Op.UPDATE and before is not None and after is not None and relation.primary_key:
            old_key = codec.key(before)
            old_partition = partition_for(old_key, out.partitions)
            if old_key != key and old_partition != partition:
                # A primary-key change across partitions: the old key's earlier changes are in
                # its own partition, so its end must be there too, in order — a delete of the old
                # key there and a create of the new key here (same position, one per partition).
                gone = (old_partition, old_key, codec.envelope(before, None, Op.DELETE, seq, batch.stamp))
                op, before = Op.INSERT, None
        value = codec.envelope(before, after, op, seq, batch.stamp, unchanged)
        out.captured[captured] += 1
        headers = batch.headers(seq)
        if gone is not None:
            self._send(batch, out, gone[0], gone[1], gone[2], headers, seq)
            if self.s.tombstones:
                self._send(batch, out, gone[0], gone[1], None, headers, seq)
        self._send(batch, out, partition, key, value, headers, seq)
        if op is Op.DELETE and self.s.tombstones and key is not None:
            self._send(batch, out, partition, key, None, headers, seq)

    def _emit_native(self, batch: _Batch, seq: int, relation: Relation, op: Op, key: bytes | None,
                     value: bytes) -> None:
        """Send one change the native core encoded (native core, #15): as `_emit` for an
        INSERT, an UPDATE that keeps its key, or a DELETE (key changes are left to `_emit`)."""
        if not self.include(relation.schema, relation.table):
            return
        out = self._outs.get(id(relation))
        if out is None or out.relation is not relation:
            out = self._out(relation)
        out.captured[op] += 1
        partition = partition_for(key, out.partitions)
        headers = batch.headers(seq)
        self._send(batch, out, partition, key, value, headers, seq)
        if op is Op.DELETE and self.s.tombstones and key is not None:
            self._send(batch, out, partition, key, None, headers, seq)

    def _truncate(self, batch: _Batch, schema: str, table: str, seq: int) -> None:
        relation = self.relation_of(schema, table)
        if self.resnapshot is not None:
            self.resnapshot.observe_truncate(schema, table)
        out = self._out(relation)
        value = out.codec.envelope(None, None, Op.TRUNCATE, seq, batch.stamp)
        headers = batch.headers(seq)
        out.captured[Op.TRUNCATE] += 1
        # Every partition gets the truncate, so each partition's consumer sees it in order.
        for partition in range(out.partitions):
            self._send(batch, out, partition, None, value, headers, seq)

    def _send(self, batch: _Batch, out: _TableOut, partition: int, key: bytes | None, value: bytes | None,
              headers: Headers, seq: int) -> None:
        ledger = self.ledger
        if out.tails:  # after a restart, until the stream has passed every partition's tail
            tail = out.tails.get(partition)
            if tail is not None and tail.covers(Position(batch.entry.commit_lsn, seq), value is None):
                ledger.present(batch.entry, out.tps[partition], seq)
                self.skipped_present += 1
                return
        while ledger.records_in_flight >= self.s.max_records_in_flight:
            # Back-pressure inside a transaction too: without it a 1,000,000-row transaction
            # sits whole in the client's queue (over 1 GB of RSS, invariant 6).
            self.producer.poll(0.05)
            if self.fatal is not None:
                raise self.fatal
        if self.signer is not None:
            headers = [*headers, self.signer.header(out.topic, partition, key, value)]
        while True:
            try:
                self.producer.produce(out.topic, value, key, partition=partition, on_delivery=batch.on_delivery,
                                      headers=headers)
                break
            except BufferError:
                self.producer.poll(0.05)  # the client's queue is full: wait for deliveries
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise self._too_large(out, key, value, "the producer's", self.s.message_max_bytes,
                                          partition=partition, position=str(Position(batch.entry.commit_lsn, seq))
                                          ) from exc
                raise ProduceError(f"the Kafka client refused a record: {exc}", topic=out.topic,
                                   partition=partition) from exc
        ledger.sent(batch.entry, out.tps[partition], seq)
        out.produced += 1


    def _out_of_topic(self, topic: str) -> _TableOut | None:
        for out in self._outs.values():
            if out.topic == topic:
                return out
        return None

    def _too_large(self, out: _TableOut | None, key: bytes | None, value: bytes | None, whose: str,
                   limit: int | None, **context: Any) -> RecordTooLargeError:
        """The error for a record over a size limit: one line naming table, key, size, limit and
        what to raise. The record's transaction stays unconfirmed, so a restart after raising
        the limits produces it again (nothing is lost)."""
        size = len(key or b"") + len(value or b"")
        table = out.relation.qualified if out is not None else None
        where = f"{whose} limit" + (f" of {limit} bytes" if limit is not None else "")
        return RecordTooLargeError(
            f"a record of {size} bytes for table {table} is over {where}: raise "
            'kafka.config."message.max.bytes" (the producer\'s limit) and the topic\'s max.message.bytes '
            "(or the broker's message.max.bytes) above it, then restart; the slot is not advanced past "
            "this change",
            table=table, key=_key_text(out, key), size=size, limit=limit,
            topic=out.topic if out is not None else None, **context)


def _key_text(out: _TableOut | None, key: bytes | None) -> str | None:
    """The key's column values for a log line (decoded from its Avro body), else its hex."""
    if key is None:
        return None
    codec: Any = out.codec if out is not None else None
    schema = getattr(codec, "key_schema", None)
    prefix = getattr(codec, "key_prefix", None)
    if schema is not None and prefix is not None and key.startswith(prefix):
        try:
            import io

            import fastavro

            return str(fastavro.schemaless_reader(io.BytesIO(key[len(prefix):]), fastavro.parse_schema(schema)))
        except Exception:  # only for the message: fall back to the bytes
            pass
    return key.hex()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _commit_ts(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return timestamptz_us(text)
    except (DecodeError, ValueError):
        return None


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


__all__ = ["ChangeProducer", "ProducerSettings", "TableFilter", "kafka_producer_config"]
