"""Two distinct tables whose dotted names collide: `"public.a".b` and `public."a.b"`.

Both must be in the initial snapshot (its state was keyed by dotted text, so one of the two was
left out without a word) and each must have a topic of its own (both used to map to
`<prefix>.public.a.b`), for snapshot rows and streamed changes alike.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg

from bridge.codec.names import topic_name
from tests.conftest import Broker
from tests.pipeline import BridgeProcess, write_config
from tests.support.topics import decoded, list_topics
from tests.support.waits import wait_for


def test_colliding_dotted_names_are_two_tables(broker: Broker, source_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "public.a"')
        conn.execute('CREATE TABLE "public.a".b (id int PRIMARY KEY, who text NOT NULL)')
        conn.execute('CREATE TABLE public."a.b" (id int PRIMARY KEY, who text NOT NULL)')
        conn.execute('CREATE TABLE public.plain (id int PRIMARY KEY)')
        conn.execute("""INSERT INTO "public.a".b SELECT g, 'schema-dot' FROM generate_series(1, 5) g""")
        conn.execute("""INSERT INTO public."a.b" SELECT g, 'table-dot' FROM generate_series(1, 7) g""")
    prefix = f"p{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=source_dsn, bootstrap=broker.bootstrap,
                       ack="kafka", prefix=prefix, source__snapshot="initial", source__tables=["public*.*"])
    one, two = topic_name(prefix, "public.a", "b"), topic_name(prefix, "public", "a.b")
    assert one != two
    assert topic_name(prefix, "public", "plain") == f"{prefix}.public.plain"  # ordinary names unchanged
    producer = BridgeProcess("produce", cfg, tmp_path).start()
    try:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            wait_for(lambda: {one, two} <= list_topics(broker.bootstrap, prefix), 60, "both topics", [producer])
            conn.execute("""INSERT INTO "public.a".b VALUES (100, 'schema-dot')""")
            conn.execute("""INSERT INTO public."a.b" VALUES (100, 'table-dot')""")

        def rows(topic: str) -> list[tuple[str, int, str, str]] | None:
            recs = decoded(broker.bootstrap, prefix, topic)
            got = sorted((r.value["op"], r.value["after"]["id"], r.value["after"]["who"],
                          r.value["source"]["schema"] + "|" + r.value["source"]["table"])
                         for r in recs if r.value is not None)
            return got if any(op == "c" for op, *_ in got) else None

        got_one = wait_for(lambda: rows(one), 60, f"records in {one}", [producer])
        got_two = wait_for(lambda: rows(two), 60, f"records in {two}", [producer])
        assert got_one == [("c", 100, "schema-dot", "public.a|b")] + [
            ("r", i, "schema-dot", "public.a|b") for i in range(1, 6)]
        assert got_two == [("c", 100, "table-dot", "public|a.b")] + [
            ("r", i, "table-dot", "public|a.b") for i in range(1, 8)]
        assert producer.alive(), producer.log_tail()
    finally:
        producer.terminate()
