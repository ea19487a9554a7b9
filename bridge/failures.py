"""One error classifier: what a failure means, decided by codes, never by message text.

Three code spaces answer "will this pass by itself?" and "whose fault is it?":

- PostgreSQL's SQLSTATE (five characters, the first two its class), from `psycopg.Error.sqlstate`
  or a `BridgeError`'s `sqlstate` context, looked up first by the full code and then by class;
- librdkafka's error codes (`confluent_kafka.KafkaError.code()`) and its `retriable()` flag;
- the schema registry's HTTP status;
- libpq's `PQping` answer, for a connection that failed before the server said anything with a
  SQLSTATE: libpq reports a refused or interrupted connection only as text, so the server is asked
  again with `PQping`, whose answer is a code.

Used by: the sink's target retries (`sink/loop.py`), its reject paths (`sink/apply.py`), its DDL
races with other members (`sink/target.py`, `sink/apply.py`), the
capture's reconnects (`source/capture.py`), the sink's broker retries, reading partitions
(`bridge/kafka/reading.py`) and the wait for PostgreSQL at start (`bridge/app.py`). Pure logic;
unit-tested in `tests/unit/test_failures.py`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import psycopg
from confluent_kafka import KafkaError, KafkaException
from psycopg import pq

from bridge.errors import BridgeError


class Verdict(enum.Enum):
    """What a PostgreSQL failure means for the statement that got it."""

    PASSING = "passing"  # goes away by itself: connection, shutdown or start, rollback, resources
    ROWS = "rows"  # the target refuses these rows: dead-letter them, apply the rest
    TABLE = "table"  # the target refuses this table: dead-letter the table's records
    FATAL = "fatal"  # anything else: raise


# A full SQLSTATE wins over its class.
_BY_STATE: dict[str, Verdict] = {
    # object_in_use: a slot still held by a walsender that has not yet noticed its client is gone
    "55006": Verdict.PASSING,
}
_BY_CLASS: dict[str, Verdict] = {
    "08": Verdict.PASSING,  # connection exception
    "40": Verdict.PASSING,  # transaction rollback: serialization failure, deadlock
    "53": Verdict.PASSING,  # insufficient resources: disk full, out of memory, too many connections
    "57": Verdict.PASSING,  # operator intervention: shutdown, crash, starting up, cancelled
    "58": Verdict.PASSING,  # system error outside PostgreSQL (I/O)
    "22": Verdict.ROWS,  # data exception
    "23": Verdict.ROWS,  # integrity constraint violation
    "P0": Verdict.ROWS,  # raised by a trigger (PL/pgSQL)
    "42": Verdict.TABLE,  # syntax error or access rule: a type it cannot cast, no privilege
    "54": Verdict.TABLE,  # program limit exceeded: too many columns
    "0A": Verdict.TABLE,  # feature not supported
}


def sql_verdict(sqlstate: str | None) -> Verdict:
    """The meaning of a SQLSTATE; `None` (no code at all) is `FATAL` — see `transient` for the
    connection failures libpq reports without one."""
    if not sqlstate:
        return Verdict.FATAL
    return _BY_STATE.get(sqlstate) or _BY_CLASS.get(sqlstate[:2], Verdict.FATAL)


def rejects_rows(sqlstate: str | None) -> bool:
    """The target refuses the rows of the statement (not the table, not its own health)."""
    return sql_verdict(sqlstate) is Verdict.ROWS


def rejects_table(sqlstate: str | None) -> bool:
    """The target refuses the table the statement ran for; retrying cannot help."""
    return sql_verdict(sqlstate) is Verdict.TABLE


# What PostgreSQL raises in the second of two sessions that run the same DDL at once (CREATE TABLE
# or CREATE SCHEMA IF NOT EXISTS, ADD COLUMN, ADD PRIMARY KEY): unique_violation on the catalog
# (pg_type, pg_namespace), duplicate table/schema/column/object, invalid table definition.
_LOST_DDL_RACE = frozenset({"23505", "42P07", "42P06", "42701", "42710", "42P16"})


def lost_ddl_race(sqlstate: str | None) -> bool:
    """Another session made the same schema change first: look again at what it made (not a
    table the target refuses). Only meaningful for the sink's own DDL statements."""
    return sqlstate in _LOST_DDL_RACE


def passes(sqlstate: str | None) -> bool:
    """A failure with this SQLSTATE goes away by itself (retry after a pause)."""
    return sql_verdict(sqlstate) is Verdict.PASSING


_NO_STATE = object()


