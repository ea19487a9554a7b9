"""Topics the producer writes: created on first use, and their tails read once.

The tail of a partition is the position of its last record. A restarted producer re-reads the
slot from its confirmed position, and skips every record whose position is at or below the tail
of the partition it belongs to — the partition is computed by the producer itself
(`partition_for`), so the comparison is exact per partition (invariant 4).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bridge.errors import ProduceError
from bridge.events import Position
from bridge.lsn import Lsn

log = logging.getLogger(__name__)

HEADER_LSN = "bridge.commit_lsn"
HEADER_SEQ = "bridge.seq"
HEADER_XID = "bridge.xid"


def key_body(key: bytes) -> bytes:
    """The Avro body of a framed key: single-object (`C3 01` + 8-byte fingerprint) or Confluent
    (`00` + 4-byte schema id) framing removed."""
    if key[:2] == b"\xc3\x01":
        return key[10:]
    if key[:1] == b"\x00":
        return key[5:]
    return key


def partition_for(key: bytes | None, partitions: int) -> int:
    """CRC-32 of the key's Avro body modulo the partition count (librdkafka's `consistent`
    partitioner over the body); a null key goes to partition 0.

    The framing is left out on purpose: it names the key schema's version, which changes with
    the table's DDL, and a key must stay in its partition across versions to stay ordered."""
    if key is None or partitions == 1:
        return 0
    return zlib.crc32(key_body(key)) % partitions


def position_from_headers(headers: Any) -> Position | None:
    lsn: Any = None
    seq: Any = None
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    for k, v in items:
        if k == HEADER_LSN:
            lsn = v
        elif k == HEADER_SEQ:
            seq = v
    if lsn is None or seq is None:
        return None
    return Position(Lsn.parse(lsn.decode() if isinstance(lsn, bytes) else str(lsn)), int(seq))


@dataclass(frozen=True, slots=True)
class Tail:
    """The last record of a partition: its position, and whether it is a tombstone (a delete's
    tombstone shares the delete's position and comes right after it)."""

    position: Position
    tombstone: bool

    def covers(self, position: Position, tombstone: bool) -> bool:
        """Whether a record (`position`, `tombstone`) is already in the partition."""
        return (position, tombstone) <= (self.position, self.tombstone)


class TopicManager:
    """Creates topics on first use and remembers their partition counts."""

    def __init__(self, bootstrap: str, *, partitions: int, replication_factor: int,
                 extra: dict[str, Any] | None = None) -> None:
        self._conf = {"bootstrap.servers": bootstrap, **(extra or {})}
        self._admin = AdminClient(self._conf)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self._known: dict[str, int] = {}

    def ensure(self, topic: str, *, partitions: int | None = None, compact: bool = False,
               timeout: float = 30.0) -> int:
        """Create `topic` if missing; return its partition count (an existing topic keeps its own)."""
        n = self._known.get(topic)
        if n is not None:
            return n
        deadline = time.monotonic() + timeout
        want = partitions or self.partitions
        created = False
        # Create before asking for metadata: some brokers (Tansu) auto-create a topic on a
        # metadata request, with their own partition count.
        config = {"cleanup.policy": "compact"} if compact else {}
        fut = self._admin.create_topics([NewTopic(topic, num_partitions=want,
                                                  replication_factor=self.replication_factor,
                                                  config=config)])[topic]
        try:
            fut.result(timeout)
            created = True
            log.info("created topic %s with %d partitions", topic, want, extra={"topic": topic})
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ProduceError(f"cannot create topic: {exc}", topic=topic) from exc
        except TimeoutError as exc:
            raise ProduceError(f"the broker did not answer the creation of the topic within {timeout:g} s "
                               "(is it reachable with kafka.config's security settings?)", topic=topic) from exc
        while True:
            md = self._admin.list_topics(topic, timeout=10)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                if len(t.partitions) >= want or not created:
                    self._known[topic] = len(t.partitions)
                    return len(t.partitions)
            if time.monotonic() > deadline:
                raise ProduceError("topic metadata did not show the topic in time", topic=topic)
            time.sleep(0.1)


