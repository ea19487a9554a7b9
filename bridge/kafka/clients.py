"""The librdkafka properties the bridge's clients share.

Each client starts from `bootstrap.servers`, takes its own settings, then `kafka.config` (which
wins), with librdkafka's own log lines routed into Python logging. The change producer's and the
sink consumer's own settings live beside them (`bridge.produce.producer.kafka_producer_config`,
`bridge.sink.loop.kafka_consumer_config`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.config import KafkaConfig

LIBRDKAFKA_LOGGER = "bridge.kafka"  # librdkafka's log lines, at their level, as JSON with the rest


def client_extra(kafka: KafkaConfig) -> dict[str, Any]:
    """`kafka.config` for every client, with librdkafka's own log lines routed into Python logging
    (so they come out as JSON lines with the rest, at their level)."""
    return {**kafka.config, "logger": logging.getLogger(LIBRDKAFKA_LOGGER)}


def side_producer_config(bootstrap: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The sink's producer of acks and dead letters: idempotent, `acks=all`, little lingering
    (the sink waits for each flush before it reads on)."""
    return {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5, **extra}
