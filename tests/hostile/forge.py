"""An independent writer of forged records and schemas: fastavro and raw bytes, never the
project's encoder, so a bug shared by the bridge's writer and reader cannot hide here."""

from __future__ import annotations

import contextlib
import copy
import json
import zlib
from io import BytesIO
from typing import Any

import fastavro
from confluent_kafka import Producer

from tests.support.topics import read_to_end
from tests.support.waits import wait_for

FORGED = "x-forged"  # header naming each forged record, to find it in the dead-letter topic


def fingerprint(schema: Any) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, in the byte order single-object encoding uses."""
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    return bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))


def named(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` renamed as the schema topic's contract asks: the record name (without any earlier
    suffix) + `_` + the CRC-32 of the schema's JSON under that name (sorted keys, no spaces)."""
    base = dict(schema)
    name = str(base["name"])
    if len(name) > 9 and name[-9] == "_":
        name = name[:-9]
    base["name"] = name
    crc = zlib.crc32(json.dumps(base, sort_keys=True, separators=(",", ":")).encode())
    return {**base, "name": f"{name}_{crc:08x}"}


def body(schema: Any, datum: Any) -> bytes:
    out = BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(copy.deepcopy(schema)), datum)
    return out.getvalue()


def zigzag(n: int) -> bytes:
    """An Avro long, written by hand."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def source_block(schema: str, table: str, lsn: int) -> dict[str, Any]:
    return {"db": "forged", "schema": schema, "table": table, "commit_lsn": lsn, "seq": 0, "xid": 7,
            "commit_ts": None, "snapshot": False}


def envelope(row: dict[str, Any] | None, op: str, schema: str, table: str, lsn: int = 2**40,
             before: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"before": before, "after": row, "op": op, "source": source_block(schema, table, lsn), "ts_ms": 0,
            "unchanged": []}


class Forger:
    """Writes to a real broker what a hostile third party with produce rights could write."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.schema_topic = f"{prefix}._schemas"
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.sent: list[str] = []  # ids of the forged data records

    def published(self) -> list[dict[str, Any]]:
        """Every schema in `<prefix>._schemas` that parses as a JSON object, in topic order."""
        out: list[dict[str, Any]] = []
        for r in read_to_end(self.bootstrap, [self.schema_topic], timeout=30):
            try:
                doc = json.loads(r.value or b"")
            except (ValueError, RecursionError):  # the forged entries of other tests
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def real_schema(self, table: str) -> dict[str, Any]:
        """The newest envelope schema the producer published for `public.<table>`."""
        found = [s for s in self.published() if s.get("pg.table") == table and s.get("pg.schema") == "public"
                 and str(s.get("name", "")).startswith("Envelope")]
        assert found, f"no schema of public.{table} published yet"
        return copy.deepcopy(found[-1])

    def publish_schema(self, value: bytes | dict[str, Any], key: bytes | None = None) -> bytes:
        """Write an entry to the schema topic; returns its key (the fingerprint, when computable).
        A dict must already be `named` (use `framed` with the same dict for its records)."""
        if isinstance(value, dict):
            key = key if key is not None else fingerprint(value)
            raw = json.dumps(value).encode()
        else:
            raw = value
        assert key is not None
        self.producer.produce(self.schema_topic, key=key, value=raw)
        assert self.producer.flush(30) == 0
        return key

    def send(self, topic: str, value: bytes, tag: str, partition: int = 0) -> None:
        """A forged data record, marked with header `x-forged: <tag>`."""
        self.producer.produce(topic, key=b"forged", value=value, partition=partition, headers=[(FORGED, tag.encode())])
        assert self.producer.flush(30) == 0
        self.sent.append(tag)

    def framed(self, schema: dict[str, Any], datum: Any) -> bytes:
        return b"\xc3\x01" + fingerprint(schema) + body(schema, datum)


def dead_letters(bootstrap: str, topic: str, tags: set[str], timeout: float = 90.0) -> dict[str, dict[str, bytes]]:
    """The dead letters whose `x-forged` header is in `tags`: tag -> headers. Waits up to `timeout`
    for all of them, and returns those found (the caller names the missing ones)."""
    found: dict[str, dict[str, bytes]] = {}

    def all_there() -> bool:
        for r in read_to_end(bootstrap, [topic], timeout=30):
            h = dict(r.headers)
            tag = h.get(FORGED, b"").decode()
            if tag in tags:
                found[tag] = h
        return set(found) >= tags

    with contextlib.suppress(AssertionError):
        wait_for(all_there, timeout, f"dead letters {sorted(tags)} in {topic}", interval=0.5)
    return found
