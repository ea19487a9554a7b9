"""`TopicReader`: one topic of the bridge, consumed without a consumer group's commits, decoded
by the sink's decoder and handed out as Arrow record batches.

The records are untrusted input: they go through the same bounded decoder the sink uses (the
native reader of `bridge.sink.native_stage`, or the Python reference with `BRIDGE_NATIVE=0`),
the schemas through the same validated store. A record that does not decode, or does not verify
when a signer is given, raises `ReaderError` naming its topic, partition and offset, or with
`on_error="skip"` is left out, logged and counted (`ReadStats`): none is lost silently.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from bridge import failures
from bridge.codec.store import SchemaStore, TopicSchemaStore
from bridge.errors import BridgeError, CodecError, SchemaError, StoreUnavailableError
from bridge.reader.arrow import ArrowPlan, BatchBuilder, Decimals
from bridge.reader.errors import ReaderError
from bridge.relation import Relation
from bridge.signing import Signer
from bridge.sink.native_stage import envelope_decoder

log = logging.getLogger(__name__)

Start = Literal["earliest", "latest"] | Mapping[int, int]
OnError = Literal["raise", "skip"]

_CONSUME_MAX = 10_000  # records per consume call: the per-call cost stays small against the records
_KEPT_ERRORS = 100  # skipped records whose errors `ReadStats.errors` keeps (the count is exact)


@dataclass(slots=True)
class ReadStats:
    """What a reader has consumed so far. `records` counts every record taken from the topic:
    each is in a batch (`rows`), a tombstone, or skipped."""

    records: int = 0
    rows: int = 0
    batches: int = 0
    tombstones: int = 0
    skipped: int = 0
    errors: list[ReaderError] = field(default_factory=list)  # the first skipped records' errors


class TopicReader:
    """Reads `topic` (a data topic of the bridge) into `pyarrow.RecordBatch`es.

    Schemas come from `store` when given, else from the schema registry at `registry_url`
    (Confluent framing; `registry_config`: the client's settings, such as credentials), else
    from the `<topic_prefix>._schemas` topic (single-object framing): the same choice the
    bridge's `kafka.schema_registry_url` makes. `topic_prefix` (None: not
    checked) is also the namespace the writer schemas must carry.

    A batch holds the records of one writer schema, in offset order per partition, at most
    `max_batch_rows` rows and about `max_batch_bytes` bytes of records; a new writer schema
    (a column added, a type changed) ends the batch. With `until_end` the read stops at each
    partition's end (as reached, not a watermark taken at the start); without, it follows the
    topic and yields what it has after `max_wait_s`. Nothing is committed to the broker: resume
    with `start={partition: last __offset + 1}`.
    """

    def __init__(self, bootstrap: str, topic: str, *, topic_prefix: str | None = "bridge",
                 registry_url: str | None = None, registry_config: Mapping[str, Any] | None = None,
                 store: SchemaStore | None = None, signer: Signer | None = None,
                 start: Start = "earliest", until_end: bool = True, max_batch_rows: int = 65_536,
                 max_batch_bytes: int = 64 << 20, max_wait_s: float = 1.0, idle_timeout_s: float = 60.0,
                 on_error: OnError = "raise", decimals: Decimals = "decimal",
                 kafka_config: Mapping[str, Any] | None = None) -> None:
        if max_batch_rows < 1 or max_batch_bytes < 1:
            raise ReaderError("max_batch_rows and max_batch_bytes must be positive", topic=topic)
        if on_error not in ("raise", "skip") or decimals not in ("decimal", "string"):
            raise ReaderError("on_error is 'raise' or 'skip', decimals 'decimal' or 'string'", topic=topic)
        self.topic = topic
        self.stats = ReadStats()
        self._conf: dict[str, Any] = {"bootstrap.servers": bootstrap, **(kafka_config or {})}
        if store is None and registry_url is not None:
            from bridge.codec.registry import RegistrySchemaStore

            store = RegistrySchemaStore(registry_url, dict(registry_config or {}))
        if store is None:
            store = TopicSchemaStore(bootstrap, topic_prefix or "bridge", dict(kafka_config or {}))
        self._store = store
        self._decoder = envelope_decoder(store, topic_prefix=topic_prefix)
        self._signer, self._start, self._until_end = signer, start, until_end
        self._max_rows, self._max_bytes = max_batch_rows, max_batch_bytes
        self._max_wait_s, self._idle_timeout_s = max_wait_s, idle_timeout_s
        self._on_error, self._decimals = on_error, decimals
        self._plans: dict[int, tuple[Relation, ArrowPlan]] = {}
        self._relation: Relation | None = None
        self._builder: BatchBuilder | None = None

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The topic's records as record batches (see the class). Raises `ReaderError` for a
        record that does not decode (unless skipped), a broker error that does not pass, a
        missing topic, or `idle_timeout_s` without any answer from the broker while reading to
        the end."""
        self._builder = self._relation = None  # a read abandoned before left its rows here
        consumer = Consumer({"group.id": f"bridge.reader.{uuid.uuid4()}", "enable.auto.commit": False,
                             "enable.partition.eof": True, "fetch.queue.backoff.ms": 10, **self._conf})
        try:
            assign = self._assignment(consumer)
            pending = {tp.partition for tp in assign}
            consumer.assign(assign)
            heard = first = time.monotonic()
            while pending or not self._until_end:
                try:
                    msgs = consumer.consume(_CONSUME_MAX, 0.5)
                except KafkaException as exc:  # a fatal consumer error
                    raise ReaderError(f"consumer failed: {exc}", topic=self.topic) from exc
                now = time.monotonic()
                if msgs:
                    heard = now
                elif self._until_end and now - heard > self._idle_timeout_s:
                    raise ReaderError("no answer from the broker", topic=self.topic, partitions=sorted(pending),
                                      waited_s=self._idle_timeout_s)
                for msg in msgs:
                    if (b := self._take(msg, pending)) is not None:
                        yield self._emit(b)
                b = self._builder
                if b is not None and len(b) and (not msgs or (not self._until_end and now - first > self._max_wait_s)):
                    self._builder = BatchBuilder(b.plan)
                    yield self._emit(b)
                if self._builder is None or not len(self._builder):
                    first = now
            if self._builder is not None and len(self._builder):
                b, self._builder = self._builder, None
                yield self._emit(b)
        finally:
            consumer.close()

    def _emit(self, builder: BatchBuilder) -> pa.RecordBatch:
        batch = builder.finish(self.topic)
        self.stats.rows += batch.num_rows
        self.stats.batches += 1
        return batch

    def _assignment(self, consumer: Consumer) -> list[TopicPartition]:
        """The partitions to read and where each starts. Raises `ReaderError` for a topic the
        broker does not have, or a partition of `start` it does not hold."""
        try:
            meta = consumer.list_topics(self.topic, timeout=self._idle_timeout_s).topics.get(self.topic)
        except Exception as exc:
            raise ReaderError(f"cannot read the topic's metadata: {exc}", topic=self.topic) from exc
        if meta is None or meta.error is not None or not meta.partitions:
            raise ReaderError("no such topic", topic=self.topic, error=str(getattr(meta, "error", None)))
        held = sorted(meta.partitions)
        if isinstance(self._start, Mapping):
            unknown = sorted(set(self._start) - set(held))
            if unknown:
                raise ReaderError("start names partitions the topic does not have", topic=self.topic,
                                  partitions=unknown, held=len(held))
            return [TopicPartition(self.topic, p, int(off)) for p, off in sorted(self._start.items())]
        if self._start not in ("earliest", "latest"):
            raise ReaderError("start is 'earliest', 'latest' or {partition: offset}", topic=self.topic)
        at = OFFSET_BEGINNING if self._start == "earliest" else OFFSET_END
        return [TopicPartition(self.topic, p, at) for p in held]

    def _take(self, msg: Message, pending: set[int]) -> BatchBuilder | None:
        """One consumed message (the per-record path): appended to the current batch, or an
        event. Returns a builder whose batch is complete (full, or ended by a new schema)."""
        err = msg.error()
        partition, offset = msg.partition() or 0, msg.offset() or 0
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                pending.discard(partition)
            elif failures.kafka_passes(err.code(), err.retriable()):
                log.warning("reader: broker error that passes: %s", err.str(), extra={"topic": self.topic})
            else:
                raise ReaderError(f"broker error: {err.str()}", topic=self.topic, partition=msg.partition())
            return None
        self.stats.records += 1
        value = msg.value()
        if value is None:
            self.stats.tombstones += 1
            return None
        if self._signer is not None and not self._signer.verify(self.topic, partition, msg.key(), value,
                                                                  msg.headers()):
            self._refuse("record signature does not verify", partition, offset)
            return None
        try:
            change = self._decoder.decode(value)
            plan = self._plan(change.relation, value)
        except StoreUnavailableError as exc:
            raise ReaderError(f"schema store unavailable: {exc}", topic=self.topic, partition=partition,
                              offset=offset) from exc
        except (CodecError, SchemaError) as exc:
            self._refuse(f"record cannot be read: {exc}", partition, offset, exc)
            return None
        done = None
        b = self._builder
        if b is None or b.plan is not plan:
            done = b if b is not None and len(b) else None
            b = self._builder = BatchBuilder(plan)
        b.append(change, partition, offset, len(value))
        if len(b) >= self._max_rows or b.size >= self._max_bytes:
            done, self._builder = b, BatchBuilder(plan)  # (a new schema's record never fills a batch alone)
        return done

    def _plan(self, relation: Relation, value: bytes) -> ArrowPlan:
        """The Arrow plan of the record's writer schema (looked up when the schema changes)."""
        if relation is self._relation and self._builder is not None:
            return self._builder.plan
        got = self._plans.get(id(relation))
        if got is None or got[0] is not relation:
            schema, _ = self._store.lookup(value)
            got = self._plans[id(relation)] = (relation, ArrowPlan.of(schema, decimals=self._decimals))
        self._relation = relation
        return got[1]

    def _refuse(self, reason: str, partition: int, offset: int, exc: BridgeError | None = None) -> None:
        """A record that cannot be read: raised, or with `on_error="skip"` logged and counted."""
        err = ReaderError(reason, topic=self.topic, partition=partition, offset=offset)
        if self._on_error == "raise":
            raise err from exc
        self.stats.skipped += 1
        if len(self.stats.errors) < _KEPT_ERRORS:
            self.stats.errors.append(err)
        log.warning("reader: skipped %s", err, extra={"topic": self.topic, "partition": partition, "offset": offset})

    def close(self) -> None:
        """Closes the schema store's clients (the consumer closes when `batches` ends)."""
        close = getattr(self._store, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
