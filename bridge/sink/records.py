"""The sink's input: a decoded change with the Kafka coordinates it was read from.

The change is the pipeline's one change type, `bridge.events.ChangeEvent`, as
`bridge.codec.EnvelopeDecoder.decode` returns it; every stage after consume (batch, apply,
stage, checkpoint) reads it through a `SinkRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.events import ChangeEvent

PartitionKey = tuple[str, int]
"""`(topic, partition)`: the key of the sink's per-partition state (positions, offsets, acks).
A plain tuple, not confluent-kafka's `TopicPartition` class, which also carries an offset."""


@dataclass(slots=True)
class SinkRecord:
    """One consumed record: where it came from and what it says.

    Built once per consumed record by the sink loop, so not frozen (a frozen dataclass's
    construction costs about twice as much); nothing changes it afterwards."""

    topic: str
    partition: int
    offset: int
    change: ChangeEvent
