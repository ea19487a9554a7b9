"""The sink's one commit path (`Checkpoint.commit`) against a real target and a real broker."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bridge.ack.channel import AckPublisher
from bridge.errors import SinkError
from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.relation import Column, Relation
from bridge.retry import retry_while
from bridge.sink.apply import Applier
from bridge.sink.checkpoint import Checkpoint
from bridge.sink.deadletter import DeadLetters
from bridge.sink.records import SinkRecord
from tests.conftest import Broker

# A target table whose trigger rejects a negative `v` (SQLSTATE class P0: the record is at
# fault) and, once, kills its own session while writing v = 666 after the sink stored a position
# (a target restart in the middle of the bisection that isolates the rejected record).
GUARDED = """
CREATE SEQUENCE boom;
CREATE TABLE public.guarded (id bigint PRIMARY KEY, v bigint);
CREATE FUNCTION guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.v < 0 THEN
    RAISE EXCEPTION 'negative v' USING ERRCODE = 'P0001';
  END IF;
  IF NEW.v = 666 AND EXISTS (SELECT 1 FROM pgbridge_state.bridge_positions) AND nextval('boom') = 1 THEN
    PERFORM pg_terminate_backend(pg_backend_pid());
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER guard BEFORE INSERT OR UPDATE ON public.guarded FOR EACH ROW EXECUTE FUNCTION guard();
"""

REL = Relation("public", "guarded", (Column("id", "bigint", "int8", not_null=True), Column("v", "bigint", "int8")),
               primary_key=("id",))


def _passing(exc: BaseException) -> bool:
    """A target failure that passes (the connection was terminated)."""
    return isinstance(exc, SinkError) and isinstance(exc.__cause__, psycopg.OperationalError)


def _read_all(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list[Message]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                out.append(m)
        return out
    finally:
        c.close()


def test_record_rejected_before_a_target_restart_is_still_dead_lettered(broker: Broker, target_dsn: str) -> None:
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute(GUARDED)
    tag = uuid.uuid4().hex[:8]
    prefix, topic, dlq = f"ck{tag}", f"ck{tag}.public.guarded", f"ck{tag}._dlq"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in (topic, dlq, f"{prefix}._acks")]).values():
        f.result(30)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g{tag}", "enable.auto.commit": False})
    side = Producer({"bootstrap.servers": broker.bootstrap})
    applier = Applier(target_dsn)
    stop = threading.Event()
    cp = Checkpoint(consumer=consumer, applier=applier, acks=AckPublisher(side, prefix),
                    dead_letters=DeadLetters(side, dlq), group_id=f"g{tag}",
                    retry_target=lambda fn: retry_while(fn, _passing, stop, "target", first_delay=0.1),
                    retry_broker=lambda fn: fn())
    try:
        for offset, row in enumerate([(1, -1), (2, 666)]):
            ev = ChangeEvent(REL, Op.INSERT, Position(Lsn(100), offset), 1, None, None, row)
            msg = Message(topic=topic, partition=0, offset=offset, key=b"k", value=b"v")
            cp.add(SinkRecord(topic, 0, offset, ev), msg, 1)
        cp.commit()

        with psycopg.connect(target_dsn) as c:
            assert c.execute("SELECT nextval('boom')").fetchone() == (3,), "the session was not killed once"
            assert c.execute("SELECT id, v FROM public.guarded").fetchall() == [(2, 666)]
        dead = _read_all(broker.bootstrap, dlq, 1)
        assert [dict(m.headers() or []).get("bridge.dlq.offset") for m in dead] == [b"0"]
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        assert [tp.offset for tp in committed] == [2]
        if broker.kind == "kafka":  # Tansu does not keep commit metadata
            assert [tp.metadata for tp in committed] == [str(Position(Lsn(100), 1))]
    finally:
        applier.close()
        consumer.close()
