"""The shared schema templates: envelope, source block, ack record.

These dicts are the canonical copies (they ship with the package); `schemas/*.avsc` in the
repository are identical JSON copies for readers and tools, and a unit test keeps them equal.
In `ENVELOPE`, the type name `Row` stands for the table's row record and `bridge.Source` for
`SOURCE`; `schemas.value_schema` substitutes both and renames the record per table.
"""

from __future__ import annotations

from typing import Any, Final

SOURCE: Final[dict[str, Any]] = {
    "type": "record",
    "name": "Source",
    "namespace": "bridge",
    "fields": [
        {"name": "db", "type": "string"},
        {"name": "schema", "type": "string"},
        {"name": "table", "type": "string"},
        {"name": "commit_lsn", "type": "long"},
        {"name": "seq", "type": "long"},
        {"name": "xid", "type": "long"},
        {"name": "commit_ts", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}], "default": None},
        {"name": "snapshot", "type": "boolean", "default": False},
    ],
}

ENVELOPE: Final[dict[str, Any]] = {
    "type": "record",
    "name": "Envelope",
    "namespace": "bridge",
    "fields": [
        {"name": "before", "type": ["null", "Row"], "default": None},
        {"name": "after", "type": ["null", "Row"], "default": None},
        {"name": "op", "type": {"type": "enum", "name": "Op", "namespace": "bridge", "symbols": ["c", "u", "d", "r", "t"]}},
        {"name": "source", "type": "bridge.Source"},
        {"name": "ts_ms", "type": "long"},
        {"name": "unchanged", "type": {"type": "array", "items": "string"}, "default": []},
    ],
}

ACK: Final[dict[str, Any]] = {
    "type": "record",
    "name": "Ack",
    "namespace": "bridge",
    "doc": "The sink applied and committed everything up to `offset` (exclusive) of topic/partition; its last position there is commit_lsn#seq.",
    "fields": [
        {"name": "sink", "type": "string"},
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "commit_lsn", "type": "long"},
        {"name": "seq", "type": "long"},
        {"name": "ts_ms", "type": "long"},
    ],
}

TEMPLATES: Final[dict[str, dict[str, Any]]] = {"envelope": ENVELOPE, "source": SOURCE, "ack": ACK}
