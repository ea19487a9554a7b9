from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.local.brokers import LocalKafka


@pytest.fixture
def kafka_broker() -> Iterator[LocalKafka]:
    """Apache Kafka for one chaos test: it is stopped and restarted with its log dirs kept."""
    broker = LocalKafka()
    broker.start()
    try:
        yield broker
    finally:
        broker.destroy()
