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
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bridge.errors import ProduceError
from bridge.events import Position
from bridge.lsn import Lsn

log = logging.getLogger(__name__)

HEADER_LSN = "bridge.commit_lsn"
HEADER_SEQ = "bridge.seq"
HEADER_XID = "bridge.xid"


def partition_for(key: bytes | None, partitions: int) -> int:
    """librdkafka's `consistent` partitioner: CRC-32 of the key; a null key goes to partition 0."""
    if key is None or partitions == 1:
        return 0
    return zlib.crc32(key) % partitions


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
        while True:
            md = self._admin.list_topics(topic, timeout=10)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                if len(t.partitions) >= want or not created:
                    self._known[topic] = len(t.partitions)
                    return len(t.partitions)
            elif not created:
                config = {"cleanup.policy": "compact"} if compact else {}
                fut = self._admin.create_topics([NewTopic(topic, num_partitions=want,
                                                          replication_factor=self.replication_factor,
                                                          config=config)])[topic]
                try:
                    fut.result(timeout)
                    log.info("created topic %s with %d partitions", topic, want, extra={"topic": topic})
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise ProduceError(f"cannot create topic: {exc}", topic=topic) from exc
                created = True
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
        result: dict[int, Position] = {}
        assign: list[TopicPartition] = []
        for p in range(partitions):
            lo, hi = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if hi > lo:
                assign.append(TopicPartition(topic, p, hi - 1))
        if not assign:
            return result
        self._consumer.assign(assign)
        pending = {tp.partition for tp in assign}
        deadline = time.monotonic() + timeout
        try:
            while pending:
                if time.monotonic() > deadline:
                    raise ProduceError("could not read the last record of partitions", topic=topic,
                                       partitions=sorted(pending))
                for msg in self._consumer.consume(len(pending), 1.0):
                    err = msg.error()
                    p = msg.partition() or 0
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(p)
                            continue
                        raise ProduceError(f"reading tail: {err}", topic=topic, partition=p)
                    pos = position_from_headers(msg.headers())
                    if pos is None:
                        log.warning("last record of %s/%d carries no bridge position headers", topic, p,
                                    extra={"topic": topic, "partition": p, "offset": msg.offset()})
                    else:
                        result[p] = pos
                    pending.discard(p)
        finally:
            self._consumer.unassign()
        return result

    def close(self) -> None:
        self._consumer.close()
