"""Schema stores: publish a schema before the first record that uses it, find it from a record.

`TopicSchemaStore` (the default) uses Avro single-object encoding and a compacted topic
`<prefix>._schemas` (key: the 8 fingerprint bytes; value: the schema's JSON text).
`RegistrySchemaStore` (bridge/codec/registry.py) uses a Confluent Schema Registry and its framing.

The Parsing Canonical Form drops logical types and properties, so `decimal(12,2)` and
`decimal(14,4)`, or two primary keys, would share a fingerprint. `TopicSchemaStore` therefore
publishes each schema with its top-level record name suffixed by `_` + 8 hex digits of the CRC-32
of the full schema JSON: the fingerprint then identifies the full schema, properties included.
Record names do not affect the binary encoding, so bodies are unchanged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Protocol

from bridge.codec import framing
from bridge.errors import (
    CodecError,
    StoreUnavailableError,
)
from bridge.kafka.topics import schemas_topic
from bridge.signing import ANY_PARTITION, Signer

log = logging.getLogger(__name__)

Schema = dict[str, Any]

_MISSING_RETRY_S = 1.0  # a fingerprint found missing is looked for again after this long
_MISSING_MAX = 10_000  # fingerprints remembered as missing (then forgotten at once: bounded memory)
# An entry of `<prefix>._schemas` is hostile input: its size and JSON nesting are bounded before it
# is parsed, and the schemas held stay under a byte budget. The producer's schemas are a few KiB
# (a 1,600-column table's about 400 KiB), so these bounds only ever stop forged entries.
SCHEMA_MAX_BYTES = 4 << 20
SCHEMA_MAX_DEPTH = 64
SCHEMAS_MAX_TOTAL_BYTES = 256 << 20


def json_depth_exceeds(text: bytes, limit: int) -> bool:
    """Whether brackets in `text` nest deeper than `limit` (strings skipped). Linear, no recursion,
    so it can run before `json.loads`, whose recursion a deeply nested document exhausts."""
    depth = 0
    in_str = esc = False
    for b in text:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:  # backslash
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif b in (0x5D, 0x7D):
            depth -= 1
    return False


class SchemaStore(Protocol):
    """Where schemas are published and found. Implementations are thread-safe."""

    def register(self, schema: Schema, *, subject: str | None = None) -> bytes:
        """Publish `schema` (no-op if already published) and return the framing prefix of records
        written with it. Guarantees the schema is durably published before returning."""
        ...

    def lookup(self, data: bytes) -> tuple[Schema, int]:
        """The writer schema of a framed record and the offset of its body. Raises `CodecError`
        for unknown framing or an unknown schema."""
        ...

    def export_avsc(self, directory: str | Path) -> list[Path]:
        """Write every schema this store knows as an `.avsc` file; return the paths."""
        ...


def schema_json(schema: Schema) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def write_avsc(directory: str | Path, named: list[tuple[str, Schema]]) -> list[Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, schema in named:
        p = out / f"{stem}.avsc"
        p.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        paths.append(p)
    return paths


def full_name(schema: Schema) -> str:
    ns, name = schema.get("namespace"), schema.get("name", "schema")
    return f"{ns}.{name}" if ns and "." not in name else str(name)


def is_published_form(schema: Schema) -> bool:
    """Whether `schema`'s name carries the CRC-32 suffix of the rest of it, as `published_form`
    writes it: a schema that reuses another's name with other properties does not."""
    name = schema.get("name")
    if not isinstance(name, str) or len(name) < 10 or name[-9] != "_":
        return False
    return published_form({**schema, "name": name[:-9]}) == schema


def published_form(schema: Schema) -> Schema:
    """`schema` with its record name suffixed by the CRC-32 of its full JSON (see module doc)."""
    if not isinstance(schema, dict) or "name" not in schema:
        return schema
    digest = f"{zlib.crc32(schema_json(schema).encode()):08x}"
    return {**schema, "name": f"{schema['name']}_{digest}"}


