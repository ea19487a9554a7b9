"""The producer's partitions and the tails of its topics (creating topics: `bridge.kafka.admin`).

The tail of a partition is the position of its last record. A restarted producer re-reads the
slot from its confirmed position, and skips every record whose position is at or below the tail
of the partition it belongs to — the partition is computed by the producer itself
(`partition_for`), so the comparison is exact per partition (invariant 4).
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bridge.events import Position
from bridge.kafka.admin import TopicManager
from bridge.kafka.headers import HEADER_LSN, HEADER_SEQ, HEADER_XID, position_from_headers
from bridge.kafka.reading import read_to_end, watermarks
from bridge.kafka.topics import TAIL_READER_GROUP

log = logging.getLogger(__name__)

# Moved to bridge.kafka; re-exported here for the producer's imports.
__all__ = ["HEADER_LSN", "HEADER_SEQ", "HEADER_XID", "Tail", "TailReader", "TopicManager", "key_body",
           "partition_for", "position_from_headers", "read_to_end", "watermarks"]


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


@dataclass(frozen=True, slots=True)
class Tail:
    """The last record of a partition: its position, and whether it is a tombstone (a delete's
    tombstone shares the delete's position and comes right after it)."""

    position: Position
    tombstone: bool

    def covers(self, position: Position, tombstone: bool) -> bool:
        """Whether a record (`position`, `tombstone`) is already in the partition."""
        return (position, tombstone) <= (self.position, self.tombstone)


class TailReader:
    """Reads the position of the last record of each partition of a topic."""

    def __init__(self, bootstrap: str, extra: dict[str, Any] | None = None) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": TAIL_READER_GROUP,
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
