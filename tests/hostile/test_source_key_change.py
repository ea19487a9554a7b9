"""A primary-key change while streaming: `ALTER TABLE … DROP CONSTRAINT …, ADD PRIMARY KEY (b)`.

The producer used to stop with an internal TypeError (the old key columns still in use). It must
re-read the catalog and go on: a new relation version with a new key schema, and every change
after the ALTER keyed by the new key. Checked in the topic, decoded by fastavro with the schemas
from `<prefix>._schemas` (not the project's decoder).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg

from bridge.codec.names import topic_name
from tests.conftest import Broker
from tests.pipeline import BridgeProcess, wait_slot_active, write_config
from tests.support.topics import decoded
from tests.support.waits import wait_for


def _changes(bootstrap: str, prefix: str, topic: str) -> list[tuple[str, object, object]]:
    """(op, decoded key, column b) of every record of `topic` in position order (no tombstones)."""
    recs = [r for r in decoded(bootstrap, prefix, topic) if r.value is not None]
    recs.sort(key=lambda r: (r.value["source"]["commit_lsn"], r.value["source"]["seq"]))
    return [(r.value["op"], r.key, (r.value["after"] or r.value["before"] or {}).get("b")) for r in recs]


def test_primary_key_change_is_followed(broker: Broker, source_dsn: str, tmp_path: Path) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        for t in ("acct", "quiet"):
            conn.execute(f"CREATE TABLE public.{t} (a int PRIMARY KEY, b int NOT NULL, v text)")
            conn.execute(f"INSERT INTO public.{t} SELECT g, 1000 + g, 'old' FROM generate_series(1, 3) g")
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=source_dsn, bootstrap=broker.bootstrap,
                       ack="kafka", prefix=prefix)
    slot = json.loads(cfg.read_text())["source"]["slot"]
    acct, quiet = topic_name(prefix, "public", "acct"), topic_name(prefix, "public", "quiet")
    producer = BridgeProcess("produce", cfg, tmp_path).start()
    try:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            wait_slot_active(source_dsn, slot, producer)
            for t in ("acct", "quiet"):
                conn.execute(f"UPDATE public.{t} SET v = 'before' WHERE a = 1")
                conn.execute(f"DELETE FROM public.{t} WHERE a = 3")
            wait_for(lambda: len(_changes(broker.bootstrap, prefix, quiet)) >= 2, 60, "changes before the ALTER",
                     [producer])
            for t in ("acct", "quiet"):
                conn.execute(f"ALTER TABLE public.{t} DROP CONSTRAINT {t}_pkey, ADD PRIMARY KEY (b)")
            # acct: a DELETE right after the ALTER prints the new key columns (this stopped the
            # producer with a TypeError); every change after it uses the new key.
            conn.execute("DELETE FROM public.acct WHERE b = 1002")
            conn.execute("INSERT INTO public.acct VALUES (10, 2010, 'after')")
            conn.execute("UPDATE public.acct SET v = 'after', a = 20 WHERE b = 1001")
            # quiet: only inserts and key-keeping updates, which show no key at all; the producer
            # notices the new key from the catalog (within a second) and says so.
            wait_for(lambda: "primary key or replica identity of public.quiet changed" in producer.log_tail(400),
                     30, "the producer to notice the key change of public.quiet", [producer])
            conn.execute("INSERT INTO public.quiet VALUES (10, 2010, 'after')")
            conn.execute("UPDATE public.quiet SET v = 'after', a = 20 WHERE b = 1001")

        def done(topic: str) -> list[tuple[str, object, object]] | None:
            seen = _changes(broker.bootstrap, prefix, topic)
            return seen if len(seen) >= 4 + (topic == acct) else None

        seen = wait_for(lambda: done(acct), 60, "the changes of acct after the ALTER", [producer])
        assert [(op, key) for op, key, _b in seen] == [
            ("u", {"a": 1}), ("d", {"a": 3}), ("d", {"b": 1002}), ("c", {"b": 2010}), ("u", {"b": 1001})], seen
        seen = wait_for(lambda: done(quiet), 60, "the changes of quiet after the ALTER", [producer])
        assert [(op, key) for op, key, _b in seen] == [
            ("u", {"a": 1}), ("d", {"a": 3}), ("c", {"b": 2010}), ("u", {"b": 1001})], seen
        assert producer.alive(), producer.log_tail()
    finally:
        producer.terminate()
