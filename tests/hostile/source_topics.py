"""Reading what the producer wrote, independently of the project's decoder: every record of a
topic, its value decoded by fastavro with the schema found in `<prefix>._schemas` by the
record's single-object fingerprint (`C3 01` + 8 bytes)."""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: Any  # decoded key record (dict), or None
    value: Any  # decoded envelope (dict), or None for a tombstone


def list_topics(bootstrap: str, prefix: str) -> set[str]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {t for t in md.topics if t.startswith(prefix + ".")}


def read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """(partition, offset, key, value) of every record in `topic`, read to the end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t_{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        tps = []
        for p in md.partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi > lo:
                tps.append(TopicPartition(topic, p, lo))
        if not tps:
            return []
        c.assign(tps)
        left = {tp.partition for tp in tps}
        out: list[tuple[int, int, bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while left:
            assert time.monotonic() < deadline, f"{topic}: not read to the end in {timeout} s"
            m = c.poll(0.5)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    left.discard(m.partition())
                    continue
                raise AssertionError(str(err))
            out.append((m.partition(), m.offset(), m.key(), m.value()))
        return out
    finally:
        c.close()


class Schemas:
    """The `<prefix>._schemas` topic as fingerprint -> parsed schema."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.topic = f"{prefix}._schemas"
        self.by_fp: dict[bytes, Any] = {}
        self.raw: dict[bytes, dict[str, Any]] = {}

    def load(self) -> None:
        for _p, _o, k, v in read_all(self.bootstrap, self.topic):
            if k is not None and v is not None:
                self.raw[k] = json.loads(v)
                self.by_fp[k] = fastavro.parse_schema(self.raw[k])

    def decode(self, data: bytes | None) -> Any:
        if data is None:
            return None
        assert data[:2] == b"\xc3\x01", data[:10].hex()
        fp = data[2:10]
        if fp not in self.by_fp:
            self.load()
        return fastavro.schemaless_reader(io.BytesIO(data[10:]), self.by_fp[fp])


def decoded(bootstrap: str, prefix: str, topic: str) -> list[Rec]:
    schemas = Schemas(bootstrap, prefix)
    schemas.load()
    return [Rec(topic, p, o, schemas.decode(k), schemas.decode(v)) for p, o, k, v in read_all(bootstrap, topic)]


def wait_for(cond: Any, timeout: float, what: str, procs: Any = ()) -> Any:
    """Poll `cond()` until it returns something truthy; fail naming `what` (with the logs)."""
    from tests.pipeline import check_alive, logs_of

    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        check_alive(procs)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{logs_of(procs)}")
        time.sleep(0.5)
