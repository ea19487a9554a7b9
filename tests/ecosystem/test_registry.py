"""The bridge against a real schema registry (Apicurio Registry, Confluent-compatible API).

On both brokers: the producer registers its schemas (subjects `<topic>-key` / `<topic>-value`,
TopicNameStrategy) and frames records with the registry's ids; the sink applies them to the
target; a consumer that knows nothing of the bridge decodes every record with confluent-kafka's
`SchemaRegistryClient` + `AvroDeserializer`. Schema evolution (ADD COLUMN, varchar / numeric /
integer widening) passes the registry's BACKWARD check; a change the subject's level refuses
holds the producer (alive, with an error naming subject and level) until the operator acts,
then the pipeline goes on without a restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bridge.codec.names import topic_name
from bridge.local import free_port
from bridge.local.registry import LocalRegistry
from tests.conftest import Broker
from tests.pipeline import (
    REPO,
    BridgeProcess,
    wait_converged,
    wait_slot_active,
    write_config,
)
from tests.support.topics import Record, read_to_end
from tests.support.waits import check_alive, logs_of, wait_for

DDL = """
CREATE TABLE public.items (id int PRIMARY KEY, name varchar(20) NOT NULL, price numeric(8,2), qty int);
"""
COLUMNS = ["id", "name", "price", "qty", "note"]


def _subject_versions(registry: LocalRegistry, subject: str) -> list[int]:
    return list(registry.request("GET", f"/subjects/{subject}/versions"))


def _read_all(bootstrap: str, topic: str) -> list[Record]:
    """Every record of `topic` (all partitions), read to the end."""
    return read_to_end(bootstrap, [topic], timeout=60)


def _independent_decode(registry: LocalRegistry, bootstrap: str, topic: str) -> dict[int, dict[str, Any] | None]:
    """The last row per id as a third-party consumer sees it (None after a delete). Values are
    read with the subject's latest schema as the reader schema, as a consumer upgraded first
    (BACKWARD) does: rows written before ADD COLUMN get the new column's default."""
    client = SchemaRegistryClient({"url": registry.url})
    latest = client.get_latest_version(f"{topic}-value").schema.schema_str
    keys, values = AvroDeserializer(client), AvroDeserializer(client, latest)
    rows: list[tuple[tuple[int, int, int], int, dict[str, Any] | None]] = []
    for msg in _read_all(bootstrap, topic):
        key = keys(msg.key, SerializationContext(topic, MessageField.KEY))
        if msg.value is None:
            continue  # tombstone after a delete
        env = values(msg.value, SerializationContext(topic, MessageField.VALUE))
        assert env["op"] in ("c", "u", "d"), env
        src = env["source"]
        assert src["table"] == "items" and src["schema"] == "public"
        rows.append(((src["commit_lsn"], src["seq"], 0), key["id"], env["after"]))
    last: dict[int, dict[str, Any] | None] = {}
    for _pos, pk, after in sorted(rows, key=lambda r: r[0]):
        last[pk] = after
    return last


