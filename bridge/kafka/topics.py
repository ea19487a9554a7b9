"""The name of every topic the bridge makes, and of the groups its internal readers use.

| topic | made by | holds |
| --- | --- | --- |
| `topic_name(prefix, schema, table)` | producer | one table's changes (docs/internals.md, "Kafka records") |
| `acks_topic(prefix)` = `<prefix>._acks` | sink | what the sink applied (bridge/ack/channel.py) |
| `schemas_topic(prefix)` = `<prefix>._schemas` | producer | Avro schemas by fingerprint (bridge/codec/store.py) |
| `snapshot_topic(prefix)` = `<prefix>._snapshot` | producer | snapshot progress (bridge/produce/snapshot_state.py) |
| `dead_letter_topic(prefix)` = `<prefix>._dlq` | sink | the default of `sink.dead_letter_topic` |

Internal topics have one component after the prefix, starting with `_`; data topics have two
(three when escaped), so `data_topic_pattern` tells them apart. Pure functions, no I/O.
"""

from __future__ import annotations

import re

from bridge.errors import SchemaError

MAX_TOPIC_LENGTH = 249  # Kafka's limit (TopicNameValidator)
ESCAPED_MARK = "esc"  # the last component of a topic whose schema or table name was escaped

_TOPIC_INVALID = re.compile(r"[^A-Za-z0-9._-]")
_PLAIN_PART = re.compile(r"[A-Za-z0-9_-]+\Z")


def _escape_part(name: str) -> str:
    """A reversible spelling of one identifier in `[A-Za-z0-9_-]`: letters, digits and `-` stay,
    `_` becomes `__`, every other character `_<hex code point>_` (`.` → `_2e_`, ` ` → `_20_`)."""
    out: list[str] = []
    for ch in name:
        if ch == "_":
            out.append("__")
        elif ch == "-" or (ch.isascii() and ch.isalnum()):
            out.append(ch)
        else:
            out.append(f"_{ord(ch):x}_")
    return "".join(out)


def topic_name(prefix: str, schema: str, table: str) -> str:
    """The topic of `schema.table`: a pure, injective function of (prefix, schema, table).

    - Both names made of `[A-Za-z0-9_-]` only (the ordinary case): `<prefix>.<schema>.<table>`.
    - Otherwise (a `.`, a space, any character Kafka does not allow in a topic name, or an empty
      name): `<prefix>.<esc(schema)>.<esc(table)>.esc`, where `esc` keeps letters, digits and `-`,
      doubles `_` and writes every other character as `_<hex code point>_`. So `"public.a".b`
      is `<prefix>.public_2e_a.b.esc` and `public."a.b"` is `<prefix>.public.a_2e_b.esc`.

    Injective for a given prefix: an ordinary name has exactly two components after the prefix,
    an escaped one three, and the escaping is reversible. Characters Kafka forbids in the prefix
    become `_`. Raises `SchemaError` when the result exceeds Kafka's 249-character limit.
    """
    head = _TOPIC_INVALID.sub("_", prefix)
    if _PLAIN_PART.match(schema) and _PLAIN_PART.match(table):
        topic = f"{head}.{schema}.{table}"
    else:
        topic = f"{head}.{_escape_part(schema)}.{_escape_part(table)}.{ESCAPED_MARK}"
    if len(topic) > MAX_TOPIC_LENGTH:
        raise SchemaError("topic name longer than Kafka allows", topic=topic, table=f"{schema}.{table}")
    return topic


def data_topic_pattern(prefix: str) -> str:
    """Regex subscription for `<prefix>.<schema>.<table>`; internal topics (`<prefix>._acks`,
    `_schemas`, `_dlq`) have a single dot after the prefix and do not match."""
    escaped = "".join("\\" + c if c in ".^$*+?()[]{}|\\" else c for c in prefix)
    return f"^{escaped}\\.[^.]+\\..+"


def _internal(prefix: str, name: str) -> str:
    return f"{prefix}._{name}"


def acks_topic(prefix: str) -> str:
    """`<prefix>._acks`: one partition, compacted; the sink's acks (bridge/ack/channel.py)."""
    return _internal(prefix, "acks")


def schemas_topic(prefix: str) -> str:
    """`<prefix>._schemas`: one partition, compacted; schemas by fingerprint (bridge/codec/store.py)."""
    return _internal(prefix, "schemas")


def snapshot_topic(prefix: str) -> str:
    """`<prefix>._snapshot`: one partition, compacted; snapshot progress."""
    return _internal(prefix, "snapshot")


def dead_letter_topic(prefix: str) -> str:
    """`<prefix>._dlq`: the default dead-letter topic (`sink.dead_letter_topic`)."""
    return _internal(prefix, "dlq")


def reader_group(topic: str) -> str:
    """The consumer group id an internal topic's reader uses (`<prefix>._acks.reader`): no
    offsets are committed under it; it only keeps the reader out of the sink's group."""
    return f"{topic}.reader"


TAIL_READER_GROUP = "bridge.tail-reader"  # reads the last record of data partitions
SNAPSHOT_RESUME_GROUP = "bridge.snapshot-resume"  # reads an interrupted snapshot chunk back
