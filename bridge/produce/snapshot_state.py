"""Durable snapshot progress: a compacted topic `<prefix>._snapshot` with one record, key `state`.

Written after each chunk's records are delivered; read once when the producer starts.
"""

from __future__ import annotations

import json
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from bridge.errors import ProduceError
from bridge.kafka.headers import position_from_headers
from bridge.kafka.reading import read_to_end, watermarks
from bridge.kafka.topics import SNAPSHOT_RESUME_GROUP, reader_group, snapshot_topic
from bridge.source.snapshot import SnapshotState

KEY = b"state"


class SnapshotStateStore:
    def __init__(self, producer: Producer, bootstrap: str, prefix: str, extra: dict[str, Any] | None = None) -> None:
        self._producer = producer
        self.topic = snapshot_topic(prefix)
        self._conf = {"bootstrap.servers": bootstrap, "group.id": reader_group(self.topic),
                      "enable.auto.commit": False, "enable.partition.eof": True, **(extra or {})}

    def load(self, timeout: float = 30.0) -> SnapshotState | None:
        """The last state written, or None when no snapshot ever ran."""
        consumer = Consumer(self._conf)
        try:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=timeout)
            if hi <= lo:
                return None
            last: bytes | None = None
            for msg in read_to_end(consumer, [TopicPartition(self.topic, 0, lo)], time.monotonic() + timeout,
                                   "reading snapshot state"):
                if msg.key() == KEY and msg.value():
                    last = msg.value()
            return SnapshotState.from_json(json.loads(last)) if last else None
        finally:
            consumer.close()

    def save(self, state: SnapshotState, timeout: float = 60.0) -> None:
        """Wait until every record produced before is delivered, then write `state` and wait until
        the broker has it. The order matters: the client sends each partition on its own, so a
        state produced beside the chunk's records could reach the broker before them, and a crash
        then would resume after rows that were never delivered. Raises ProduceError."""
        if self._producer.flush(timeout) > 0:
            raise ProduceError("records before the snapshot state not delivered: timeout", topic=self.topic)
        errors: list[KafkaError] = []
        self._producer.produce(self.topic, key=KEY, value=json.dumps(state.to_json()).encode(), partition=0,
                               on_delivery=lambda err, _m: errors.append(err) if err else None)
        if self._producer.flush(timeout) > 0 or errors:
            raise ProduceError(f"snapshot state not saved: {errors[0] if errors else 'timeout'}", topic=self.topic)


def delivered_after(bootstrap: str, extra: dict[str, Any] | None, topic: str, partitions: int, consistent_point: int,
                    from_seq: int, scan: int, timeout: float = 60.0) -> tuple[set[bytes], int]:
    """Keys of snapshot records at `(consistent_point, seq >= from_seq)` already in `topic`, and the
    highest such seq (`from_seq - 1` when none).

    Called when an interrupted snapshot resumes: the dead run may have delivered part of the chunk
    after its last saved state. The chunk is read again in a fresh transaction, where concurrent
    inserts and deletes may shift every row's seq, so positions alone cannot tell what is there:
    a row re-read at a seq at or below its partition's tail would be skipped as present and lost,
    one delivered before would be produced twice. The resumed chunk therefore skips these keys
    and numbers the rest after the highest seq found. At most one chunk was produced after the
    save, so the last `scan` (= chunk rows) records of each partition hold all of them.
    Raises ProduceError when the partitions cannot be read.
    """
    conf = {"bootstrap.servers": bootstrap, "group.id": SNAPSHOT_RESUME_GROUP, "enable.auto.commit": False,
            "enable.partition.eof": True, **(extra or {})}
    consumer = Consumer(conf)
    keys: set[bytes] = set()
    top = from_seq - 1
    deadline = time.monotonic() + timeout
    try:
        assign: list[TopicPartition] = []
        for p in range(partitions):
            lo, hi = watermarks(consumer, topic, p, deadline)
            if hi > lo:
                assign.append(TopicPartition(topic, p, max(lo, hi - scan)))
        for msg in read_to_end(consumer, assign, deadline, "reading the interrupted snapshot chunk"):
            pos = position_from_headers(msg.headers())
            key = msg.key()
            if pos is not None and pos.commit_lsn.value == consistent_point and pos.seq >= from_seq:
                top = max(top, pos.seq)
                if key is not None:
                    keys.add(key)
    finally:
        consumer.close()
    return keys, top
