"""The Emitter: records → Kafka, accounted in the ledger. The only caller of `Producer.produce`.

Called by the producer for the records the Router made of each event. Guarantees:
- a record whose partition's tail (after a restart) already holds its position is not sent
  again, and is accounted as present instead (invariant 4);
- at most `max_records_in_flight` records are in the client at once (back-pressure, also
  inside one transaction: invariant 6);
- every record sent is in the ledger (`sent`) before `produce` returns, and its delivery report
  reaches the ledger (`delivered`) through the batch's callback; the first failed delivery is
  kept in `fatal` and raised by the next `check` or `emit`;
- a record over a size limit raises `RecordTooLargeError` naming table, key, size and limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from bridge import metrics
from bridge.ack.watermark import InFlight, Ledger
from bridge.codec.codec import Stamp
from bridge.errors import BridgeError, ProduceError, RecordTooLargeError
from bridge.events import Position
from bridge.lsn import Lsn
from bridge.produce.acks import AckFollower
from bridge.produce.outputs import TopicSet
from bridge.produce.router import Out, Route
from bridge.produce.topics import HEADER_LSN, HEADER_SEQ, HEADER_XID, position_from_headers
from bridge.signing import Signer

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


class Batch:
    """One ledger entry's records in the making (a transaction, a message, a snapshot chunk run):
    the entry, the stamp its envelopes share, its position headers and one delivery callback."""

    __slots__ = ("entry", "lsn_header", "on_delivery", "stamp", "xid_header")

    def __init__(self, entry: InFlight, stamp: Stamp,
                 on_delivery: Callable[[KafkaError | None, Message], None]) -> None:
        self.entry = entry
        self.stamp = stamp
        self.lsn_header = str(entry.commit_lsn).encode()
        self.xid_header = str(stamp.xid).encode()
        self.on_delivery = on_delivery

    def headers(self, seq: int) -> Headers:
        return [(HEADER_LSN, self.lsn_header), (HEADER_SEQ, str(seq).encode()), (HEADER_XID, self.xid_header)]


class Emitter:
    """Sends records, skipping what the tails show, bounded in flight. Not thread-safe."""

    def __init__(self, *, producer: Producer, ledger: Ledger, topics: TopicSet, follower: AckFollower,
                 route_of_topic: Callable[[str], Route | None], max_records_in_flight: int = 200_000,
                 message_max_bytes: int = 1_000_000, signer: Signer | None = None) -> None:
        self._producer = producer
        self._ledger = ledger
        self._topics = topics
        self._follower = follower
        self._route_of_topic = route_of_topic
        self._max_in_flight = max_records_in_flight
        self._message_max_bytes = message_max_bytes
        self._signer = signer
        self.fatal: BaseException | None = None
        self.skipped_present = 0

    def batch(self, entry: InFlight, stamp: Stamp) -> Batch:
        """A batch for the records of ledger entry `entry`, with one delivery callback."""
        return Batch(entry, stamp, self._delivery_callback(entry))

    def check(self) -> None:
        """Raise the first failed delivery, if any."""
        if self.fatal is not None:
            raise self.fatal

    def passed(self, commit_lsn: Lsn) -> None:
        """The stream is at `commit_lsn` (each transaction, before its records)."""
        self._topics.passed(commit_lsn)

    def flush(self, timeout: float) -> None:
        """Wait up to `timeout` for every record in the client to be delivered (drain)."""
        self._producer.flush(timeout)

    def emit_each(self, batch: Batch, route: Route, records: Sequence[Out], seq: int) -> None:
        """Send records that are one event each, at positions `seq`, `seq + 1`, … (a native
        snapshot chunk), with `emit`'s guarantees; the common case (no tails to check, no
        signing) in one loop."""
        if self._topics.checking or self._signer is not None:
            for i, record in enumerate(records):
                self.emit(batch, route, [record], seq + i)
            return
        ledger, producer, topic, tps = self._ledger, self._producer, route.topic, route.tps
        entry, on_delivery, lsn, xid = batch.entry, batch.on_delivery, batch.lsn_header, batch.xid_header
        for i, (partition, key, value) in enumerate(records):
            while ledger.records_in_flight >= self._max_in_flight:
                self._follower.poll(0.05)
                self.check()
            headers: Headers = [(HEADER_LSN, lsn), (HEADER_SEQ, str(seq + i).encode()), (HEADER_XID, xid)]
            while True:
                try:
                    producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:
                    raise self._refused(exc, batch, route, partition, key, value, seq + i) from exc
            ledger.sent(entry, tps[partition], seq + i)
        route.produced += len(records)

    def emit(self, batch: Batch, route: Route, records: list[Out], seq: int) -> None:
        """Send one event's records (position `(batch.entry.commit_lsn, seq)`), in order: each
        unless its partition's tail holds it, waiting while too many are in flight."""
        ledger, topics, producer = self._ledger, self._topics, self._producer
        headers = batch.headers(seq)
        for partition, key, value in records:
            if topics.checking:  # after a restart, until the stream has passed every partition's tail
                tail = topics.tail(route.topic, partition)
                if tail is not None and tail.covers(Position(batch.entry.commit_lsn, seq), value is None):
                    ledger.present(batch.entry, route.tps[partition], seq)
                    self.skipped_present += 1
                    continue
            while ledger.records_in_flight >= self._max_in_flight:
                # Back-pressure inside a transaction too: without it a 1,000,000-row transaction
                # sits whole in the client's queue (over 1 GB of RSS, invariant 6).
                self._follower.poll(0.05)
                self.check()
            sent = headers if self._signer is None else [
                *headers, self._signer.header(route.topic, partition, key, value)]
            while True:
                try:
                    producer.produce(route.topic, value, key, partition=partition, on_delivery=batch.on_delivery,
                                     headers=sent)
                    break
                except BufferError:
                    producer.poll(0.05)  # the client's queue is full: wait for deliveries
                except KafkaException as exc:
                    raise self._refused(exc, batch, route, partition, key, value, seq) from exc
            ledger.sent(batch.entry, route.tps[partition], seq)
            route.produced += 1

    def _refused(self, exc: KafkaException, batch: Batch, route: Route, partition: int, key: bytes | None,
                 value: bytes | None, seq: int) -> BridgeError:
        """The error for a record the client would not take."""
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            return too_large(route, key, value, "the producer's", self._message_max_bytes,
                             partition=partition, position=str(Position(batch.entry.commit_lsn, seq)))
        return ProduceError(f"the Kafka client refused a record: {exc}", topic=route.topic, partition=partition)

    def _delivery_callback(self, entry: InFlight) -> Callable[[KafkaError | None, Message], None]:
        """The delivery report handler of one ledger entry's records (one closure per entry)."""
        ledger = self._ledger

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                ledger.delivered(entry, True)
                return
            ledger.delivered(entry, False)
            if self.fatal is None:
                metrics.PRODUCE_ERRORS.inc()
                pos = position_from_headers(msg.headers())
                if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    route = self._route_of_topic(msg.topic() or "")
                    self.fatal = too_large(route, msg.key(), msg.value(), "the broker's", None,
                                           partition=msg.partition(), position=str(pos) if pos else None)
                    return
                self.fatal = ProduceError(f"delivery failed: {err}", topic=msg.topic(), partition=msg.partition(),
                                          position=str(pos))

        return on_delivery


def too_large(route: Route | None, key: bytes | None, value: bytes | None, whose: str,
              limit: int | None, **context: Any) -> RecordTooLargeError:
    """The error for a record over a size limit: one line naming table, key, size, limit and
    what to raise. The record's transaction stays unconfirmed, so a restart after raising
    the limits produces it again (nothing is lost)."""
    size = len(key or b"") + len(value or b"")
    table = route.relation.qualified if route is not None else None
    where = f"{whose} limit" + (f" of {limit} bytes" if limit is not None else "")
    return RecordTooLargeError(
        f"a record of {size} bytes for table {table} is over {where}: raise "
        'kafka.config."message.max.bytes" (the producer\'s limit) and the topic\'s max.message.bytes '
        "(or the broker's message.max.bytes) above it, then restart; the slot is not advanced past "
        "this change",
        table=table, key=_key_text(route, key), size=size, limit=limit,
        topic=route.topic if route is not None else None, **context)


def _key_text(route: Route | None, key: bytes | None) -> str | None:
    """The key's column values for a log line (decoded from its Avro body), else its hex."""
    if key is None:
        return None
    codec: Any = route.codec if route is not None else None
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


__all__ = ["Batch", "Emitter", "Headers", "too_large"]