def _probe(proc: BridgeProcess, path: str) -> int:
    """The HTTP status of the process's /healthz or /readyz."""
    port = proc.env["BRIDGE_METRICS__PORT"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _source_rows(dsn: str) -> dict[int, dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute("SELECT id, name, price, qty, note FROM public.items")
        return {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()}


def _start(broker: Broker, registry: LocalRegistry, source_dsn: str, target_dsn: str, tmp_path: Path
           ) -> tuple[Path, BridgeProcess, BridgeProcess, str]:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute(DDL)
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap,
                       kafka__schema_registry_url=registry.url)
    prefix = json.loads(cfg.read_text())["kafka"]["topic_prefix"]
    producer = BridgeProcess("produce", cfg, tmp_path, env={"BRIDGE_METRICS__PORT": str(free_port())}).start()
    sink = BridgeProcess("sink", cfg, tmp_path).start()
    slot = json.loads(cfg.read_text())["source"]["slot"]
    wait_slot_active(source_dsn, slot, producer)
    return cfg, producer, sink, topic_name(prefix, "public", "items")


def test_registry_pipeline_with_schema_evolution(broker: Broker, registry: LocalRegistry, source_dsn: str,
                                                 target_dsn: str, tmp_path: Path) -> None:
    _cfg, producer, sink, topic = _start(broker, registry, source_dsn, target_dsn, tmp_path)
    procs = [producer, sink]
    tables = {"public.items": (COLUMNS, "id")}
    try:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.items SELECT g, 'item ' || g, g * 1.25, g FROM generate_series(1, 30) g")
            conn.execute("DELETE FROM public.items WHERE id = 3")
            wait_converged(source_dsn, target_dsn, {"public.items": (COLUMNS[:4], "id")}, procs=procs)
            conn.execute("ALTER TABLE public.items ADD COLUMN note text")
            conn.execute("UPDATE public.items SET note = 'n' || id WHERE id <= 10")
            conn.execute("INSERT INTO public.items VALUES (31, 'thirty-one', 1.5, 31, 'added')")
            wait_converged(source_dsn, target_dsn, tables, procs=procs)
            # widening: varchar(20) -> varchar(60), numeric(8,2) -> numeric(14,2), int -> bigint
            conn.execute("ALTER TABLE public.items ALTER COLUMN name TYPE varchar(60), "
                         "ALTER COLUMN price TYPE numeric(14,2), ALTER COLUMN qty TYPE bigint")
            conn.execute("UPDATE public.items SET name = repeat('w', 50), price = 123456789012.34, "
                         "qty = 9000000000 WHERE id IN (1, 2)")
            conn.execute("INSERT INTO public.items VALUES (32, repeat('x', 60), 99999999.99, 5000000000, null)")
        wait_converged(source_dsn, target_dsn, tables, procs=procs)
        check_alive(procs)
    finally:
        for p in procs:
            p.terminate()

    # subjects follow TopicNameStrategy; the evolution made new versions the registry accepted
    subjects = set(registry.request("GET", "/subjects"))
    assert {f"{topic}-key", f"{topic}-value"} <= subjects, subjects
    assert len(_subject_versions(registry, f"{topic}-value")) >= 3, "one version per table version"
    assert registry.request("GET", "/config")["compatibilityLevel"] == "BACKWARD"

    # a consumer that knows nothing of the bridge decodes every record through the registry
    seen = _independent_decode(registry, broker.bootstrap, topic)
    expected = _source_rows(source_dsn)
    assert seen[3] is None, "the delete of id 3"
    assert {k: v for k, v in seen.items() if v is not None} == expected
    assert seen[32] == {"id": 32, "name": "x" * 60, "price": Decimal("99999999.99"), "qty": 5000000000,
                        "note": None}


def test_incompatible_change_holds_the_producer_until_the_operator_acts(
        broker: Broker, registry: LocalRegistry, source_dsn: str, target_dsn: str, tmp_path: Path) -> None:
    """A change the subject's compatibility level refuses: the producer stays up, says which
    subject and level refused what and what to do, produces nothing past it, and goes on once
    the level is changed (no restart, no loss)."""
    _cfg, producer, sink, topic = _start(broker, registry, source_dsn, target_dsn, tmp_path)
    procs = [producer, sink]
    subject = f"{topic}-value"
    tables = {"public.items": (COLUMNS[:4], "id")}
    try:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.items VALUES (1, 'one', 1, 1)")
            wait_converged(source_dsn, target_dsn, tables, procs=procs)
            # strict: FULL also needs old readers to read new data, which int -> bigint breaks
            registry.request("PUT", f"/config/{subject}", {"compatibility": "FULL"})
            conn.execute("ALTER TABLE public.items ALTER COLUMN qty TYPE bigint")
            conn.execute("INSERT INTO public.items VALUES (2, 'two', 2, 5000000000)")
        wait_for(lambda: "FULL" in producer.log_tail(200), 60, "the producer to name the refusing level", procs)
        log = producer.log_tail(200)
        assert "refused" in log and subject in log and "FULL" in log, log
        time.sleep(3)  # a window for a wrong exit to happen in (an absence has no state to wait for)
        assert producer.alive(), f"the producer must wait, not exit:\n{logs_of(procs)}"
        if broker.kind == "tansu":
            # past the 60 s liveness window: still alive for Kubernetes (a restart would meet the
            # same refusal), but not ready
            time.sleep(62)  # the subject: the liveness window passes
            assert _probe(producer, "/healthz") == 200
            assert _probe(producer, "/readyz") == 503
        with psycopg.connect(target_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM public.items").fetchone() == (1,)
        # the operator relaxes the subject's level: the held change goes through
        registry.request("PUT", f"/config/{subject}", {"compatibility": "BACKWARD"})
        wait_converged(source_dsn, target_dsn, tables, procs=procs)
        assert producer.starts == 1
    finally:
        for p in procs:
            p.terminate()



def test_demo_with_registry() -> None:
    """`pgbridge demo --registry` (what `REGISTRY=1 make demo` runs): Confluent framing through a
    local Apicurio, one key and one value subject per table, target equals source."""
    res = subprocess.run([sys.executable, "-m", "bridge", "demo", "--registry", "--seconds", "5", "--rate", "300",
                          "--metrics-port", str(free_port())], capture_output=True, text=True, timeout=400,
                         cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "schema registry: http://127.0.0.1:" in res.stdout
    from bridge.codec.names import topic_name

    items = topic_name("demo", "public", "Line Items")  # the contract's escaping of the space
    assert f"registry subjects 6 ({items}-key" in res.stdout, res.stdout[-3000:]
    assert "target == source  yes" in res.stdout, res.stdout[-3000:]


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_unreachable_registry_holds_the_producer_until_it_answers(broker: Broker, source_dsn: str,
                                                                  target_dsn: str, tmp_path: Path) -> None:
    """The registry is down when the first schema is needed: the producer waits for it (alive,
    saying so) and goes on when it answers again."""
    own = LocalRegistry().start()
    try:
        _cfg, producer, sink, _topic = _start(broker, own, source_dsn, target_dsn, tmp_path)
        procs = [producer, sink]
        try:
            own.stop()
            with psycopg.connect(source_dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO public.items VALUES (1, 'one', 1, 1)")
            wait_for(lambda: "schema registry unavailable" in producer.log_tail(100), 60,
                     "the producer to say the registry is unavailable", procs)
            assert producer.alive(), logs_of(procs)
            own.start()
            wait_converged(source_dsn, target_dsn, {"public.items": (COLUMNS[:4], "id")}, procs=procs)
            assert producer.starts == 1
        finally:
            for p in procs:
                p.terminate()
    finally:
        own.destroy()


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_sink_waits_for_a_hung_registry_instead_of_dead_lettering(broker: Broker, source_dsn: str, target_dsn: str,
                                                                  tmp_path: Path) -> None:
    """The sink meets records whose schema it has not fetched yet while the registry hangs: the
    records are not at fault, so none may become a dead letter; they are applied once it answers."""
    own = LocalRegistry().start()
    try:
        cfg, producer, sink, topic = _start(broker, own, source_dsn, target_dsn, tmp_path)
        sink.terminate()  # the sink starts later, when the registry hangs
        procs = [producer]
        try:
            with psycopg.connect(source_dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO public.items SELECT g, 'n' || g, g, g FROM generate_series(1, 50) g")
            wait_for(lambda: len(_read_all(broker.bootstrap, topic)) >= 50, 60, f"50 records in {topic}", procs)
            own.pause()
            late = BridgeProcess("sink", cfg, tmp_path, name="late-sink").start()
            procs.append(late)
            wait_for(lambda: "schema registry unavailable" in late.log_tail(100), 90,
                     "the late sink to say the registry is unavailable", procs)
            own.resume()
            wait_converged(source_dsn, target_dsn, {"public.items": (COLUMNS[:4], "id")}, procs=procs)
            assert "dead letter" not in late.log_tail(400), late.log_tail(400)
        finally:
            own.resume()
            for p in procs:
                p.terminate()
    finally:
        own.destroy()


def test_check_reports_the_registry(registry: LocalRegistry, tmp_path: Path) -> None:
    """`pgbridge check` exits 0 only when everything needed is in place: the registry too."""
    dead = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    for url, line in ((registry.url, "ok   kafka.schema_registry: "), (dead, "FAIL kafka.schema_registry: ")):
        # no broker is needed to see the registry line: kafka.reachable fails alone otherwise
        cfg = write_config(tmp_path, source_dsn="postgresql://u@127.0.0.1:1/x", target_dsn="postgresql://u@127.0.0.1:1/y",
                           bootstrap="127.0.0.1:1", kafka__schema_registry_url=url)
        data = json.loads(cfg.read_text())
        del data["source"]["dsn"], data["sink"]["dsn"]
        cfg.write_text(json.dumps(data))
        res = subprocess.run([sys.executable, "-m", "bridge", "check", "--config", str(cfg)], capture_output=True,
                             text=True, timeout=120, cwd=REPO)
        assert line in res.stdout, res.stdout + res.stderr
        assert res.returncode == 1  # the broker at 127.0.0.1:1 is never there
        if url == registry.url:
            assert "compatibility BACKWARD" in res.stdout
