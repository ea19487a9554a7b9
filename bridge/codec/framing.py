"""Wire framing of Avro bodies: single-object encoding and Confluent's registry framing.

- Single-object encoding (Avro spec): `C3 01` + the 8-byte little-endian CRC-64-AVRO fingerprint
  of the schema's Parsing Canonical Form + body.
- Confluent: magic byte `00` + 4-byte big-endian schema id + body.
"""

from __future__ import annotations

from typing import Any, Final

from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import to_parsing_canonical_form

from bridge.errors import CodecError

SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
SINGLE_OBJECT_HEADER: Final = 10
CONFLUENT_MAGIC: Final = b"\x00"
CONFLUENT_HEADER: Final = 5


def fingerprint(schema: Any) -> bytes:
    """The 8 bytes of the CRC-64-AVRO fingerprint of `schema`'s canonical form, in the byte order
    single-object encoding writes them (little-endian). Raises `CodecError` for an invalid schema."""
    try:
        return bytes.fromhex(_fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
    except Exception as exc:
        raise CodecError(f"schema has no canonical form: {exc}") from exc


def single_object_prefix(fp: bytes) -> bytes:
    """`C3 01` + fingerprint: what precedes every body written with that schema."""
    if len(fp) != 8:
        raise CodecError("a fingerprint has 8 bytes", size=len(fp))
    return SINGLE_OBJECT_MAGIC + fp


def confluent_prefix(schema_id: int) -> bytes:
    """`00` + the 4-byte big-endian registry id."""
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")


def describe(data: bytes) -> str:
    """What the first bytes of a record look like, for error messages."""
    head = bytes(data[:12]).hex(" ")
    if not data:
        return "empty value"
    if data[:2] == SINGLE_OBJECT_MAGIC:
        return f"single-object framing ({head})"
    if data[:1] == CONFLUENT_MAGIC:
        return f"Confluent framing ({head})"
    return f"unknown framing ({head})"


def single_object_fingerprint(data: bytes) -> bytes:
    """The fingerprint of a single-object-encoded record. Raises `CodecError` if not framed so."""
    if len(data) < SINGLE_OBJECT_HEADER or data[:2] != SINGLE_OBJECT_MAGIC:
        raise CodecError("not an Avro single-object record (expected C3 01 + 8-byte fingerprint)",
                         got=describe(data), size=len(data))
    return bytes(data[2:SINGLE_OBJECT_HEADER])


def confluent_schema_id(data: bytes) -> int:
    """The registry id of a Confluent-framed record. Raises `CodecError` if not framed so."""
    if len(data) < CONFLUENT_HEADER or data[:1] != CONFLUENT_MAGIC:
        raise CodecError("not a Confluent-framed record (expected 00 + 4-byte schema id)",
                         got=describe(data), size=len(data))
    return int.from_bytes(data[1:CONFLUENT_HEADER], "big")
