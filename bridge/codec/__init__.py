"""Avro schemas from relations, fast encoders/decoders, framing and schema stores.

Other modules use `TableCodec` (producer), `EnvelopeDecoder` (sink) and a `SchemaStore`
(`TopicSchemaStore` by default, `RegistrySchemaStore` with a registry URL).
"""

from __future__ import annotations

from bridge.codec.codec import EnvelopeDecoder, Stamp, TableCodec
from bridge.codec.decoder import compile_decoder, compile_reader
from bridge.codec.encoder import compile_writer
from bridge.codec.names import avro_name, field_names
from bridge.codec.registry import RegistrySchemaStore
from bridge.codec.schemas import key_schema, value_schema
from bridge.codec.store import MemorySchemaStore, SchemaStore, TopicSchemaStore
from bridge.codec.validate import relation_from_schema
from bridge.kafka.topics import topic_name

__all__ = [
    "EnvelopeDecoder",
    "MemorySchemaStore",
    "RegistrySchemaStore",
    "SchemaStore",
    "Stamp",
    "TableCodec",
    "TopicSchemaStore",
    "avro_name",
    "compile_decoder",
    "compile_reader",
    "compile_writer",
    "field_names",
    "key_schema",
    "relation_from_schema",
    "topic_name",
    "value_schema",
]
