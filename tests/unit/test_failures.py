"""The one error classifier (bridge/failures.py): codes decide, message text never does."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import psycopg.errors
import pytest
from confluent_kafka import KafkaError, KafkaException
from psycopg import pq

from bridge import failures
from bridge.errors import SinkError, SourceError
from bridge.failures import Verdict


def pg_error(sqlstate: str, message: str = "whatever the server says") -> psycopg.Error:
    cls = psycopg.errors.lookup(sqlstate)
    return cls(message)


@pytest.mark.parametrize(("sqlstate", "verdict"), [
    ("08006", Verdict.PASSING),  # connection failure
    ("40001", Verdict.PASSING),  # serialization failure
    ("40P01", Verdict.PASSING),  # deadlock
    ("53300", Verdict.PASSING),  # too many connections
    ("57P01", Verdict.PASSING),  # admin shutdown
    ("57P03", Verdict.PASSING),  # cannot connect now (starting up)
    ("58030", Verdict.PASSING),  # I/O error
    ("55006", Verdict.PASSING),  # object in use (a slot still held by an exiting walsender)
    ("55000", Verdict.FATAL),  # object not in prerequisite state: the full code decides, not the class
    ("22003", Verdict.ROWS),  # numeric value out of range
    ("23505", Verdict.ROWS),  # unique violation
    ("P0001", Verdict.ROWS),  # raise_exception in a trigger
    ("42501", Verdict.TABLE),  # insufficient privilege
    ("54011", Verdict.TABLE),  # too many columns
    ("0A000", Verdict.TABLE),  # feature not supported
    ("3D000", Verdict.FATAL),  # database does not exist
    ("28P01", Verdict.FATAL),  # wrong password
    ("XX000", Verdict.FATAL),  # internal error
])
def test_sqlstate_verdicts(sqlstate: str, verdict: Verdict) -> None:
    assert failures.sql_verdict(sqlstate) is verdict
    assert failures.passes(sqlstate) is (verdict is Verdict.PASSING)
    assert failures.rejects_rows(sqlstate) is (verdict is Verdict.ROWS)
    assert failures.rejects_table(sqlstate) is (verdict is Verdict.TABLE)


def test_no_sqlstate_is_no_verdict_of_its_own() -> None:
    assert failures.sql_verdict(None) is Verdict.FATAL
    assert failures.sql_verdict("") is Verdict.FATAL


def test_transient_follows_the_cause_chain() -> None:
    wrapped = SinkError("target apply failed")
    wrapped.__cause__ = pg_error("40P01")
    assert failures.transient(wrapped)
    refused = SinkError("target refuses the rows")
    refused.__cause__ = pg_error("23505")
    assert not failures.transient(refused)


def test_a_connection_failure_without_sqlstate_is_transient_whatever_its_text() -> None:
    for text in ("connection refused", "a message nobody has seen before", ""):
        exc = SourceError("cannot connect")
        exc.__cause__ = psycopg.OperationalError(text)
        assert failures.transient(exc), text
    # a client-side error without a code is not a connection failure
    assert not failures.transient(psycopg.InterfaceError("connection refused"))


def test_the_context_sqlstate_of_a_bridge_error_counts() -> None:
    assert failures.transient(SinkError("x", sqlstate="57P01"))
    assert not failures.transient(SinkError("x", sqlstate="42P01"))
    assert not failures.transient(ValueError("server closed the connection"))


def test_the_first_coded_link_decides() -> None:
    outer = SinkError("rows refused", sqlstate="23505")
    outer.__cause__ = psycopg.OperationalError("lost")
    assert not failures.transient(outer)


def test_unreachable_at_start_asks_ping_only_without_sqlstate() -> None:
    asked: list[int] = []

    def ping(answer: int) -> Callable[[], int]:
        def call() -> int:
            asked.append(answer)
            return answer
        return call

    lost = SourceError("cannot connect")
    lost.__cause__ = psycopg.OperationalError("connection failed")
    assert failures.unreachable_at_start(lost, ping(pq.Ping.NO_RESPONSE))
    assert failures.unreachable_at_start(lost, ping(pq.Ping.REJECT))
    assert not failures.unreachable_at_start(lost, ping(pq.Ping.OK))
    assert not failures.unreachable_at_start(lost, ping(pq.Ping.NO_ATTEMPT))
    assert len(asked) == 4
    coded = SourceError("slot busy")
    coded.__cause__ = pg_error("57P03")
    assert failures.unreachable_at_start(coded, ping(pq.Ping.OK))
    missing = SourceError("no such database")
    missing.__cause__ = pg_error("3D000")
    assert not failures.unreachable_at_start(missing, ping(pq.Ping.NO_RESPONSE))
    assert not failures.unreachable_at_start(ValueError("Connection refused"), ping(pq.Ping.NO_RESPONSE))
    assert len(asked) == 4  # a SQLSTATE, or no PostgreSQL failure at all, never pings


@pytest.mark.parametrize(("code", "transient"), [
    (KafkaError._TRANSPORT, True),
    (KafkaError._ALL_BROKERS_DOWN, True),
    (KafkaError._WAIT_COORD, True),
    (KafkaError.COORDINATOR_NOT_AVAILABLE, True),
    (KafkaError.NOT_COORDINATOR, True),
    (KafkaError.REQUEST_TIMED_OUT, True),
    (KafkaError.UNKNOWN_MEMBER_ID, False),  # the group rebalanced: raised
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, False),
    (KafkaError._INVALID_ARG, False),
])
def test_broker_verdicts(code: int, transient: bool) -> None:
    assert failures.broker_transient(KafkaException(KafkaError(code))) is transient
    assert failures.kafka_passes(code, retriable=False) is transient
    assert failures.kafka_passes(code, retriable=True)


def test_broker_transient_needs_a_kafka_error() -> None:
    assert not failures.broker_transient(KafkaException("text only"))
    assert not failures.broker_transient(TimeoutError("timed out"))


def test_partition_not_ready() -> None:
    assert failures.partition_not_ready(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
    assert failures.partition_not_ready(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    # a topic created a moment ago (the chaos run's producer was killed just after creating one):
    # the client's metadata does not know the partition yet
    assert failures.partition_not_ready(KafkaError(KafkaError._UNKNOWN_PARTITION))
    assert failures.partition_not_ready(KafkaError(KafkaError._UNKNOWN_TOPIC))
    assert not failures.partition_not_ready(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))


def test_connection_failed_is_a_failure_without_sqlstate() -> None:
    lost = SourceError("cannot connect")
    lost.__cause__ = psycopg.OperationalError("anything")
    assert failures.connection_failed(lost)
    coded = SourceError("refused")
    coded.__cause__ = pg_error("57P03")
    assert not failures.connection_failed(coded)
    assert not failures.connection_failed(ValueError("connection refused"))


@pytest.mark.parametrize(("status", "away"), [(None, True), (500, True), (503, True), (408, True), (429, True),
                                              (409, False), (404, False), (422, False), (401, False)])
def test_registry_unavailable_by_http_status(status: int | None, away: bool) -> None:
    assert failures.registry_unavailable(status) is away


def test_a_lost_ddl_race_is_told_by_its_sqlstate_only() -> None:
    # The second of two sessions running the same DDL: catalog unique violation, duplicates.
    for state in ("23505", "42P07", "42P06", "42701", "42710", "42P16"):
        assert failures.lost_ddl_race(state), state
    # A refused type, a missing privilege or a connection failure is not a lost race.
    for state in ("42804", "42501", "08006", "23502", None, ""):
        assert not failures.lost_ddl_race(state), state
