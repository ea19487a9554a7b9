"""How `RegistrySchemaStore` classifies what the registry answers (no process: a stub client).

409 → `SchemaRefusedError` naming subject and level (the producer holds); no answer / 5xx →
`RegistryUnavailableError` (waited for); anything else → a plain `CodecError` (fatal). The real
registry's answers are exercised in tests/ecosystem/test_registry.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bridge.codec import RegistrySchemaStore
from bridge.errors import CodecError, RegistryUnavailableError, SchemaRefusedError

SCHEMA = {"type": "record", "name": "Value", "namespace": "t", "fields": [{"name": "a", "type": "int"}]}


class _Client:
    def __init__(self, exc: Exception, levels: dict[str | None, str]) -> None:
        self.exc, self.levels = exc, levels

    def register_schema(self, subject: str, schema: Any) -> int:
        raise self.exc

    def get_schema(self, schema_id: int) -> Any:
        raise self.exc

    def get_compatibility(self, subject: str | None = None) -> str:
        if subject not in self.levels:
            raise SchemaRegistryError(404, 40401, "no config")
        return self.levels[subject]


def _store(exc: Exception, levels: dict[str | None, str] | None = None) -> RegistrySchemaStore:
    return RegistrySchemaStore("http://127.0.0.1:1", client=_Client(exc, levels or {None: "BACKWARD"}))


@pytest.mark.parametrize(("levels", "expected"), [({None: "BACKWARD"}, "BACKWARD"),
                                                  ({None: "BACKWARD", "s-value": "FULL"}, "FULL")])
def test_409_is_a_refusal_naming_subject_and_level(levels: dict[str | None, str], expected: str) -> None:
    store = _store(SchemaRegistryError(409, 409, "Incompatible artifact"), levels)
    with pytest.raises(SchemaRefusedError) as info:
        store.register(SCHEMA, subject="s-value")
    assert info.value.context["subject"] == "s-value"
    assert info.value.context["compatibility"] == expected
    assert "Incompatible artifact" in info.value.context["reason"]


@pytest.mark.parametrize("exc", [SchemaRegistryError(503, 50003, "down"), ConnectionError("refused"),
                                 TimeoutError("timed out")])
def test_no_answer_is_unavailable(exc: Exception) -> None:
    with pytest.raises(RegistryUnavailableError):
        _store(exc).register(SCHEMA, subject="s-value")
    with pytest.raises(RegistryUnavailableError):
        _store(exc).lookup(b"\x00\x00\x00\x00\x07body")


def test_other_answers_are_plain_codec_errors() -> None:
    with pytest.raises(CodecError) as info:
        _store(SchemaRegistryError(422, 42201, "Invalid schema")).register(SCHEMA, subject="s-value")
    assert not isinstance(info.value, (SchemaRefusedError, RegistryUnavailableError))
    with pytest.raises(CodecError) as found:
        _store(SchemaRegistryError(404, 40403, "Schema not found")).lookup(b"\x00\x00\x00\x00\x07body")
    assert not isinstance(found.value, RegistryUnavailableError), "an unknown id is the record's fault"
