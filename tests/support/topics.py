"""Reading topics to their end, independently of the project's consumer and decoder.

The contract read here (not imported from `bridge`, so a bug shared by writer and reader cannot
hide): data topics are `<prefix>.<schema>.<table>` (internal topics such as `<prefix>._schemas`
have one dot after the prefix); each data record carries its position in the headers
`bridge.commit_lsn` (text LSN) and `bridge.seq`; values are Avro single-object encoded
(`C3 01` + 8-byte fingerprint) with their schema in `<prefix>._schemas` under that fingerprint.
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from bridge.events import Position
from bridge.lsn import Lsn
from tests.support.waits import Watched, wait_for

HEADER_LSN = "bridge.commit_lsn"
HEADER_SEQ = "bridge.seq"


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    position: Position | None  # (commit LSN, seq) from the bridge's headers, if it has them

    @property
    def tombstone(self) -> bool:
        return self.value is None

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


def position_of(headers: tuple[tuple[str, bytes], ...]) -> Position | None:
    found = dict(headers)
    lsn, seq = found.get(HEADER_LSN), found.get(HEADER_SEQ)
    if lsn is None or seq is None:
        return None
    return Position(Lsn.parse(lsn.decode()), int(seq))


def data_topic_regex(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}\.[^.]+\..+")


def topics_matching(bootstrap: str, pattern: re.Pattern[str]) -> list[str]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
    return sorted(t for t in md.topics if pattern.match(t))


def read_to_end(bootstrap: str, topics: Iterable[str], timeout: float = 300.0) -> list[Record]:
    """Every record of `topics` (all partitions, from the start), in partition order.

    Reads each partition to its end-of-partition event, not to an offset: Tansu's high watermark
    is the last batch's base offset + 1, so an offset bound would stop early. A topic that does
    not exist reads as empty. Raises AssertionError on a consume error or after `timeout`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.partition.eof": True, "fetch.queue.backoff.ms": 10})
    try:
        md = consumer.list_topics(timeout=30).topics
        assign: list[TopicPartition] = []
        for topic in topics:
            for p in (md[topic].partitions if topic in md else {}):
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                if hi > lo:
                    assign.append(TopicPartition(topic, p, lo))
        consumer.assign(assign)
        pending = {(tp.topic, tp.partition) for tp in assign}
        out: list[Record] = []
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"could not read {sorted(pending)} to the end in {timeout:g} s"
            for msg in consumer.consume(10_000, 1.0):
                where = (msg.topic() or "", msg.partition() or 0)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(where)
                        continue
                    raise AssertionError(f"reading {where}: {err}")
                headers = tuple((str(k), bytes(v or b"")) for k, v in (msg.headers() or []))
                out.append(Record(where[0], where[1], msg.offset() or 0, msg.key(), msg.value(), headers,
                                  position_of(headers)))
        return out
    finally:
        consumer.close()


def wait_records(bootstrap: str, topic: str, expect: int, timeout: float = 90.0,
                 procs: Sequence[Watched] = ()) -> list[Record]:
    """Every record of `topic` once it holds at least `expect` (read to its end each poll); fails
    after `timeout` naming how many there were, or when one of `procs` exits unasked."""
    seen: list[Record] = []

    def enough() -> bool:
        seen[:] = read_to_end(bootstrap, [topic], timeout=60)
        return len(seen) >= expect

    wait_for(enough, timeout, f"{expect} records in {topic}", procs, interval=0.5, last=lambda: f"{len(seen)} records")
    return seen


def data_records(bootstrap: str, prefix: str, timeout: float = 300.0) -> list[Record]:
    """Every record of the bridge's data topics under `prefix`; each must carry its position."""
    records = read_to_end(bootstrap, topics_matching(bootstrap, data_topic_regex(prefix)), timeout)
    for r in records:
        assert r.position is not None, f"record without position headers in {r.topic}/{r.partition} at {r.offset}"
    return records


def record_count(bootstrap: str, prefix: str) -> int:
    """Records in the data topics, from the partitions' watermarks (nothing is deleted there).
    On Tansu the count lags (its high watermark is the last batch's base offset + 1): use it
    only to see progress."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}"})
    try:
        md = consumer.list_topics(timeout=30).topics
        total = 0
        for topic in topics_matching(bootstrap, data_topic_regex(prefix)):
            for p in md[topic].partitions if topic in md else {}:
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                total += hi - lo
        return total
    finally:
        consumer.close()


# -- decoding with fastavro ----------------------------------------------------------------------


class Schemas:
    """The `<prefix>._schemas` topic as fingerprint -> parsed schema (entries that are not JSON
    objects, such as forged ones, are skipped)."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.topic = f"{prefix}._schemas"
        self.by_fp: dict[bytes, Any] = {}
        self.raw: dict[bytes, dict[str, Any]] = {}

    def load(self) -> None:
        for r in read_to_end(self.bootstrap, [self.topic], timeout=60):
            if r.key is None or r.value is None:
                continue
            try:
                doc = json.loads(r.value)
                parsed = fastavro.parse_schema(doc) if isinstance(doc, dict) else None
            except (ValueError, RecursionError, fastavro.schema.SchemaParseException):
                continue
            if parsed is not None:
                self.raw[r.key] = doc
                self.by_fp[r.key] = parsed

    def decode(self, data: bytes | None) -> Any:
        """The datum of one single-object encoded value (None for None)."""
        if data is None:
            return None
        assert data[:2] == b"\xc3\x01", data[:10].hex()
        fp = data[2:10]
        if fp not in self.by_fp:
            self.load()
        return fastavro.schemaless_reader(io.BytesIO(data[10:]), self.by_fp[fp])


@dataclass
class Rec:
    """A record with key and value decoded: `key` the key record, `value` the envelope (None for
    a tombstone)."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any


def decoded(bootstrap: str, prefix: str, topic: str) -> list[Rec]:
    """Every record of `topic`, decoded with the schemas of `<prefix>._schemas`."""
    schemas = Schemas(bootstrap, prefix)
    schemas.load()
    return [Rec(r.topic, r.partition, r.offset, schemas.decode(r.key), schemas.decode(r.value))
            for r in read_to_end(bootstrap, [topic], timeout=60)]


def list_topics(bootstrap: str, prefix: str) -> set[str]:
    """Every topic under `prefix` (data and internal)."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {t for t in md.topics if t.startswith(prefix + ".")}