def _state_of(exc: BaseException) -> object:
    """The SQLSTATE one link of a cause chain carries, `None` for a libpq-level connection
    failure (an `OperationalError` without one), `_NO_STATE` when the link says nothing."""
    if isinstance(exc, psycopg.Error):
        if exc.sqlstate:
            return exc.sqlstate
        return None if isinstance(exc, psycopg.OperationalError) else _NO_STATE
    if isinstance(exc, BridgeError):
        state = exc.context.get("sqlstate")
        if isinstance(state, str) and state:
            return state
    return _NO_STATE


def sqlstate_in(exc: BaseException) -> tuple[bool, str | None]:
    """(found, sqlstate) of the first link of `exc`'s cause chain that is a PostgreSQL failure:
    found is False when no link is; sqlstate is None for a connection failure without a code."""
    link: BaseException | None = exc
    while link is not None:
        state = _state_of(link)
        if state is not _NO_STATE:
            return True, state if isinstance(state, str) else None
        link = link.__cause__
    return False, None


def transient(exc: BaseException) -> bool:
    """A PostgreSQL failure (anywhere in `exc`'s cause chain) that goes away by itself: a lost or
    refused connection (no SQLSTATE), or a passing SQLSTATE. Used to decide a retry or a reconnect."""
    found, state = sqlstate_in(exc)
    return found and (state is None or passes(state))


def connection_failed(exc: BaseException) -> bool:
    """The first PostgreSQL failure in `exc`'s cause chain is a connection failure without a
    SQLSTATE (refused, lost, or refused during authentication: libpq does not tell them apart)."""
    found, state = sqlstate_in(exc)
    return found and state is None


# libpq's PQping: REJECT is a server starting, shutting down or in recovery; NO_RESPONSE is no
# server at all (yet). OK means it accepts connections; NO_ATTEMPT means the parameters are wrong.
_PING_AWAY = frozenset({pq.Ping.REJECT, pq.Ping.NO_RESPONSE})


def ping_says_away(ping: int) -> bool:
    """Whether a `PQping` answer says the server is away (down, starting or stopping)."""
    return ping in _PING_AWAY


def unreachable_at_start(exc: BaseException, ping: Callable[[], int]) -> bool:
    """At start, a failure that a restarting PostgreSQL explains: a passing SQLSTATE, or a
    connection failure without one while `ping()` (libpq's PQping on the same DSN, called only
    then) says the server is away. Wrong settings — password, database, privileges — are not."""
    found, state = sqlstate_in(exc)
    if not found:
        return False
    if state is not None:
        return passes(state)
    return ping_says_away(ping())


# -- schema registry (HTTP) ---------------------------------------------------------------------

_HTTP_PASSING = frozenset({408, 429})  # request timeout, too many requests


def registry_unavailable(http_status: int | None) -> bool:
    """A schema registry call that failed because the registry is away (no HTTP answer at all, a
    5xx, a timeout or throttling), not because of what was asked: the caller asks again later."""
    return http_status is None or http_status >= 500 or http_status in _HTTP_PASSING


# -- librdkafka --------------------------------------------------------------------------------

# Codes a broker call waits out: the broker away, its coordinator moving, a request timing out.
KAFKA_TRANSIENT = frozenset({
    KafkaError._WAIT_COORD, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION,
})
# A partition whose leader is not ready yet (a topic just created: Apache Kafka answers
# NOT_LEADER_FOR_PARTITION for a moment), or that the client's metadata does not know yet (a
# topic created a moment ago, by this process or by one killed just after: librdkafka's local
# _UNKNOWN_PARTITION / _UNKNOWN_TOPIC until its next metadata refresh).
KAFKA_LEADER_NOT_READY = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                                    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION,
                                    KafkaError._UNKNOWN_TOPIC})


def kafka_error_of(exc: BaseException) -> KafkaError | None:
    """The `KafkaError` a `KafkaException` carries, else None."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return err if isinstance(err, KafkaError) else None


def kafka_passes(code: int, retriable: bool) -> bool:
    """A librdkafka error that goes away by itself: flagged retriable by librdkafka, or a code
    of `KAFKA_TRANSIENT`."""
    return retriable or code in KAFKA_TRANSIENT


def broker_transient(exc: BaseException) -> bool:
    """A broker call that failed because the broker is away or its coordinator is moving."""
    err = kafka_error_of(exc)
    return err is not None and kafka_passes(err.code(), err.retriable())


def partition_not_ready(err: KafkaError) -> bool:
    """A partition's offsets could not be read for a reason that passes (retriable, or a leader
    not elected yet)."""
    return err.retriable() or err.code() in KAFKA_LEADER_NOT_READY