class TopicSchemaStore:
    """Single-object encoding with schemas in the compacted topic `<topic_prefix>._schemas`.

    `register` is called by the producer for every new table version, before its first record;
    `lookup` per record by consumers (a dict lookup; an unknown fingerprint reads the topic to its
    end once, then fails with `CodecError`).
    """

    def __init__(self, bootstrap: str, topic_prefix: str, kafka_config: dict[str, Any] | None = None, *,
                 timeout: float = 30.0, signer: Signer | None = None) -> None:
        self.topic = schemas_topic(topic_prefix)
        self._signer = signer
        self._conf: dict[str, Any] = {"bootstrap.servers": bootstrap, **(kafka_config or {})}
        self._timeout = timeout
        self._lock = threading.Lock()
        self._by_header: dict[bytes, Schema] = {}  # C3 01 + fingerprint -> published schema
        self._registered: dict[str, bytes] = {}  # schema JSON -> header
        self._offsets: dict[int, int] = {}  # partition -> next offset to read
        self._missing: dict[bytes, float] = {}  # header -> monotonic time it was last found missing
        self._held_bytes = 0  # JSON bytes of the schemas learned from the topic
        self._producer: Any = None
        self._topic_ready = False

    # -- publishing ---------------------------------------------------------------------------
    def register(self, schema: Schema, *, subject: str | None = None) -> bytes:
        """See `SchemaStore.register`. Raises `CodecError` if the broker does not take it."""
        key = schema_json(schema)
        header = self._registered.get(key)
        if header is not None:
            return header
        with self._lock:
            header = self._registered.get(key)
            if header is not None:
                return header
            published = published_form(schema)
            fp = framing.fingerprint(published)
            header = framing.single_object_prefix(fp)
            if header not in self._by_header:
                self._publish(fp, published)
                self._by_header[header] = published
            self._registered[key] = header
            log.info("schema published topic=%s fingerprint=%s name=%s", self.topic, fp.hex(), full_name(published))
            return header

    def _ensure_topic(self) -> None:
        if self._topic_ready:
            return
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        admin = AdminClient(self._conf)
        if self.topic not in admin.list_topics(timeout=self._timeout).topics:
            fut = admin.create_topics([NewTopic(self.topic, num_partitions=1, replication_factor=-1,
                                                config={"cleanup.policy": "compact"})],
                                      operation_timeout=self._timeout)[self.topic]
            try:
                fut.result(timeout=self._timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise CodecError(f"cannot create the schema topic: {exc}", topic=self.topic) from exc
        self._topic_ready = True

    def _publish(self, fp: bytes, schema: Schema) -> None:
        from confluent_kafka import Producer

        self._ensure_topic()
        if self._producer is None:
            # Not idempotent: one record at a time, each flushed, keyed by its fingerprint in a
            # compacted topic, so a retry's duplicate is harmless and order does not matter;
            # an idempotent producer's first record waits ~0.5 s for its producer id, on the
            # critical path of every producer start (the first schema comes with the first change).
            self._producer = Producer({**self._conf, "acks": "all", "linger.ms": 0})
        errors: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        value = json.dumps(schema).encode()
        headers = [self._signer.header(self.topic, ANY_PARTITION, fp, value)] if self._signer else None
        self._producer.produce(self.topic, key=fp, value=value, on_delivery=delivered, headers=headers)
        left = self._producer.flush(self._timeout)
        if left or errors:
            raise CodecError("schema not published", topic=self.topic, fingerprint=fp.hex(),
                             error=str(errors[0]) if errors else f"{left} undelivered after {self._timeout}s")

    # -- finding -----------------------------------------------------------------------------
    def lookup(self, data: bytes) -> tuple[Schema, int]:
        """See `SchemaStore.lookup`."""
        schema = self._by_header.get(bytes(data[:framing.SINGLE_OBJECT_HEADER]))
        if schema is not None:
            return schema, framing.SINGLE_OBJECT_HEADER
        fp = framing.single_object_fingerprint(data)  # raises on bad framing
        header = framing.single_object_prefix(fp)
        with self._lock:
            # A fingerprint just found missing is not looked for again at once: a topic full of
            # foreign records must not turn every lookup into a read of the schema topic.
            if header not in self._by_header and time.monotonic() - self._missing.get(header, -1e9) > _MISSING_RETRY_S:
                self._read_topic()
                if header not in self._by_header:
                    if len(self._missing) >= _MISSING_MAX:
                        self._missing.clear()
                    self._missing[header] = time.monotonic()
        schema = self._by_header.get(header)
        if schema is None:
            raise CodecError("unknown schema fingerprint (not in the schema topic)", fingerprint=fp.hex(), topic=self.topic)
        return schema, framing.SINGLE_OBJECT_HEADER

    def _read_topic(self) -> None:
        """Read `<prefix>._schemas` from where the last read stopped to its current end.
        Raises `StoreUnavailableError` when the topic cannot be read in time."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

        from bridge.kafka.reading import read_to_end

        consumer = Consumer({**self._conf, "group.id": f"bridge-schemas-{uuid.uuid4()}", "enable.auto.commit": False,
                             "enable.partition.eof": True, "fetch.queue.backoff.ms": 10})
        try:
            meta = consumer.list_topics(self.topic, timeout=self._timeout).topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                return
            assign = [TopicPartition(self.topic, p, self._offsets.get(p, OFFSET_BEGINNING)) for p in meta.partitions]
            for msg in read_to_end(consumer, assign, time.monotonic() + self._timeout, "reading the schema topic",
                                   error=StoreUnavailableError):
                part, off = msg.partition(), msg.offset()
                if part is None or off is None:
                    continue
                self._offsets[part] = off + 1
                self._learn(msg.key(), msg.value(), off, msg.headers())
        except KafkaException as exc:
            raise StoreUnavailableError(f"cannot read the schema topic: {exc}", topic=self.topic) from exc
        finally:
            consumer.close()

    def _learn(self, key: bytes | None, value: bytes | None, offset: int, headers: Any = None) -> None:
        """Take one entry of the schema topic, or skip it (logged, counted in
        `bridge_schema_entries_skipped_total`). Never raises: an entry is hostile input, and one
        bad entry must neither stop the sink nor keep the entries after it from being learned."""
        if key is None or value is None:
            return  # a tombstone, or a key-only record: nothing to learn
        reason = self._refuse(key, value, headers)
        schema: Any = None
        if reason is None:
            try:
                schema = json.loads(value)
                if not isinstance(schema, dict):
                    reason = "not a JSON object"
                elif framing.fingerprint(schema) != key:
                    reason = "fingerprint does not match its key"
                elif not is_published_form(schema):
                    reason = "name does not carry the checksum of its content"
            except Exception as exc:  # json and fastavro raise several types, RecursionError among them
                reason = f"unreadable ({type(exc).__name__})"
        if reason is not None:
            from bridge import metrics

            metrics.SCHEMAS_SKIPPED.labels(reason.split(" (")[0]).inc()
            log.warning("skipping schema entry: %s topic=%s offset=%s", reason, self.topic, offset)
            return
        header = framing.single_object_prefix(key)
        known = self._by_header.get(header)
        if known is None:
            self._by_header[header] = schema
            self._held_bytes += len(value)
        elif known != schema:
            # Two schemas with one fingerprint (CRC-64 and CRC-32 can be made to collide): the first
            # in the topic stays, as the producer publishes a schema before any record using it.
            from bridge import metrics

            metrics.SCHEMAS_SKIPPED.labels("fingerprint conflict").inc()
            log.error("schema entry conflicts with an earlier one of the same fingerprint; keeping the earlier "
                      "topic=%s offset=%s fingerprint=%s", self.topic, offset, key.hex())

    def _refuse(self, key: bytes, value: bytes, headers: Any) -> str | None:
        """Why an entry is skipped before it is parsed, or None."""
        if self._signer is not None and not self._signer.verify(self.topic, ANY_PARTITION, key, value, headers):
            return "not signed by the bridge"
        if len(key) != 8:
            return "key is not an 8-byte fingerprint"
        if len(value) > SCHEMA_MAX_BYTES:
            return f"larger than {SCHEMA_MAX_BYTES} bytes"
        if self._held_bytes + len(value) > SCHEMAS_MAX_TOTAL_BYTES:
            return f"schemas held exceed {SCHEMAS_MAX_TOTAL_BYTES} bytes"
        if json_depth_exceeds(value, SCHEMA_MAX_DEPTH):
            return f"nested deeper than {SCHEMA_MAX_DEPTH}"
        return None

    def export_avsc(self, directory: str | Path) -> list[Path]:
        """See `SchemaStore.export_avsc`. Reads the schema topic first, so it exports every
        schema ever published under this prefix. Files are named `<fullname>.avsc`."""
        with self._lock:
            self._read_topic()
            named = [(full_name(s), s) for s in self._by_header.values()]
        return write_avsc(directory, named)

    def close(self) -> None:
        """Flush and drop the producer. Called at shutdown."""
        if self._producer is not None:
            self._producer.flush(self._timeout)
            self._producer = None


class MemorySchemaStore:
    """Single-object framing with schemas held in this process only (tests, tools, `--dry-run`).

    Same framing and published form as `TopicSchemaStore`, so bodies are byte-identical."""

    def __init__(self) -> None:
        self._by_header: dict[bytes, Schema] = {}
        self._registered: dict[str, bytes] = {}

    def register(self, schema: Schema, *, subject: str | None = None) -> bytes:
        """See `SchemaStore.register`."""
        key = schema_json(schema)
        header = self._registered.get(key)
        if header is None:
            published = published_form(schema)
            header = framing.single_object_prefix(framing.fingerprint(published))
            self._by_header.setdefault(header, published)
            self._registered[key] = header
        return header

    def lookup(self, data: bytes) -> tuple[Schema, int]:
        """See `SchemaStore.lookup`."""
        schema = self._by_header.get(bytes(data[:framing.SINGLE_OBJECT_HEADER]))
        if schema is None:
            fp = framing.single_object_fingerprint(data)
            raise CodecError("unknown schema fingerprint", fingerprint=fp.hex())
        return schema, framing.SINGLE_OBJECT_HEADER

    def export_avsc(self, directory: str | Path) -> list[Path]:
        """See `SchemaStore.export_avsc`."""
        return write_avsc(directory, [(full_name(s), s) for s in self._by_header.values()])
