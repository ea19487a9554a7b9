"""The sink loop: consume → decode → batch → apply → commit offsets → ack.

One member of the consumer group `sink.group_id`. Batches are bounded by rows, bytes and time.
Each batch is committed by `SinkLoop.commit`, whose steps run in this order, and a step that
fails stops the ones after it (the batch is then re-read from the last committed offsets, and
the position table in the target makes the replay harmless):

1. apply the batch in ONE target transaction (rows + new positions per partition), isolating
   records the target rejects;
2. publish rejected or undecodable records to the dead-letter topic and wait for the broker;
3. commit the Kafka offsets (the position in the commit metadata);
4. publish the acks `(topic, partition, position)` to `<prefix>._acks`.

Rebalances: on revoke, the in-flight batch is committed if it can be, else abandoned (its
offsets are not committed, so the next owner re-reads it); on assign, positions are loaded by the
applier from the target.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from bridge import failures, metrics
from bridge.ack.channel import Ack, AckPublisher
from bridge.config import STATE_SCHEMA
from bridge.errors import BridgeError, SinkError, StoreUnavailableError
from bridge.events import Op, Position
from bridge.kafka.topics import data_topic_pattern
from bridge.relation import Relation
from bridge.retry import retry_while
from bridge.signing import Signer
from bridge.sink.admit import Admission
from bridge.sink.deadletter import DeadLetters
from bridge.sink.truncate import TruncateBarrier

log = logging.getLogger(__name__)


class DecodedLike(Protocol):
    position: Position
    commit_ts_us: int | None
    relation: Relation


class ApplierLike(Protocol):
    def apply_isolating(self, records: Sequence[Any]) -> tuple[dict[tuple[str, int], Position],
                                                               list[tuple[Any, Exception]]]: ...

    def load_positions(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Position]: ...

    def forget_positions(self, partitions: Iterable[tuple[str, int]]) -> None: ...

    @property
    def conn(self) -> psycopg.Connection[Any]: ...


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


@dataclass(slots=True)
class _Batch:
    records: list[Any] = field(default_factory=list)
    raw_bytes: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to commit
    dead: list[tuple[Message, BaseException]] = field(default_factory=list)
    messages: dict[tuple[str, int, int], Message] = field(default_factory=dict)
    started: float = 0.0

    def __len__(self) -> int:
        return len(self.records) + len(self.dead)

    def empty(self) -> bool:
        return not self.offsets


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

    def __init__(self, *, consumer: Consumer, decode: Callable[[bytes], DecodedLike],
                 make_record: Callable[[str, int, int, DecodedLike], Any], applier: ApplierLike,
                 acks: AckPublisher, dead_letters: DeadLetters, settings: SinkSettings,
                 barrier: TruncateBarrier | None = None, stop: threading.Event | None = None,
                 admission: Admission | None = None, signer: Signer | None = None) -> None:
        self.consumer = consumer
        self.decode = decode
        self.make_record = make_record
        self.applier = applier
        self.acks = acks
        self.dead_letters = dead_letters
        self.s = settings
        self._batch = _Batch()
        self.applied_rows = 0
        self.batches = 0
        self.last_positions: dict[tuple[str, int], Position] = {}
        self.barrier = barrier
        self.admission = admission or Admission(settings.topic_prefix, STATE_SCHEMA)
        self.signer = signer
        self.stop = stop or threading.Event()
        self._waiting: dict[tuple[str, int], _Waiting] = {}
        self._unread: set[tuple[str, int]] = set()  # partitions sought back for the registry
        self._unread_delay = _REGISTRY_FIRST_WAIT_S
        self._partitions: dict[str, int] = {}
        self._lag_at = 0.0

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
        if not self._batch.empty():
            try:
                self.commit(retry=False)
            except Exception as exc:
                log.warning("rebalance: abandoning the in-flight batch: %s", exc)
                self._batch = _Batch()
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
                self.step()
            if not self._batch.empty():
                self.commit()
        finally:
            metrics.UP.labels("sink").set(0)
            self.consumer.close()

    def step(self) -> None:
        """Consume what is there and apply it: a batch is committed as soon as the consumer has
        nothing more buffered (low latency when little flows; under load the records that arrive
        while one batch applies make the next one big), or when it reaches its row, byte or age
        bound."""
        b = self._batch
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
        b = self._batch
        if not b.empty() and (len(msgs) < want or len(b) >= self.s.batch_max_rows
                              or b.raw_bytes >= self.s.batch_max_bytes
                              or time.monotonic() >= b.started + self.s.batch_max_ms / 1000):
            self.commit()

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
        b = self._batch
        if b.empty():
            b.started = time.monotonic()
        value = msg.value()
        if value is None:
            b.offsets[(topic, partition)] = offset + 1
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
            b.offsets[(topic, partition)] = offset + 1
            b.messages[(topic, partition, offset)] = msg
            b.dead.append((msg, exc))
            return
        if self.barrier is not None and getattr(change, "op", None) == Op.TRUNCATE:
            n = self._partition_count(topic)
            if n > 1:
                self._truncate(topic, partition, offset, n, change)
                return
        b.offsets[(topic, partition)] = offset + 1
        b.raw_bytes += len(value)
        b.messages[(topic, partition, offset)] = msg
        b.records.append(self.make_record(topic, partition, offset, change))

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
        if not self._batch.empty():
            self.commit()
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

    def _truncate(self, topic: str, partition: int, offset: int, n: int, change: Any) -> None:
        """A TRUNCATE in a topic of several partitions: pass it through the barrier."""
        barrier = self.barrier
        assert barrier is not None
        self.commit()  # everything consumed before it, first
        rel = change.relation
        pos: Position = change.position
        done = self._with_retry(lambda: barrier.arrive(self.applier.conn, topic, partition, n, pos,
                                                       rel.schema, rel.table))
        self.applier.load_positions([(topic, partition)])
        if done:
            self._pass_barrier(topic, partition, offset, pos)
            return
        log.info("partition waits at a TRUNCATE for the other %d partitions", n - 1,
                 extra={"topic": topic, "partition": partition, "position": str(pos)})
        self._waiting[(topic, partition)] = _Waiting(pos, offset, n)
        self.consumer.pause([TopicPartition(topic, partition)])
        self.acks.publish([Ack(topic, partition, pos, self.s.group_id, offset)])

    def _pass_barrier(self, topic: str, partition: int, offset: int, pos: Position) -> None:
        self.consumer.commit(offsets=[TopicPartition(topic, partition, offset + 1, metadata=str(pos))],
                             asynchronous=False)
        self.acks.publish([Ack(topic, partition, pos, self.s.group_id, offset + 1)])

    def _check_waiting(self) -> None:
        barrier = self.barrier
        assert barrier is not None
        for (topic, partition), w in list(self._waiting.items()):
            def check(topic: str = topic, w: _Waiting = w) -> bool:
                return barrier.complete(self.applier.conn, topic, w.partitions, w.position)

            passed = self._with_retry(check)
            if passed:
                del self._waiting[(topic, partition)]
                self._pass_barrier(topic, partition, w.offset, w.position)
                tp = TopicPartition(topic, partition, w.offset + 1)
                self.consumer.resume([tp])
                self.consumer.seek(tp)
                log.info("TRUNCATE barrier passed", extra={"topic": topic, "partition": partition})

    def _kafka_retry(self, fn: Callable[[], Any]) -> Any:
        """Run a broker call; while the broker is away (restart, coordinator moving), wait and try
        again. Errors that will not pass (e.g. the group rebalanced) are raised."""
        return retry_while(fn, _broker_transient, self.stop, "broker")

    def _with_retry(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` against the target; while the target is unreachable, wait and try again."""
        return retry_while(fn, _retryable, self.stop, "target")

    def commit(self, retry: bool = True) -> None:
        """Commit the batch: apply → dead letters → offsets → acks (see module docstring).

        Step 1 is retried while the target is unreachable (a restart); the batch stays in memory
        and the position table makes a repeated apply harmless."""
        b = self._batch
        if b.empty():
            return
        started = time.monotonic()
        # 1. One target transaction: rows and positions.
        if retry:
            positions, rejects = self._with_retry(lambda: self.applier.apply_isolating(b.records))
        else:
            positions, rejects = self.applier.apply_isolating(b.records)
        # 2. Dead letters, before the offsets that would skip them are committed.
        dead = list(b.dead)
        for rec, exc in rejects:
            dead.append((b.messages[(rec.topic, rec.partition, rec.offset)], exc))
        if dead:
            self.dead_letters.publish(dead)
        # 3. Offsets, with the applied position as commit metadata.
        offsets = []
        for (topic, partition), nxt in b.offsets.items():
            pos = positions.get((topic, partition))
            offsets.append(TopicPartition(topic, partition, nxt, metadata=str(pos) if pos else ""))
        try:
            self._kafka_retry(lambda: self.consumer.commit(offsets=offsets, asynchronous=False))
        except KafkaException as exc:
            raise SinkError(f"offset commit failed after the target commit: {exc}") from exc
        # 4. Acks for the producer's watermark.
        if positions:
            acks = [Ack(t, p, pos, self.s.group_id, b.offsets.get((t, p), -1)) for (t, p), pos in positions.items()]
            self._kafka_retry(lambda: self.acks.publish(acks))
            self.last_positions.update(positions)
        n = len(b.records)
        self.applied_rows += n
        self.batches += 1
        elapsed = time.monotonic() - started
        metrics.SINK_BATCH_ROWS.observe(n)
        metrics.SINK_BATCH_DURATION.observe(elapsed)
        metrics.LAST_PROGRESS.labels("sink").set(time.time())
        now_us = time.time() * 1e6
        for r in b.records[-1:]:
            ts = getattr(getattr(r, "change", r), "commit_ts_us", None)
            if ts is not None:
                metrics.END_TO_END_LAG.observe(max(0.0, (now_us - ts) / 1e6))
        self._batch = _Batch()
