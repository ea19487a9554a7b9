"""The sink loop: consume → decode → batch, then the checkpoint: apply → offsets → acks.

One member of the consumer group `sink.group_id`. Batches are bounded by rows, bytes and time.
The loop consumes, decodes (`EnvelopeDecoder.decode` → `ChangeEvent`), admits and batches; it
commits nothing itself: every batch, and every TRUNCATE at its barrier, is committed by
`Checkpoint.commit` (checkpoint.py), the one commit path, whose docstring lists its steps.

Guarantees of this stage: a consumed record is either in the pending batch, in its dead letters,
or read again (a partition sought back while the schema store is away, or paused at a TRUNCATE
barrier, has its records skipped without moving its offset); the loop never exits on a record's
content.

Rebalances: on revoke, the in-flight batch is committed if it can be, else abandoned (its
offsets are not committed, so the next owner re-reads it), and the partitions' cached positions
are forgotten; on assign, positions are loaded by the applier from the target (or, if the target
is away then, by the first apply that needs them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from bridge import failures, metrics
from bridge.ack.channel import AckPublisher
from bridge.config import STATE_SCHEMA
from bridge.errors import BridgeError, SinkError, StoreUnavailableError
from bridge.events import ChangeEvent, Op, Position
from bridge.kafka.topics import data_topic_pattern
from bridge.retry import retry_while
from bridge.signing import Signer
from bridge.sink.admit import Admission
from bridge.sink.checkpoint import ApplyStage, Checkpoint
from bridge.sink.deadletter import DeadLetters
from bridge.sink.records import PartitionKey, SinkRecord

log = logging.getLogger(__name__)


T = TypeVar("T")


class ApplierLike(ApplyStage, Protocol):
    """What the loop needs of the apply stage (`bridge.sink.apply.Applier`)."""

    def load_positions(self, partitions: Iterable[PartitionKey]) -> dict[PartitionKey, Position]: ...

    def forget_positions(self, partitions: Iterable[PartitionKey]) -> None: ...

    def barrier_complete(self, topic: str, partitions: int, at: Position) -> bool: ...


_REGISTRY_FIRST_WAIT_S = 1.0  # the schema registry did not answer: read again after 1, 2, 4 … s
_REGISTRY_MAX_WAIT_S = 10.0  # at most this, well inside max.poll.interval.ms (the group membership)


def _broker_transient(exc: BaseException) -> bool:
    """A broker call that failed because the broker is away or its coordinator is moving."""
    return failures.broker_transient(exc)


def _retryable(exc: BaseException) -> bool:
    """A target failure that goes away by itself: a lost connection (restart), a deadlock, a
    serialization failure, the server shutting down or not yet accepting connections."""
    return failures.transient(exc)



@dataclass(slots=True)
class _Waiting:
    """A partition that arrived at a TRUNCATE and waits for the others (see truncate.py)."""

    position: Position
    offset: int  # the offset of the TRUNCATE record: committed only once the barrier is passed
    partitions: int


@dataclass(frozen=True, slots=True)
class SinkSettings:
    topic_prefix: str
    group_id: str
    batch_max_rows: int = 10_000
    batch_max_bytes: int = 64 << 20
    batch_max_ms: int = 200


def kafka_consumer_config(bootstrap: str, group_id: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,  # offsets are committed only after the target commit
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.queue.backoff.ms": 10,  # the default (1 s) caps a consumer near 185k rows/s
        "fetch.wait.max.ms": 100,  # a fetch returns within 100 ms when little is flowing (latency)
        "topic.metadata.refresh.interval.ms": 1000,  # new tables' topics join the subscription soon
        "session.timeout.ms": 6000,  # also: Tansu answers a first join after about half of it
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 300_000,
        "partition.assignment.strategy": "range",
        **(extra or {}),
    }


class SinkLoop:
    """Runs until `stop` is set. Built by `cli.py` from its collaborators."""

    def __init__(self, *, consumer: Consumer, decode: Callable[[bytes], ChangeEvent], applier: ApplierLike,
                 acks: AckPublisher, dead_letters: DeadLetters, settings: SinkSettings,
                 stop: threading.Event | None = None, admission: Admission | None = None,
                 signer: Signer | None = None, tick: Callable[[], None] = lambda: None) -> None:
        self.consumer = consumer
        self.decode = decode
        self.applier = applier
        self.s = settings
        self.checkpoint = Checkpoint(consumer=consumer, applier=applier, acks=acks, dead_letters=dead_letters,
                                     group_id=settings.group_id, retry_target=self._with_retry,
                                     retry_broker=self._kafka_retry)
        self.admission = admission or Admission(settings.topic_prefix, STATE_SCHEMA)
        self.signer = signer
        self.tick = tick  # every turn of the loop: the liveness beat
        self.stop = stop or threading.Event()
        self._waiting: dict[PartitionKey, _Waiting] = {}
        self._unread: set[PartitionKey] = set()  # partitions sought back for the registry
        self._unread_delay = _REGISTRY_FIRST_WAIT_S
        self._partitions: dict[str, int] = {}
        self._lag_at = 0.0

    @property
    def applied_rows(self) -> int:
        return self.checkpoint.applied_rows

    @property
    def batches(self) -> int:
        return self.checkpoint.batches

    @property
    def last_positions(self) -> dict[PartitionKey, Position]:
        return self.checkpoint.last_positions

    def subscribe(self) -> None:
        self.consumer.subscribe([data_topic_pattern(self.s.topic_prefix)], on_revoke=self._on_revoke,
                                on_assign=self._on_assign)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %d partitions", len(partitions),
                 extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in partitions]})
        try:
            self.applier.load_positions([(tp.topic or "", tp.partition or 0) for tp in partitions])
        except Exception as exc:
            # positions load again lazily at the first apply
            log.warning("could not load positions on assignment: %s", exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the in-flight batch if possible; otherwise abandon it uncommitted (safe: its
        offsets stay uncommitted and the next owner re-reads it)."""
        tps = [(tp.topic or "", tp.partition or 0) for tp in partitions]
        for tp in tps:
            self._waiting.pop(tp, None)  # the next owner re-reads the TRUNCATE and waits itself
        if not self.checkpoint.pending.empty():
            try:
                self.checkpoint.commit(retry=False)
            except Exception as exc:
                log.warning("rebalance: abandoning the in-flight batch: %s", exc)
                self.checkpoint.abandon()
        self.applier.forget_positions(tps)

    def run(self, stop: threading.Event) -> None:
        self.stop = stop
        # Reach the target (and create the state table) before consuming: a target that cannot be
        # reached is logged from the start, not first noticed when a record arrives.
        self._with_retry(lambda: self.applier.load_positions([]))
        self.subscribe()
        metrics.UP.labels("sink").set(1)
        try:
            while not stop.is_set():
                self.tick()
                self.step()
            self.checkpoint.commit()
        finally:
            metrics.UP.labels("sink").set(0)
            self.consumer.close()

    def step(self) -> None:
        """Consume what is there and apply it: a batch is committed as soon as the consumer has
        nothing more buffered (low latency when little flows; under load the records that arrive
        while one batch applies make the next one big), or when it reaches its row, byte or age
        bound."""
        b = self.checkpoint.pending
        want = max(1, min(self.s.batch_max_rows - len(b), 10_000))
        if b.empty():
            # wait for the first record (poll returns as soon as one is there; consume(n, t)
            # would wait until n records or t), then take what is buffered with it
            first = self.consumer.poll(self.s.batch_max_ms / 1000)
            msgs = [] if first is None else [first]
            if first is not None and want > 1:
                msgs.extend(self.consumer.consume(want - 1, 0))
        else:
            msgs = self.consumer.consume(want, 0)
        for msg in msgs:
            self._take(msg)
        if self._unread:
            self._wait_for_registry()
        elif msgs:
            self._unread_delay = _REGISTRY_FIRST_WAIT_S
        if self._waiting:
            self._check_waiting()
        now = time.monotonic()
        if now >= self._lag_at:
            self._lag_at = now + 5.0
            self._report_lag()
        b = self.checkpoint.pending
        if not b.empty() and (len(msgs) < want or len(b) >= self.s.batch_max_rows
                              or b.raw_bytes >= self.s.batch_max_bytes
                              or time.monotonic() >= b.started + self.s.batch_max_ms / 1000):
            self.checkpoint.commit()

    def _take(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() in (KafkaError._PARTITION_EOF,):
                return
            if err.fatal():
                raise SinkError(f"consumer: {err}")
            log.warning("consumer: %s", err)
            return
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        if (topic, partition) in self._waiting or (topic, partition) in self._unread:
            return  # fetched before the pause / the seek back: read again later
        if self._unread:
            # the registry did not answer in this step: do not ask it again for every partition
            # (each call can take ~20 s), read them all again after the wait
            self._unread.add((topic, partition))
            self.consumer.seek(TopicPartition(topic, partition, offset))
            return
        cp = self.checkpoint
        if cp.pending.empty():
            cp.pending.started = time.monotonic()
        value = msg.value()
        if value is None:
            cp.skip(topic, partition, offset)
            return  # a tombstone: it only serves compaction; its delete came just before it
        try:
            if self.signer is not None and not self.signer.verify(topic, partition, msg.key(), value, msg.headers()):
                raise SinkError("record without the bridge's signature (kafka.signing_secret): not written by its "
                                "producer", topic=topic, partition=partition, offset=offset)
            change = self.decode(value)
            self.admission.check(topic, change.relation)
        except StoreUnavailableError as exc:
            self._unread_from(topic, partition, offset, exc)  # the store's fault, not the record's
            return
        except Exception as exc:  # hostile input: whatever fails to decode or admit is dead-lettered
            cp.dead(topic, partition, offset, msg, exc)
            return
        rec = SinkRecord(topic, partition, offset, change)
        if change.op is Op.TRUNCATE:
            n = self._partition_count(topic)
            if n > 1:
                self._truncate(rec, n)
                return
        cp.add(rec, msg, len(value))

    def _unread_from(self, topic: str, partition: int, offset: int, exc: BridgeError) -> None:
        """The schema registry (or the schema topic) did not answer for this record's schema: it is not the record's
        fault, so it must not become a dead letter. Seek the partition back to it (what the
        batch holds before it is committed as usual) and skip the rest of what was fetched from
        that partition; `step` then waits before it is read again."""
        log.warning("%s; reading %s/%s again from offset %s", exc, topic, partition, offset,
                    extra={"topic": topic, "partition": partition, "offset": offset})
        self._unread.add((topic, partition))
        self.consumer.seek(TopicPartition(topic, partition, offset))

    def _wait_for_registry(self) -> None:
        """After a seek back for the registry: wait 1, 2, 4 … at most 10 s (a batch that holds
        records is committed first, so the wait does not hold it), then read on. With the
        registry's ~20 s per failed call, a step stays well inside the 60 s liveness check."""
        self.checkpoint.commit()
        self.stop.wait(self._unread_delay)
        self._unread_delay = min(self._unread_delay * 2, _REGISTRY_MAX_WAIT_S)
        self._unread.clear()

    def _report_lag(self) -> None:
        """`bridge_sink_consumer_lag`: records between the consumer's position and the high
        watermark, per assigned partition (from librdkafka's cached watermarks: no request)."""
        try:
            assigned = self.consumer.assignment()
            if not assigned:
                return
            for tp in self.consumer.position(assigned):
                _lo, hi = self.consumer.get_watermark_offsets(tp, cached=True)
                if hi is not None and hi >= 0 and tp.offset is not None and tp.offset >= 0:
                    metrics.SINK_CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, hi - tp.offset))
        except KafkaException as exc:
            log.debug("consumer lag unavailable: %s", exc)

    def _partition_count(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            md = self.consumer.list_topics(topic, timeout=10)
            n = self._partitions[topic] = len(md.topics[topic].partitions)
        return n

    def _truncate(self, rec: SinkRecord, n: int) -> None:
        """A TRUNCATE in a topic of `n` partitions: pass it through the barrier (truncate.py),
        committed by the checkpoint. A partition that must wait is paused until `_check_waiting`
        sees the barrier complete."""
        if self.checkpoint.arrive(rec, n):
            return
        pos = rec.change.position
        log.info("partition waits at a TRUNCATE for the other %d partitions", n - 1,
                 extra={"topic": rec.topic, "partition": rec.partition, "position": str(pos)})
        self._waiting[(rec.topic, rec.partition)] = _Waiting(pos, rec.offset, n)
        self.consumer.pause([TopicPartition(rec.topic, rec.partition)])

    def _check_waiting(self) -> None:
        for (topic, partition), w in list(self._waiting.items()):
            def check(topic: str = topic, w: _Waiting = w) -> bool:
                return self.applier.barrier_complete(topic, w.partitions, w.position)

            if self._with_retry(check):
                del self._waiting[(topic, partition)]
                self.checkpoint.release(topic, partition, w.offset, w.position)
                tp = TopicPartition(topic, partition, w.offset + 1)
                self.consumer.resume([tp])
                self.consumer.seek(tp)
                log.info("TRUNCATE barrier passed", extra={"topic": topic, "partition": partition})

    def _kafka_retry(self, fn: Callable[[], T]) -> T:
        """Run a broker call; while the broker is away (restart, coordinator moving), wait and try
        again. Errors that will not pass (e.g. the group rebalanced) are raised."""
        return retry_while(fn, _broker_transient, self.stop, "broker")

    def _with_retry(self, fn: Callable[[], T]) -> T:
        """Run `fn` against the target; while the target is unreachable, wait and try again."""
        return retry_while(fn, _retryable, self.stop, "target")
