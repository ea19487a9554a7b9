"""Checks across values (names, ranges, formats, librdkafka properties, DSNs), after the types."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from bridge.config.model import Config
from bridge.config.paths import where
from bridge.config.redact import redact_dsn

_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")
_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_TABLE_GLOB = re.compile(r"^[^.]+\..+$")  # schema.table; names may hold spaces


def validate(c: Config, errors: list[str], origin: Mapping[str, str]) -> None:
    """Checks across values: names, ranges, formats."""
    def err(path: str, text: str) -> None:
        errors.append(f"{where(path, origin)}: {text}")

    if not _SLOT.match(c.source.slot):
        err("source.slot", f"expected 1-63 characters of a-z, 0-9 and _, got {c.source.slot!r}")
    for key in ("tables", "exclude"):
        for pattern in getattr(c.source, key):
            if not _TABLE_GLOB.match(pattern):
                err(f"source.{key}", f"expected schema.table glob patterns like 'public.*', got {pattern!r}")
    for key in ("heartbeat_interval_s", "status_interval_s"):
        if not getattr(c.source, key) > 0:
            err(f"source.{key}", f"expected a number of seconds > 0, got {getattr(c.source, key)!r}")
    if not c.kafka.connect_timeout_s > 0:
        err("kafka.connect_timeout_s", f"expected a number of seconds > 0, got {c.kafka.connect_timeout_s!r}")
    for path, value in (("source.sql_batch_changes", c.source.sql_batch_changes),
                        ("source.snapshot_chunk_rows", c.source.snapshot_chunk_rows),
                        ("source.spill_bytes", c.source.spill_bytes),
                        ("kafka.partitions", c.kafka.partitions),
                        ("kafka.replication_factor", c.kafka.replication_factor),
                        ("sink.batch_max_rows", c.sink.batch_max_rows),
                        ("sink.batch_max_bytes", c.sink.batch_max_bytes),
                        ("sink.batch_max_ms", c.sink.batch_max_ms),
                        ("monitor.retained_wal_warn_bytes", c.monitor.retained_wal_warn_bytes)):
        if value <= 0:
            err(path, f"expected a positive integer, got {value!r}")
    for path, dsn in (("source.dsn", c.source.dsn), ("sink.dsn", c.sink.dsn)):
        if dsn is not None:
            _check_dsn(path, dsn, err)
    if not c.kafka.bootstrap_servers.strip():
        err("kafka.bootstrap_servers", "expected host:port[,host:port...], got ''")
    prefix = c.kafka.topic_prefix
    if not _TOPIC.match(prefix) or len(prefix) > 200 or prefix in (".", ".."):
        err("kafka.topic_prefix", f"expected 1-200 characters of a-z, A-Z, 0-9, '.', '_' and '-', got {prefix!r}")
    dlq = c.sink.dead_letter_topic
    if not _TOPIC.match(dlq) or len(dlq) > 249 or dlq in (".", ".."):
        err("sink.dead_letter_topic", f"expected a Kafka topic name (a-z, A-Z, 0-9, '.', '_', '-'), got {dlq!r}")
    url = c.kafka.schema_registry_url
    if url is not None and not re.match(r"^https?://\S+$", url):
        err("kafka.schema_registry_url", f"expected an http:// or https:// URL, got {redact_dsn(url)!r}")
    if "bootstrap.servers" in c.kafka.config:
        err("kafka.config.bootstrap.servers", "set kafka.bootstrap_servers instead")
    else:
        _check_librdkafka(c.kafka.config, err)
    if not c.sink.group_id.strip():
        err("sink.group_id", "expected a non-empty consumer group id")
    if not _IDENT.match(c.sink.state_schema):
        err("sink.state_schema", f"expected a plain SQL identifier, got {c.sink.state_schema!r}")
    for pattern in c.sink.tables:
        if not _TABLE_GLOB.match(pattern):
            err("sink.tables", f"expected schema.table glob patterns like 'public.*', got {pattern!r}")
    _check_state_schema(c, err)
    if not 0 <= c.metrics.port <= 65535:
        err("metrics.port", f"expected a TCP port 0-65535 (0: any free port), got {c.metrics.port!r}")
    if not c.metrics.host.strip():
        err("metrics.host", "expected an address to listen on, e.g. '0.0.0.0'")


def _check_state_schema(c: Config, err: Callable[[str, str], None]) -> None:
    """Refuse a configuration whose captured tables could land in the sink's state schema: a
    replicated table there could overwrite the positions, and changes would be skipped as applied."""
    from bridge.sink.admit import is_system_schema
    from bridge.tables import TableFilter

    state = c.sink.state_schema
    if is_system_schema(state):
        err("sink.state_schema", f"{state!r} is a PostgreSQL system schema; choose another")
        return
    if TableFilter(c.source.tables, c.source.exclude).may_match_schema(state):
        err("source.tables", f"the patterns {list(c.source.tables)} can capture tables of schema {state!r}, where "
                             f"the sink keeps its state (sink.state_schema); add '{state}.*' to source.exclude "
                             f"or choose another sink.state_schema")


_LIBRDKAFKA_PROPERTY = re.compile(r'property:? "?([A-Za-z0-9._-]+)')


def _check_librdkafka(props: Mapping[str, Any], err: Callable[[str, str], None]) -> None:
    """Every `kafka.config` property must be one librdkafka knows, with a value it accepts.

    librdkafka checks each property as it is set, which a client's construction does first; a
    producer is built (never connected: no bootstrap servers) only to ask it. Errors of the
    construction itself ("Failed to create …", e.g. a SASL mechanism this build lacks) depend on
    the environment, not the file, and are left to the real clients.
    """
    if not props:
        return
    import logging

    from confluent_kafka import KafkaError, KafkaException, Producer

    quiet = logging.getLogger("bridge.config.librdkafka")
    quiet.disabled = True
    try:
        Producer({**props, "log_level": 0, "logger": quiet})
    except KafkaException as exc:
        e = exc.args[0] if exc.args else None
        if not isinstance(e, KafkaError) or e.code() != KafkaError._INVALID_ARG:
            return
        text = e.str()
        if text.startswith("Failed to create"):
            return
        m = _LIBRDKAFKA_PROPERTY.search(text)
        err(f"kafka.config.{m.group(1)}" if m else "kafka.config", f"librdkafka: {text}")
    except (TypeError, ValueError) as exc:
        err("kafka.config", f"librdkafka: {exc}")


def _check_dsn(path: str, dsn: str, err: Callable[[str, str], None]) -> None:
    from psycopg import conninfo  # local: config must stay importable cheaply

    try:
        conninfo.conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError
        # libpq quotes fragments of the string, which may be a malformed password: keep neither.
        reason = re.sub(r'"[^"]*"', '"..."', str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        err(path, f"not a valid connection string: {reason or 'rejected by libpq'}")
