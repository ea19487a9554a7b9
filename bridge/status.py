"""`pgbridge status`: where the slot, the producer and the sink stand, read from the outside.

Nothing here needs a running producer or sink: the slot comes from `pg_replication_slots`, the
producer's last positions from the tails of its topics, the sink's applied positions from the
ack channel, consumer lag from the group's committed offsets against the high watermarks.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bridge.ack.channel import AckReader
from bridge.config import Config
from bridge.errors import BridgeError
from bridge.kafka.topics import data_topic_pattern
from bridge.produce.topics import TailReader


def _data_topics(admin: AdminClient, prefix: str) -> dict[str, int]:
    import re

    pattern = re.compile(data_topic_pattern(prefix))
    md = admin.list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items() if pattern.match(name)}


def collect_status(cfg: Config) -> dict[str, Any]:
    """One JSON-able object: `slot`, `producer`, `watermark`, `sink` (see the design's contract)."""
    out: dict[str, Any] = {"slot": None, "producer": {}, "sink": {}, "watermark": None, "errors": []}
    if cfg.source.dsn:
        _slot_status(cfg, out)
    try:
        admin = AdminClient({**cfg.kafka.client_config(), "log_level": 0})
        topics = _data_topics(admin, cfg.kafka.topic_prefix)
    except Exception as exc:
        out["errors"].append(f"kafka: {exc}")
        return out
    out["producer"] = _producer_status(cfg, topics)
    lag = _consumer_lag(cfg, topics)
    out["sink"] = {"group_id": cfg.sink.group_id, "acked": _acked(cfg), "consumer_lag": lag,
                   "consumer_lag_total": sum(lag.values())}
    return out


def _slot_status(cfg: Config, out: dict[str, Any]) -> None:
    """`slot` and `watermark` from `pg_replication_slots`; a lost slot or a failure in `errors`."""
    from bridge.source.slot import SlotManager

    try:
        st = SlotManager(cfg.source.conninfo(), cfg.source.slot).status()
        if st is None:
            out["slot"] = {"name": cfg.source.slot, "exists": False}
        else:
            out["slot"] = {**st.as_dict(), "exists": True}
            out["watermark"] = str(st.confirmed_flush_lsn) if st.confirmed_flush_lsn else None
            if st.wal_status == "lost":
                from bridge.source.slot import wal_lost_message

                out["errors"].append(f"source: {wal_lost_message(cfg.source.slot)}")
    except BridgeError as exc:
        out["errors"].append(f"source: {exc}")


def _producer_status(cfg: Config, topics: dict[str, int]) -> dict[str, Any]:
    """The position of the last record of each data partition, and the highest of them."""
    tails = TailReader(cfg.kafka.bootstrap_servers, dict(cfg.kafka.config))
    produced: dict[str, str] = {}
    last = None
    try:
        for topic, n in sorted(topics.items()):
            for p, pos in tails.tails(topic, n).items():
                produced[f"{topic}/{p}"] = str(pos)
                last = pos if last is None or pos > last else last
    finally:
        tails.close()
    return {"last_produced": str(last) if last else None, "partitions": produced}


def _acked(cfg: Config) -> dict[str, str]:
    """The sink's last ack per data partition, from `<prefix>._acks`."""
    from bridge.app import signer

    reader = AckReader(cfg.kafka.bootstrap_servers, cfg.kafka.topic_prefix, dict(cfg.kafka.config),
                       signer=signer(cfg))
    acked: dict[str, str] = {}
    try:
        for ack in reader.read_to_end(timeout=10):
            acked[f"{ack.topic}/{ack.partition}"] = str(ack.position)
    finally:
        reader.close()
    return acked


def _consumer_lag(cfg: Config, topics: dict[str, int]) -> dict[str, int]:
    """Records not yet committed by the sink's group, per data partition."""
    lag: dict[str, int] = {}
    consumer = Consumer({**cfg.kafka.client_config(), "group.id": cfg.sink.group_id, "log_level": 0,
                         "enable.auto.commit": False})
    try:
        tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        if tps:
            for tp in consumer.committed(tps, timeout=10):
                _lo, hi = consumer.get_watermark_offsets(tp, timeout=10)
                done = tp.offset if tp.offset >= 0 else 0
                lag[f"{tp.topic}/{tp.partition}"] = max(0, hi - done)
    finally:
        consumer.close()
    return lag


def format_status(st: dict[str, Any]) -> str:
    lines = []
    slot = st.get("slot") or {}
    if slot:
        lines.append(f"slot {slot.get('name')}: confirmed {slot.get('confirmed_flush_lsn')}, "
                     f"retained WAL {slot.get('retained_wal_bytes')} bytes, wal_status {slot.get('wal_status')}, "
                     f"active {slot.get('active')}")
    prod = st.get("producer") or {}
    lines.append(f"producer: last produced {prod.get('last_produced')}")
    sink = st.get("sink") or {}
    lines.append(f"sink {sink.get('group_id')}: consumer lag {sink.get('consumer_lag_total')} records, "
                 f"{len(sink.get('acked') or {})} partitions acked")
    for e in st.get("errors") or []:
        lines.append(f"error: {e}")
    return "\n".join(lines)
