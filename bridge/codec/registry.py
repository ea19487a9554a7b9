"""`RegistrySchemaStore`: schemas in a Confluent Schema Registry, records in its framing
(`00` + 4-byte schema id). Used instead of `TopicSchemaStore` when `kafka.schema_registry_url` is set.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from bridge import failures
from bridge.codec import framing
from bridge.codec.store import Schema, full_name, schema_json, write_avsc
from bridge.errors import CodecError, ConfigError, RegistryUnavailableError, SchemaRefusedError

log = logging.getLogger(__name__)

_REGISTRY_TIMEOUT_S = 5  # seconds per schema registry request (the client's default: none); the client
# tries 4 times, so a hung registry answers a call with an error after ~20 s


class RegistrySchemaStore:
    """Confluent Schema Registry framing (`00` + 4-byte id) through `SchemaRegistryClient`.

    `url` may be `mock://name` for the client's in-process mock. `subject` defaults to the
    record's full name; `TableCodec` passes `<topic>-key` / `<topic>-value` (TopicNameStrategy).
    `client` replaces the one built from `url`/`conf` (to share one mock between instances).
    Raises `ConfigError` when the client's extra dependencies are not installed.
    """

    def __init__(self, url: str, conf: dict[str, Any] | None = None, *, client: Any = None) -> None:
        try:
            from confluent_kafka.schema_registry import Schema as RegistrySchema
            from confluent_kafka.schema_registry import SchemaRegistryClient
        except ImportError as exc:
            raise ConfigError("the schema registry client needs confluent-kafka[schemaregistry]",
                              missing=exc.name) from exc
        # The client's default is no timeout at all: a registry that hangs would hang the
        # producer or sink inside a call. With one, it is "unavailable" and waited for.
        full = {"url": url, "timeout": _REGISTRY_TIMEOUT_S, **(conf or {})}
        new = getattr(SchemaRegistryClient, "new_client", None)
        if client is None:
            client = new(full) if new is not None else SchemaRegistryClient(full)
        self._client: Any = client
        self._schema_type: Any = RegistrySchema
        self._lock = threading.Lock()
        self._registered: dict[tuple[str, str], bytes] = {}
        self._by_id: dict[int, Schema] = {}

    def register(self, schema: Schema, *, subject: str | None = None) -> bytes:
        """See `SchemaStore.register`. Raises `SchemaRefusedError` when the subject's
        compatibility level refuses it, `RegistryUnavailableError` when the registry does not
        answer, `CodecError` for any other refusal."""
        subj = subject or full_name(schema)
        key = (subj, schema_json(schema))
        header = self._registered.get(key)
        if header is not None:
            return header
        with self._lock:
            try:
                schema_id = int(self._client.register_schema(subj, self._schema_type(json.dumps(schema), "AVRO")))
            except Exception as exc:
                raise self._refusal(exc, subj) from exc
            header = framing.confluent_prefix(schema_id)
            self._by_id[schema_id] = schema
            self._registered[key] = header
            log.info("schema registered subject=%s id=%s", subj, schema_id)
            return header

    def describe(self) -> tuple[int, str]:
        """(number of subjects, global compatibility level): what `pgbridge check` reports.
        Raises whatever the client raises when the registry does not answer."""
        return len(self._client.get_subjects()), str(self._client.get_compatibility())

    def _refusal(self, exc: Exception, subject: str) -> CodecError:
        """The error for a failed registration: `SchemaRefusedError` (HTTP 409, with the subject's
        compatibility level), `RegistryUnavailableError` (no answer, HTTP 5xx), else `CodecError`."""
        status = getattr(exc, "http_status_code", None)
        reason = getattr(exc, "error_message", None) or str(exc)
        if status == 409:
            return SchemaRefusedError(
                "schema registry refused the new schema version as incompatible with the subject's "
                "earlier versions; make the change compatible (e.g. add a nullable column instead of "
                "changing a type), or change the subject's compatibility level "
                f"(PUT /config/{subject}) or register the version yourself",
                subject=subject, compatibility=self._compatibility(subject), reason=reason[:600])
        if failures.registry_unavailable(status):
            return RegistryUnavailableError(f"schema registry unavailable: {reason[:300]}", subject=subject)
        return CodecError(f"schema registry refused the schema: {reason[:600]}", subject=subject,
                          http_status=status)

    def _compatibility(self, subject: str) -> str:
        """The subject's compatibility level (its own, else the registry's global), for messages."""
        for name in (subject, None):
            try:
                return str(self._client.get_compatibility(name))
            except Exception:
                continue
        return "unknown"

    def lookup(self, data: bytes) -> tuple[Schema, int]:
        """See `SchemaStore.lookup`. Raises `RegistryUnavailableError` (a `CodecError`) when the
        registry does not answer: the record is not at fault and must be read again later."""
        schema_id = framing.confluent_schema_id(data)
        schema = self._by_id.get(schema_id)
        if schema is None:
            with self._lock:
                try:
                    text = self._client.get_schema(schema_id).schema_str
                except Exception as exc:
                    status = getattr(exc, "http_status_code", None)
                    if failures.registry_unavailable(status):
                        # not the record's fault: the caller reads it again later
                        raise RegistryUnavailableError(f"schema registry unavailable: {str(exc)[:300]}",
                                                       schema_id=schema_id) from exc
                    raise CodecError(f"unknown schema id: {exc}", schema_id=schema_id) from exc
                schema = self._by_id[schema_id] = json.loads(text)
        return schema, framing.CONFLUENT_HEADER

    def export_avsc(self, directory: str | Path) -> list[Path]:
        """See `SchemaStore.export_avsc`: the schemas this instance registered or looked up,
        named `<fullname>.<id>.avsc`."""
        return write_avsc(directory, [(f"{full_name(s)}.{i}", s) for i, s in sorted(self._by_id.items())])
