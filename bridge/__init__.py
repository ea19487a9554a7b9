"""bridge — a Kafka-compatible change-stream bridge for PostgreSQL."""

from __future__ import annotations

__version__ = "0.1.0"