class TailReader:
    """Reads the position of the last record of each partition of a topic."""

    def __init__(self, bootstrap: str, extra: dict[str, Any] | None = None) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bridge.tail-reader",
                                   "enable.auto.commit": False, "enable.partition.eof": True,
                                   "fetch.wait.max.ms": 10, **(extra or {})})

    def tails(self, topic: str, partitions: int, timeout: float = 30.0) -> dict[int, Position]:
        """The position of the last record of each non-empty partition."""
        return {p: t.position for p, t in self.tails_with_kind(topic, partitions, timeout).items()}

    def tails_with_kind(self, topic: str, partitions: int, timeout: float = 30.0) -> dict[int, Tail]:
        """The last record of each non-empty partition (position and tombstone or not)."""
        result: dict[int, Tail] = {}
        deadline = time.monotonic() + timeout
        assign: list[TopicPartition] = []
        for p in range(partitions):
            lo, hi = watermarks(self._consumer, topic, p, deadline)
            if hi > lo:
                assign.append(TopicPartition(topic, p, hi - 1))
        # Read on to the end of each partition rather than trusting `hi - 1` to be the last
        # record: Tansu reports the high watermark as the last *batch's* base offset + 1, so the
        # record at `hi - 1` may be the first of a batch of thousands (and a restarted producer
        # would then repeat the rest of that batch).
        last_offset: dict[int, int] = {}
        for msg in read_to_end(self._consumer, assign, deadline, "reading the last record of partitions"):
            p, offset = msg.partition() or 0, msg.offset() or 0
            if offset < last_offset.get(p, -1):
                continue
            last_offset[p] = offset
            pos = position_from_headers(msg.headers())
            if pos is None:
                log.warning("last record of %s/%d carries no bridge position headers", topic, p,
                            extra={"topic": topic, "partition": p, "offset": offset})
                result.pop(p, None)
            else:
                result[p] = Tail(pos, msg.value() is None)
        return result

    def close(self) -> None:
        self._consumer.close()


_LEADER_NOT_READY = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                               KafkaError.UNKNOWN_TOPIC_OR_PART})


def watermarks(consumer: Consumer, topic: str, partition: int, deadline: float) -> tuple[int, int]:
    """(low, high) of a partition, retried while its leader is not ready (a topic just created:
    Apache Kafka answers NOT_LEADER_FOR_PARTITION for a moment)."""
    while True:
        try:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                    timeout=max(1.0, deadline - time.monotonic()))
            return int(lo), int(hi)
        except KafkaException as exc:
            err = exc.args[0]
            retry = err.retriable() or err.code() in _LEADER_NOT_READY
            if not retry or time.monotonic() > deadline:
                raise ProduceError(f"cannot read the partition's offsets: {err}", topic=topic,
                                   partition=partition) from exc
            log.info("partition %s/%d not ready (%s): retrying", topic, partition, err.str(),
                     extra={"topic": topic, "partition": partition})
            time.sleep(0.2)


def read_to_end(consumer: Consumer, assign: list[TopicPartition], deadline: float, what: str) -> Iterator[Message]:
    """The records of `assign` (topic, partition, start offset) up to each partition's end, as
    its end-of-partition event tells (the consumer needs `enable.partition.eof`; high watermarks
    are not trusted, see `tails_with_kind`). Unassigns when done. Raises `ProduceError` naming
    `what` on a consumer error or when `deadline` passes."""
    if not assign:
        return
    topic = assign[0].topic
    pending = {tp.partition for tp in assign}
    consumer.assign(assign)
    try:
        while pending:
            if time.monotonic() > deadline:
                raise ProduceError(f"timed out {what}", topic=topic, partitions=sorted(pending))
            for msg in consumer.consume(10_000, 1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                        continue
                    raise ProduceError(f"{what}: {err}", topic=topic, partition=msg.partition())
                yield msg
    finally:
        consumer.unassign()
