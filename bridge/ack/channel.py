"""The ack channel: the sink tells the producer what is applied and committed.

Topic `<prefix>._acks`, one partition, compacted. One record per (topic, partition) the sink
applied, keyed `topic/partition` so compaction keeps the latest; value = the Avro ack record
(`schemas/ack.avsc`) in single-object encoding. The sink publishes an ack only after the target
transaction and the Kafka offset commit have both succeeded; the producer reads the whole topic
on start and follows it afterwards.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from bridge.codec.framing import fingerprint, single_object_prefix
from bridge.codec.templates import ACK
from bridge.errors import CodecError
from bridge.events import Position
from bridge.kafka.topics import acks_topic, reader_group
from bridge.lsn import Lsn
from bridge.signing import ANY_PARTITION, Signer

log = logging.getLogger(__name__)

_PARSED = fastavro.parse_schema(ACK)
_HEADER = single_object_prefix(fingerprint(ACK))


@dataclass(frozen=True, slots=True)
class Ack:
    topic: str
    partition: int
    position: Position
    sink: str = ""  # the consumer group
    offset: int = -1  # next offset of the partition the sink committed with this position

    def key(self) -> bytes:
        return f"{self.topic}/{self.partition}".encode()


def encode_ack(ack: Ack) -> bytes:
    buf = io.BytesIO()
    buf.write(_HEADER)
    fastavro.schemaless_writer(buf, _PARSED, {
        "sink": ack.sink, "topic": ack.topic, "partition": ack.partition, "offset": ack.offset,
        "commit_lsn": ack.position.commit_lsn.value, "seq": ack.position.seq, "ts_ms": int(time.time() * 1000)})
    return buf.getvalue()


def decode_ack(data: bytes) -> Ack:
    if not data.startswith(_HEADER):
        raise CodecError("not an ack record (framing or fingerprint differs)", head=data[:10].hex())
    rec = fastavro.schemaless_reader(io.BytesIO(data[len(_HEADER):]), _PARSED, None)
    assert isinstance(rec, dict)
    return Ack(rec["topic"], rec["partition"], Position(Lsn(rec["commit_lsn"]), rec["seq"]), rec["sink"],
               rec["offset"])


class AckPublisher:
    """Used by the sink after each offset commit. `publish` returns once the broker has the acks."""

    def __init__(self, producer: Producer, prefix: str, signer: Signer | None = None) -> None:
        self._producer = producer
        self.topic = acks_topic(prefix)
        self._signer = signer

    def publish(self, acks: Iterable[Ack], timeout: float = 30.0) -> None:
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        n = 0
        for ack in acks:
            key, value = ack.key(), encode_ack(ack)
            headers: list[tuple[str, str | bytes | None]] | None = (
                [self._signer.header(self.topic, ANY_PARTITION, key, value)] if self._signer else None)
            self._producer.produce(self.topic, key=key, value=value, on_delivery=on_delivery, headers=headers)
            n += 1
        if n and self._producer.flush(timeout) > 0:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "acks not delivered in time"))
        if errors:
            raise KafkaException(errors[0])


class AckReader:
    """Used by the producer: reads `<prefix>._acks` from the beginning, then follows it.

    No consumer group: every producer start re-reads the compacted topic, which holds one
    record per (topic, partition).
    """

    def __init__(self, bootstrap: str, prefix: str, extra: dict[str, Any] | None = None,
                 signer: Signer | None = None) -> None:
        self.topic = acks_topic(prefix)
        self._signer = signer
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": reader_group(self.topic),
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50, "fetch.queue.backoff.ms": 10, **(extra or {})})
        self._assigned = False

    def _assign(self) -> None:
        md = self._consumer.list_topics(self.topic, timeout=10)
        parts = md.topics[self.topic].partitions if self.topic in md.topics else {}
        if not parts:
            return
        self._consumer.assign([TopicPartition(self.topic, p, -2) for p in parts])  # -2: beginning
        self._assigned = True

    def poll(self, timeout: float = 0.0, max_records: int = 10_000) -> list[Ack]:
        """Acks that arrived since the last call (possibly none)."""
        if not self._assigned:
            self._assign()
            if not self._assigned:
                return []
        out: list[Ack] = []
        for msg in self._consumer.consume(max_records, timeout):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("ack channel: %s", err)
                continue
            value = msg.value()
            if value is None:
                continue
            if self._signer is not None and not self._signer.verify(self.topic, ANY_PARTITION, msg.key(), value,
                                                                    msg.headers()):
                log.warning("ack channel: skipping an ack without the bridge's signature",
                            extra={"topic": self.topic, "offset": msg.offset()})
                continue
            try:
                out.append(decode_ack(value))
            except CodecError as exc:
                log.warning("ack channel: skipping a record that is not an ack: %s", exc,
                            extra={"topic": self.topic, "offset": msg.offset()})
        return out

    def read_to_end(self, timeout: float = 10.0) -> list[Ack]:
        """Everything currently in the topic (used on start)."""
        deadline = time.monotonic() + timeout
        if not self._assigned:
            self._assign()
        if not self._assigned:
            return []
        targets: dict[int, int] = {}
        for tp in self._consumer.assignment():
            _lo, hi = self._consumer.get_watermark_offsets(tp, timeout=10)
            targets[tp.partition] = hi
        out: list[Ack] = []
        while time.monotonic() < deadline:
            out.extend(self.poll(0.2))
            positions = self._consumer.position([TopicPartition(self.topic, p) for p in targets])
            if all(tp.offset >= targets[tp.partition] or targets[tp.partition] == 0 for tp in positions):
                break
        return out

    def close(self) -> None:
        self._consumer.close()
