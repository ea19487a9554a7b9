"""Prometheus metrics. Names and labels are fixed: the Helm chart's dashboard and alert rules use them.

The only module-level state in the project. Components update these objects directly
(`metrics.CHANGES_CAPTURED.labels(table=..., op=...).inc()`); `bridge.health.HealthServer`
serves them on `/metrics`. `*_created` series are switched off: they double the series count and
nothing here reads them.
"""

from __future__ import annotations

import time

import prometheus_client
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bridge.lsn import Lsn

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# Source commit -> applied in target: sub-10 ms when idle on one host, up to a minute when catching up.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Rows per sink batch: 1 (trickle) to 100k (catch-up with large batch_max_rows).
ROWS_BUCKETS = (1, 10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000)
# Durations of one batch / one operation: 1 ms to 30 s.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")

UP = Gauge("bridge_up", "1 while the component's loop runs", ["component"])
CHANGES_CAPTURED = Counter("bridge_changes_captured_total", "Row changes decoded from the slot", ["table", "op"])
TRANSACTIONS = Counter("bridge_transactions_total", "Committed source transactions seen")
DECODED_BYTES = Counter("bridge_decoded_bytes_total", "test_decoding text bytes read")
NATIVE_CHANGES = Counter("bridge_producer_native_changes_total",
                         "Changes the native core parsed, converted and encoded whole (the others took the "
                         "Python reference path)")
RECORDS_PRODUCED = Counter("bridge_records_produced_total", "Records delivered to the broker", ["topic"])
PRODUCE_ERRORS = Counter("bridge_produce_errors_total", "Records the broker refused or lost")
SLOT_RETAINED_WAL = Gauge("bridge_slot_retained_wal_bytes",
                          "WAL the slot keeps on the server: pg_current_wal_lsn() - restart_lsn", ["slot"])
SLOT_CONFIRMED_LSN = Gauge("bridge_slot_confirmed_lsn", "confirmed_flush_lsn of the slot, as a number", ["slot"])
SLOT_WAL_STATUS = Gauge("bridge_slot_wal_status", "1 for the slot's current wal_status", ["slot", "status"])
WATERMARK_LSN = Gauge("bridge_watermark_lsn", "Highest commit LSN the producer may confirm")
ACKED_LSN = Gauge("bridge_acked_lsn", "Highest acked commit LSN seen")
END_TO_END_LAG = Histogram("bridge_end_to_end_lag_seconds", "Source commit to applied in target",
                           buckets=LAG_BUCKETS)
SINK_ROWS_APPLIED = Counter("bridge_sink_rows_applied_total", "Row changes applied in the target",
                            ["table", "op"])
SINK_BATCH_ROWS = Histogram("bridge_sink_batch_rows", "Records per sink batch", buckets=ROWS_BUCKETS)
SINK_BATCH_DURATION = Histogram("bridge_sink_batch_duration_seconds",
                                "Stage + apply + commit time of one sink batch", buckets=DURATION_BUCKETS)
DEAD_LETTERS = Counter("bridge_dead_letters_total", "Records sent to the dead-letter topic", ["topic"])
SCHEMAS_SKIPPED = Counter("bridge_schema_entries_skipped_total",
                          "Entries of the schema topic skipped as unusable", ["reason"])
SINK_CONSUMER_LAG = Gauge("bridge_sink_consumer_lag", "Records behind the partition's high watermark",
                          ["topic", "partition"])
HEARTBEATS = Counter("bridge_heartbeats_total", "Heartbeat messages emitted on the source")
SNAPSHOT_ROWS = Counter("bridge_snapshot_rows_total", "Rows read by the initial snapshot", ["table"])
SNAPSHOT_TABLES_REMAINING = Gauge("bridge_snapshot_tables_remaining", "Tables the snapshot has still to read")
LAST_PROGRESS = Gauge("bridge_last_progress_timestamp_seconds",
                      "Unix time of the last record produced/applied or slot confirm", ["component"])

# The exposed names (counters with their `_total`), for tests, the dashboard and the alert rules.
METRIC_NAMES = (
    "bridge_up", "bridge_changes_captured_total", "bridge_transactions_total", "bridge_decoded_bytes_total",
    "bridge_records_produced_total", "bridge_produce_errors_total", "bridge_slot_retained_wal_bytes",
    "bridge_slot_confirmed_lsn", "bridge_slot_wal_status", "bridge_watermark_lsn", "bridge_acked_lsn",
    "bridge_end_to_end_lag_seconds", "bridge_sink_rows_applied_total", "bridge_sink_batch_rows",
    "bridge_sink_batch_duration_seconds", "bridge_dead_letters_total", "bridge_sink_consumer_lag",
    "bridge_heartbeats_total", "bridge_snapshot_rows_total", "bridge_snapshot_tables_remaining",
    "bridge_last_progress_timestamp_seconds",
)


def set_wal_status(slot: str, status: str) -> None:
    """Called after each slot status poll: 1 for `status`, 0 for the others (so alerts see the change)."""
    for s in WAL_STATUSES:
        SLOT_WAL_STATUS.labels(slot=slot, status=s).set(1 if s == status else 0)
    if status not in WAL_STATUSES:
        SLOT_WAL_STATUS.labels(slot=slot, status=status).set(1)


def set_slot(slot: str, confirmed: Lsn | None, retained_wal_bytes: int | None, wal_status: str | None) -> None:
    """Called after each slot status poll with what `pg_replication_slots` reported."""
    if confirmed is not None:
        SLOT_CONFIRMED_LSN.labels(slot=slot).set(int(confirmed))
    if retained_wal_bytes is not None:
        SLOT_RETAINED_WAL.labels(slot=slot).set(retained_wal_bytes)
    if wal_status is not None:
        set_wal_status(slot, wal_status)


def progress(component: str, now: float | None = None) -> None:
    """Called when `component` made progress (record produced/applied, slot confirmed)."""
    LAST_PROGRESS.labels(component=component).set(time.time() if now is None else now)


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The text exposition of `registry` (what `/metrics` serves)."""
    return generate_latest(registry)
