"""The producer's initial snapshot with the native core against itself with `BRIDGE_NATIVE=0`.

Two snapshots of the same database (each with its own slot, exported snapshot and topic prefix;
nothing writes in between), through the producer's own wiring (`app.build_producer`) into a real
broker. Every topic must hold the same records in the same partitions and order: equal key
bodies, equal decoded envelopes (all but `commit_lsn` and `ts_ms`, which differ between the two
slots and runs) and equal `seq` headers. The tables: every supported type (with NULLs, arrays,
infinities, identifiers needing quotes), a larger one read in several chunks, and one without
a primary key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bridge.codec import EnvelopeDecoder
from bridge.codec.store import TopicSchemaStore
from bridge.kafka.topics import topic_name
from tests.conftest import Broker
from tests.integration.test_native_snapshot import EVERY_TYPE, ROWS
from tests.support.topics import read_to_end

TABLES = ['Odd "Name" tbl', "big", "nokey"]


def populate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy it''s')")
        conn.execute(EVERY_TYPE)
        for row in ROWS:
            conn.execute(f'INSERT INTO public."Odd ""Name"" tbl" VALUES {row}')
        conn.execute("CREATE TABLE public.big (id bigint PRIMARY KEY, amount numeric(12,2), note text, "
                     "at timestamptz, tags int[])")
        conn.execute("INSERT INTO public.big SELECT g, g / 7.0, 'it''s ' || g, timestamptz '2026-01-01' + "
                     "g * interval '1 min', ARRAY[g, NULL] FROM generate_series(1, 2500) g")
        conn.execute("CREATE TABLE public.nokey (n int, t text)")
        conn.execute("INSERT INTO public.nokey SELECT g, 'n' || g FROM generate_series(1, 1200) g")


def snapshot(dsn: str, bootstrap: str, tag: str, workdir: Path, monkeypatch: pytest.MonkeyPatch,
             native_on: bool) -> None:
    from bridge.app import build_producer
    from bridge.config import load_config
    from bridge.source.slot import SlotManager

    monkeypatch.setenv("BRIDGE_NATIVE", "1" if native_on else "0")
    path = workdir / f"{tag}.json"
    path.write_text(json.dumps({
        "source": {"dsn": dsn, "slot": f"snap_{tag}", "tables": ["public.*"], "snapshot": "initial",
                   "snapshot_chunk_rows": 400},
        "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": tag, "partitions": 3},
        "ack": "kafka",
    }))
    cfg = load_config(str(path))
    producer, close = build_producer(cfg)
    try:
        assert producer.snapshot is not None
        assert producer.snapshot.run(lambda: False)
        producer.emitter.flush(60)
    finally:
        close()
        SlotManager(cfg.source.conninfo(), cfg.source.slot).drop()


def contents(bootstrap: str, prefix: str, table: str) -> dict[int, list[Any]]:
    dec = EnvelopeDecoder(TopicSchemaStore(bootstrap, prefix), topic_prefix=prefix)
    out: dict[int, list[Any]] = {}
    recs = sorted(read_to_end(bootstrap, [topic_name(prefix, "public", table)]), key=lambda r: (r.partition, r.offset))
    for r in recs:
        assert r.value is not None
        e = dec.decode(r.value)
        seq = dict(r.headers)["bridge.seq"]
        key = None if r.key is None else r.key[10:]  # the body: the framing names the prefix's schema
        out.setdefault(r.partition, []).append(
            (key, e.op, e.position.seq, seq, e.xid, e.before, e.after, e.snapshot, e.unchanged))
    return out


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_native_snapshot_writes_what_the_reference_writes(broker: Broker, source_dsn: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    populate(source_dsn)
    caplog.set_level("INFO", logger="bridge.source.native_snapshot")
    caplog.set_level("INFO", logger="bridge.produce.initial_snapshot")
    snapshot(source_dsn, broker.bootstrap, "pnat", tmp_path, monkeypatch, native_on=True)
    assert caplog.text.count("read through binary COPY (native core)") == len(TABLES), caplog.text
    assert "reference path" not in caplog.text  # no chunk missed
    caplog.clear()
    snapshot(source_dsn, broker.bootstrap, "pref", tmp_path, monkeypatch, native_on=False)
    assert "binary COPY" not in caplog.text
    sizes = {}
    for table in TABLES:
        nat = contents(broker.bootstrap, "pnat", table)
        ref = contents(broker.bootstrap, "pref", table)
        assert repr(nat) == repr(ref), table  # repr: NaN floats are not equal to themselves
        sizes[table] = sum(len(v) for v in nat.values())
    assert sizes == {'Odd "Name" tbl': 4, "big": 2500, "nokey": 1200}
