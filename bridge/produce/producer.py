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

import fnmatch
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from bridge import metrics
from bridge.ack.channel import AckReader
from bridge.ack.watermark import InFlight, Ledger
from bridge.errors import BridgeError, DecodeError, ProduceError
from bridge.events import ChangeEvent, Op, Position
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
)
from bridge.produce.transactions import Message as WalMessageLine
from bridge.produce.transactions import Transaction, TransactionAssembler
from bridge.relation import Relation
from bridge.source.capture import ChangeSource
from bridge.source.converters import timestamptz_us
from bridge.source.snapshot import SnapshotState, TableReader, begin_snapshot_transaction
from bridge.source.test_decoding import ChangeLine, MessageLine, TruncateLine, parse_line

log = logging.getLogger(__name__)


class ChangeDecoderLike(Protocol):
    def decode(self, change: ChangeLine) -> tuple[Relation, Op, Any, Any, tuple[str, ...]]: ...


class TableCodecLike(Protocol):
    def key(self, row: Any) -> bytes | None: ...

    def value(self, event: ChangeEvent) -> bytes: ...


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


class TableFilter:
    """Include/exclude globs over `schema.table` (unquoted names), decided once per table."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self.include = list(include)
        self.exclude = list(exclude)
        self._cache: dict[tuple[str, str], bool] = {}

    def __call__(self, schema: str, table: str) -> bool:
        key = (schema, table)
        hit = self._cache.get(key)
        if hit is None:
            name = f"{schema}.{table}"
            hit = any(fnmatch.fnmatchcase(name, p) for p in self.include) and not any(
                fnmatch.fnmatchcase(name, p) for p in self.exclude)
            self._cache[key] = hit
        return hit


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
        assembler: TransactionAssembler | None = None,
        slot: str = "",
    ) -> None:
        self.open_source = open_source
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
        self.assembler = assembler or TransactionAssembler()
        self.slot = slot
        self._tails: dict[str, dict[int, Tail]] = {}
        self._partitions: dict[str, int] = {}
        self._topic_of: dict[tuple[str, str], str] = {}
        self._confirmed = ledger.watermark()
        self._last_lsn = self._confirmed
        self._last_confirm = 0.0
        self._last_activity = time.monotonic()
        self._reconnects = 0
        self.last_produced: Position | None = None
        self.skipped_present = 0
        self.produced = 0
        self.fatal: BaseException | None = None
        # Labelled metric children, looked up once: `Counter.labels()` per record was ~10 % of the loop.
        self._captured_metric: dict[tuple[str, str, Op], Any] = {}
        self._produced_metric: dict[str, Any] = {}

    # -- topics -----------------------------------------------------------------------------

    def _topic(self, schema: str, table: str) -> str:
        key = (schema, table)
        t = self._topic_of.get(key)
        if t is None:
            from bridge.codec.names import topic_name

            t = self._topic_of[key] = topic_name(self.s.topic_prefix, schema, table)
            n = self._partitions[t] = self.topics.ensure(t)
            self._tails[t] = self.tail_reader.tails_with_kind(t, n)
            if self._tails[t]:
                log.info("topic %s: resuming after tails %s", t,
                         {p: str(v.position) for p, v in self._tails[t].items()}, extra={"topic": t})
        return t

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Snapshot (if planned), then stream until `stop`; then drain and confirm what is safe."""
        if self.acks is not None:
            for ack in self.acks.read_to_end():
                self.ledger.acked((ack.topic, ack.partition), ack.position)
        metrics.UP.labels("producer").set(1)
        try:
            if self.snapshot is not None:
                self.run_snapshot(self.snapshot, stop)
                self.snapshot = None
            if not stop.is_set():
                self.source = self.open_source()
                self._reconnects = getattr(self.source, "reconnects", 0)
            while not stop.is_set():
                self.step()
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
        lsn_header = str(cp).encode()
        begin_snapshot_transaction(plan.conn, plan.snapshot_name)
        remaining = [t for t in state.tables.values() if not t.done]
        metrics.SNAPSHOT_TABLES_REMAINING.set(len(remaining))
        log.info("snapshot: %d tables to read at %s", len(remaining), cp, extra={"position": str(cp)})
        for prog in remaining:
            rel = self.relation_of(prog.schema, prog.table)
            reader = TableReader(rel, plan.chunk_rows)
            codec = self.codec_for(rel)
            topic = self._topic(rel.schema, rel.table)
            n = self._partitions[topic]
            present: set[bytes] = set()
            if plan.delivered is not None and rel.primary_key:
                # The dead run may have delivered part of the next chunk: skip those keys, number
                # the rest after them (see snapshot_state.delivered_after).
                present, top = plan.delivered(topic, n, cp.value, state.next_seq, plan.chunk_rows)
                state.next_seq = top + 1
                log.info("snapshot: resuming %s after %s; %d rows of the interrupted chunk are already in Kafka",
                         rel.qualified, prog.last_key, len(present), extra={"table": rel.qualified})
                for p, tail in self._tails[topic].items():
                    if tail.position.commit_lsn == cp:  # the slot waits for those to be acked too
                        self.ledger.present(entry, (topic, p), tail.position)
            plan.delivered = None
            for rows, last_key in reader.chunks(plan.conn, prog.last_key):
                for row in rows:
                    key = codec.key(row)
                    if present and key in present:
                        continue
                    pos = Position(cp, state.next_seq)
                    state.next_seq += 1
                    value = codec.value(ChangeEvent(rel, Op.READ, pos, 0, None, None, row, snapshot=True))
                    headers: list[tuple[str, str | bytes | None]] = [
                        (HEADER_LSN, lsn_header), (HEADER_SEQ, str(pos.seq).encode()), (HEADER_XID, b"0")]
                    self._send(entry, topic, partition_for(key, n), key, value, headers, pos)
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
                lsn_header = str(msg.lsn).encode()
                self._resnapshot_end(entry, Position(msg.lsn, 0), 0, None, lsn_header, b"0")
            if not hold:
                self.ledger.close(entry)

    def _publish(self, txn: Transaction) -> None:
        if txn.commit_lsn <= self._last_lsn:
            # Re-sent after a capture reconnect: already produced (or in flight) in this session.
            txn.discard()
            return
        self._last_lsn = txn.commit_lsn
        metrics.TRANSACTIONS.inc()
        entry = self.ledger.open(txn.commit_lsn)
        commit_ts_us = _commit_ts(txn.commit_ts)
        xid = txn.xid or 0
        xid_header = str(xid).encode()
        lsn_header = str(txn.commit_lsn).encode()
        seq = 0
        hold = False  # a resnapshot request keeps its entry open until the table is read
        decoded_bytes = 0  # counted once per transaction, not per line
        try:
            for line in txn.lines():
                decoded_bytes += len(line)
                parsed = parse_line(line)
                if isinstance(parsed, ChangeLine):
                    s = seq
                    seq += 1
                    if self.include(parsed.schema, parsed.table):
                        self._change(entry, parsed, Position(txn.commit_lsn, s), xid, commit_ts_us,
                                     lsn_header, xid_header)
                elif isinstance(parsed, TruncateLine):
                    s = seq
                    seq += 1
                    for schema, table in parsed.relations:
                        if self.include(schema, table):
                            self._truncate(entry, schema, table, Position(txn.commit_lsn, s), xid,
                                           commit_ts_us, lsn_header, xid_header)
                elif isinstance(parsed, MessageLine):
                    if self.resnapshot is not None and self.resnapshot.on_message(parsed, entry):
                        hold = True
                else:
                    raise DecodeError("unexpected line inside a transaction", line=line[:200], offset=0)
            if self.resnapshot is not None:
                self._resnapshot_end(entry, Position(txn.commit_lsn, seq), xid, commit_ts_us, lsn_header,
                                     xid_header)
        except BridgeError as exc:
            exc.context.setdefault("xid", xid)
            exc.context.setdefault("commit_lsn", str(txn.commit_lsn))
            raise
        finally:
            metrics.DECODED_BYTES.inc(decoded_bytes)
            txn.discard()
        if not hold:
            self.ledger.close(entry)

    def _resnapshot_end(self, entry: InFlight, first: Position, xid: int, commit_ts_us: int | None,
                        lsn_header: bytes, xid_header: bytes) -> None:
        """After a transaction or message: produce a finished resnapshot chunk's rows in `entry`
        from position `first` on, and close the entries of finished resnapshot requests."""
        assert self.resnapshot is not None
        reads = self.resnapshot.take_reads()
        if reads is not None:
            self._reads(entry, reads[0], reads[1], first, xid, commit_ts_us, lsn_header, xid_header)
        for held in self.resnapshot.release():
            self.ledger.close(held)

    def _reads(self, entry: InFlight, relation: Relation, rows: list[Any], first: Position, xid: int,
               commit_ts_us: int | None, lsn_header: bytes, xid_header: bytes) -> None:
        """A resnapshot chunk's rows as op `r` events at `first`, `first.seq + 1`, … (in `entry`)."""
        codec = self.codec_for(relation)
        topic = self._topic(relation.schema, relation.table)
        n = self._partitions[topic]
        for i, row in enumerate(rows):
            pos = Position(first.commit_lsn, first.seq + i)
            key = codec.key(row)
            value = codec.value(ChangeEvent(relation, Op.READ, pos, xid, commit_ts_us, None, row, snapshot=True))
            headers: list[tuple[str, str | bytes | None]] = [
                (HEADER_LSN, lsn_header), (HEADER_SEQ, str(pos.seq).encode()), (HEADER_XID, xid_header)]
            self._send(entry, topic, partition_for(key, n), key, value, headers, pos)
        metrics.SNAPSHOT_ROWS.labels(relation.qualified).inc(len(rows))

    def _change(self, entry: InFlight, change: ChangeLine, pos: Position, xid: int, commit_ts_us: int | None,
                lsn_header: bytes, xid_header: bytes) -> None:
        relation, op, before, after, unchanged = self.decoder.decode(change)
        if self.resnapshot is not None:
            self.resnapshot.observe(relation, before, after)
        codec = self.codec_for(relation)
        topic = self._topic(relation.schema, relation.table)
        n = self._partitions[topic]
        key = codec.key(after if after is not None else before)
        partition = partition_for(key, n)
        counter = self._captured_metric.get((relation.schema, relation.table, op))
        if counter is None:
            counter = self._captured_metric[(relation.schema, relation.table, op)] = \
                metrics.CHANGES_CAPTURED.labels(relation.qualified, op.value)
        counter.inc()
        headers: list[tuple[str, str | bytes | None]] = [
            (HEADER_LSN, lsn_header), (HEADER_SEQ, str(pos.seq).encode()), (HEADER_XID, xid_header)]
        if op is Op.UPDATE and before is not None and after is not None and relation.primary_key:
            old_key = codec.key(before)
            old_partition = partition_for(old_key, n)
            if old_key != key and old_partition != partition:
                # A primary-key change across partitions: the old key's earlier changes are in
                # its own partition, so its end must be there too, in order — a delete of the old
                # key there and a create of the new key here (same position, one per partition).
                gone = ChangeEvent(relation, Op.DELETE, pos, xid, commit_ts_us, before, None)
                self._send(entry, topic, old_partition, old_key, codec.value(gone), headers, pos)
                if self.s.tombstones:
                    self._send(entry, topic, old_partition, old_key, None, headers, pos)
                op, before = Op.INSERT, None
        event = ChangeEvent(relation, op, pos, xid, commit_ts_us, before, after, unchanged)
        self._send(entry, topic, partition, key, codec.value(event), headers, pos)
        if op is Op.DELETE and self.s.tombstones and key is not None:
            self._send(entry, topic, partition, key, None, headers, pos)

    def _truncate(self, entry: InFlight, schema: str, table: str, pos: Position, xid: int,
                  commit_ts_us: int | None, lsn_header: bytes, xid_header: bytes) -> None:
        relation = self.relation_of(schema, table)
        if self.resnapshot is not None:
            self.resnapshot.observe_truncate(schema, table)
        codec = self.codec_for(relation)
        value = codec.value(ChangeEvent(relation, Op.TRUNCATE, pos, xid, commit_ts_us, None, None))
        topic = self._topic(schema, table)
        headers: list[tuple[str, str | bytes | None]] = [
            (HEADER_LSN, lsn_header), (HEADER_SEQ, str(pos.seq).encode()), (HEADER_XID, xid_header)]
        metrics.CHANGES_CAPTURED.labels(relation.qualified, Op.TRUNCATE.value).inc()
        # Every partition gets the truncate, so each partition's consumer sees it in order.
        for partition in range(self._partitions[topic]):
            self._send(entry, topic, partition, None, value, headers, pos)

    def _send(self, entry: InFlight, topic: str, partition: int, key: bytes | None, value: bytes | None,
              headers: list[tuple[str, str | bytes | None]], pos: Position) -> None:
        tail = self._tails[topic].get(partition)
        tp = (topic, partition)
        if tail is not None and tail.covers(pos, value is None):
            self.ledger.present(entry, tp, pos)
            self.skipped_present += 1
            return
        ledger = self.ledger
        while ledger.records_in_flight >= self.s.max_records_in_flight:
            # Back-pressure inside a transaction too: without it a 1,000,000-row transaction
            # sits whole in the client's queue (over 1 GB of RSS, invariant 6).
            self.producer.poll(0.05)
            if self.fatal is not None:
                raise self.fatal

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            ok = err is None
            ledger.delivered(entry, ok)
            if not ok and self.fatal is None:
                metrics.PRODUCE_ERRORS.inc()
                self.fatal = ProduceError(f"delivery failed: {err}", topic=topic, partition=partition,
                                          position=str(pos))

        while True:
            try:
                self.producer.produce(topic, value=value, key=key, partition=partition, headers=headers,
                                      on_delivery=on_delivery)
                break
            except BufferError:
                self.producer.poll(0.05)  # the client's queue is full: wait for deliveries
        ledger.sent(entry, tp, pos)
        self.produced += 1
        self.last_produced = pos
        counter = self._produced_metric.get(topic)
        if counter is None:
            counter = self._produced_metric[topic] = metrics.RECORDS_PRODUCED.labels(topic)
        counter.inc()


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
