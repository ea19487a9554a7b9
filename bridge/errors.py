"""One exception tree, rooted at `BridgeError`. Each error carries the context that locates it."""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose.

    Keyword context (slot, position, topic, partition, offset, table, column, ...) is kept in
    `context` and appended to the message, so a log line names what is at fault.
    """

    def __init__(self, message: str, **context: Any) -> None:
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}
        super().__init__(message)

    def __str__(self) -> str:
        if not self.context:
            return self.message
        ctx = ", ".join(f"{k}={v}" for k, v in self.context.items())
        return f"{self.message} [{ctx}]"


class ConfigError(BridgeError):
    """The configuration is wrong: names the key path and what was expected. Exit code 2."""


class DecodeError(BridgeError):
    """test_decoding output that cannot be parsed or converted: names the line and offset."""


class SchemaError(BridgeError):
    """A relation cannot be mapped to Avro (or back to PostgreSQL): names table and column."""


class CodecError(BridgeError):
    """Bytes that are not a record of a known schema (framing, fingerprint, body)."""


class ModifierError(CodecError):
    """A value does not fit its column's declared modifiers (`varchar(n)` length, `numeric(p,s)`
    precision or scale): the table's type changed by a DDL that test_decoding's lines do not show
    (they print types without modifiers). The producer re-reads the table from the catalog."""


class SchemaRefusedError(CodecError):
    """The schema registry refused a new schema version: the subject's compatibility level does
    not allow the change (HTTP 409). Names the subject and the level. The producer holds the
    stream and asks again until the operator has made the change acceptable."""


class StoreUnavailableError(CodecError):
    """The schema store could not be read (schema topic or registry away): says nothing about the
    record, so the caller waits and reads it again rather than dead-lettering it."""


class RegistryUnavailableError(StoreUnavailableError):
    """The schema registry did not answer (connection refused, timeout, HTTP 5xx): transient."""


class SourceError(BridgeError):
    """The source PostgreSQL or its slot is not usable (wal_level, plugin, privilege, lost WAL ...)."""


class ProduceError(BridgeError):
    """The broker refused or lost a record the producer was responsible for."""


class SinkError(BridgeError):
    """The sink cannot apply a batch (target table, constraint, position table ...)."""


class TargetSchemaError(SinkError):
    """A target table cannot hold the data: names table and column."""


class RecordTooLargeError(ProduceError):
    """A record is larger than the producer's `message.max.bytes` or the broker's limit for its
    topic. The producer stops (exit 1) before its position can be confirmed: nothing is lost,
    and the message names table, key, size, limit and the settings to raise."""


class BrokerUnreachableError(BridgeError):
    """No broker answered within `kafka.connect_timeout_s`: names the address, the security
    settings in use and the likely cause (a listener speaking another protocol, credentials)."""
