"""App wiring: the one place that builds the bridge's services from a `Config`.

`cli.py` (the commands) and `demo.py` (everything in one process) both call `build_producer`
and `build_sink`; each returns the service and a `close` that releases what the wiring opened.
One function per component, so a component's constructor changes in one place. Imports of the
services are local to the functions: `pgbridge status` or `check` need not load the producer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge import failures
from bridge.config import Config
from bridge.errors import BridgeError
from bridge.kafka.clients import client_extra, side_producer_config
from bridge.kafka.topics import acks_topic, snapshot_topic
from bridge.tables import TableFilter

if TYPE_CHECKING:
    from bridge.ack.channel import AckReader
    from bridge.codec import SchemaStore
    from bridge.health import HealthServer, PeriodicCheck
    from bridge.kafka.admin import TopicManager
    from bridge.lsn import Lsn
    from bridge.produce.slotwatch import SlotWatcher
    from bridge.signing import Signer
    from bridge.source.catalog import Catalog
    from bridge.source.slot_lock import SlotLock

log = logging.getLogger("bridge.cli")

Built = tuple[Any, Callable[[], None]]  # (service, close)
Exported = tuple[Any, str, "Lsn"]  # (replication connection holding it, snapshot name, consistent point)


# -- shared collaborators ---------------------------------------------------------------------


def signer(cfg: Config) -> Signer | None:
    """The record signer when `kafka.signing_secret` is set, else None."""
    from bridge.signing import Signer

    return Signer(cfg.kafka.signing_secret) if cfg.kafka.signing_secret else None


def probe_broker(cfg: Config) -> None:
    """At start: a broker answers with these settings within `kafka.connect_timeout_s`, or
    `BrokerUnreachableError` names the security settings and the likely cause (exit 1)."""
    from bridge.brokercheck import probe

    probe(cfg.kafka.client_config(), cfg.kafka.connect_timeout_s)


def schema_store(cfg: Config) -> SchemaStore:
    """The registry store with `kafka.schema_registry_url`, else the `<prefix>._schemas` topic."""
    from bridge.codec import RegistrySchemaStore, TopicSchemaStore

    if cfg.kafka.schema_registry_url:
        return RegistrySchemaStore(cfg.kafka.schema_registry_url)
    return TopicSchemaStore(cfg.kafka.bootstrap_servers, cfg.kafka.topic_prefix, client_extra(cfg.kafka),
                            signer=signer(cfg))


def topic_manager(cfg: Config, partitions: int) -> TopicManager:
    """Creates topics with `partitions` (unless `ensure` says otherwise)."""
    from bridge.kafka.admin import TopicManager

    return TopicManager(cfg.kafka.bootstrap_servers, partitions=partitions,
                        replication_factor=cfg.kafka.replication_factor, extra=client_extra(cfg.kafka))


def health_server(cfg: Config) -> HealthServer:
    from bridge.health import HealthServer

    return HealthServer(cfg.metrics.host, cfg.metrics.port).start()


# -- producer ---------------------------------------------------------------------------------


def build_producer(cfg: Config, tick: Callable[[], None] = lambda: None) -> Built:
    """The producer and its collaborators; returns (producer, close). With `capture: sql` it first
    takes the slot's producer lock (`SlotLock`): a second producer on the slot stops here.
    `tick` runs every turn of the producer loop, also while it is held (the liveness beat)."""
    from bridge.source.slot_lock import SlotLock

    cfg.require("source", "kafka")
    probe_broker(cfg)
    lock: SlotLock | None = None
    if cfg.source.capture == "sql":
        lock = SlotLock(cfg.source.conninfo(), cfg.source.slot)
        lock.hold()
    try:
        return _build_producer(cfg, lock, tick)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def open_slot(cfg: Config) -> tuple[Lsn, Exported | None]:
    """Preflight the slot, create it when missing (exporting a snapshot when `snapshot: initial`),
    and return its confirmed position and the exported snapshot, if any."""
    from bridge.lsn import Lsn
    from bridge.source.slot import SlotManager

    src = cfg.source
    slots = SlotManager(src.conninfo(), src.slot)
    slots.check_or_raise()
    exported: Exported | None = None
    if slots.status() is None and src.snapshot == "initial":
        exported = slots.create_exporting_snapshot()
    start = slots.ensure().confirmed_flush_lsn or Lsn(0)
    log.info("slot %s at %s", src.slot, start, extra={"slot": src.slot, "position": str(start)})
    return start, exported


def capture_opener(cfg: Config, lock: SlotLock | None) -> Callable[[], Any]:
    """Opens the change source of `source.capture` (`stream` or `sql`); the producer calls it on
    start and after a lost connection."""
    from bridge.source.capture import SqlCapture, StreamCapture

    src, dsn = cfg.source, cfg.source.conninfo()

    def open_source() -> Any:
        if src.capture == "sql":
            return SqlCapture(dsn, src.slot, batch_changes=src.sql_batch_changes,
                              guard=lock.hold if lock is not None else None)
        return StreamCapture(dsn, src.slot, status_interval_s=src.status_interval_s)

    return open_source


def codec_cache(cfg: Config, store: SchemaStore, db: str) -> Callable[[Any], Any]:
    """`codec_for(relation)`: one `TableCodec` per relation version, built on first use."""
    from bridge.codec import TableCodec
    from bridge.relation import Relation

    codecs: dict[tuple[str, str, int], TableCodec] = {}

    def codec_for(rel: Relation) -> TableCodec:
        key = (rel.schema, rel.table, rel.version)
        c = codecs.get(key)
        if c is None:
            c = codecs[key] = TableCodec(rel, store, db=db, topic_prefix=cfg.kafka.topic_prefix)
        return c

    return codec_for


def heartbeat_emitter(cfg: Config) -> Callable[[], None]:
    """`heartbeat()`: a logical message on the source (its own connection, reopened after a
    failure, which is logged and not raised)."""
    from bridge.source.slot import emit_heartbeat, sql_connect

    dsn, slot = cfg.source.conninfo(), cfg.source.slot
    conn: list[Any] = [None]

    def heartbeat() -> None:
        try:
            if conn[0] is None or conn[0].closed:
                conn[0] = sql_connect(dsn, slot)
            emit_heartbeat(conn[0])
        except BridgeError as exc:
            conn[0] = None
            log.warning("heartbeat failed: %s", exc, extra={"slot": slot})

    return heartbeat


def ack_reader(cfg: Config, topics: TopicManager) -> AckReader | None:
    """With `ack: sink`, the reader of `<prefix>._acks` (the topic created if missing); else None."""
    from bridge.ack.channel import AckReader

    if cfg.ack != "sink":
        return None
    topics.ensure(acks_topic(cfg.kafka.topic_prefix), partitions=1, compact=True)
    return AckReader(cfg.kafka.bootstrap_servers, cfg.kafka.topic_prefix, client_extra(cfg.kafka),
                     signer=signer(cfg))


def _build_producer(cfg: Config, lock: SlotLock | None, tick: Callable[[], None]) -> Built:
    from confluent_kafka import Producer

    from bridge.source.catalog import Catalog
    from bridge.source.slot import sql_connect

    src, dsn = cfg.source, cfg.source.conninfo()
    start, exported = open_slot(cfg)
    catalog_conn = sql_connect(dsn, src.slot)
    catalog = Catalog(catalog_conn, reconnect=lambda: sql_connect(dsn, src.slot))
    from bridge.produce.producer import kafka_producer_config

    producer = Producer(kafka_producer_config(cfg.kafka.bootstrap_servers, client_extra(cfg.kafka)))
    topics = topic_manager(cfg, cfg.kafka.partitions)
    acks = ack_reader(cfg, topics)
    include = TableFilter(src.tables, src.exclude)
    resnapshot = resnapshotter(cfg, catalog, include)
    cp, tails = change_producer(cfg, catalog, catalog_conn.info.dbname, producer, topics, acks, start, lock,
                                include=include, snapshot=snapshot_plan(cfg, start, exported, producer, include),
                                resnapshot=resnapshot, tick=tick)
    closers = (tails.close, catalog.close, resnapshot.close, acks.close if acks else None,
               exported[0].close if exported else None, lock.release if lock else None)
    return cp, _closing(closers)


def change_producer(cfg: Config, catalog: Catalog, db: str, producer: Any, topics: TopicManager,
                    acks: AckReader | None, start: Lsn, lock: SlotLock | None, *, include: TableFilter,
                    snapshot: Any, resnapshot: Any, tick: Callable[[], None]) -> tuple[Any, Any]:
    """The `ChangeProducer`, wired at construction (`build_change_producer`), and its tail reader
    (closed by the caller)."""
    from bridge.ack.watermark import Ledger
    from bridge.produce.factory import build_change_producer
    from bridge.produce.producer import ProducerSettings
    from bridge.produce.topics import TailReader
    from bridge.source.decoder import KeyWatch
    from bridge.source.transactions import TransactionAssembler

    src = cfg.source
    codec_for = codec_cache(cfg, schema_store(cfg), db)
    decoder = change_decoder(catalog, codec_for)
    tails = TailReader(cfg.kafka.bootstrap_servers, client_extra(cfg.kafka))
    cp = build_change_producer(
        open_source=capture_opener(cfg, lock),
        changes=decoder, relation_of=catalog.relation,
        codec_for=codec_for,
        producer=producer, topics=topics, tails=tails, ledger=Ledger(cfg.ack, start), acks=acks,
        include=include,
        settings=ProducerSettings(topic_prefix=cfg.kafka.topic_prefix, db=db, tombstones=cfg.kafka.tombstones,
                                  heartbeat_interval_s=src.heartbeat_interval_s,
                                  confirm_idle=src.capture == "stream",
                                  message_max_bytes=message_max_bytes(cfg)),
        heartbeat=heartbeat_emitter(cfg), assembler=TransactionAssembler(src.spill_bytes), slot=src.slot,
        key_watch=KeyWatch(catalog, decoder), signer=signer(cfg), snapshot=snapshot, resnapshot=resnapshot,
        tick=tick)
    return cp, tails


def change_decoder(catalog: Catalog, codec_for: Callable[[Any], Any]) -> Any:
    """The change decoder: the native core's (`NativeChangeDecoder`, whole changes encoded in
    Rust) unless `BRIDGE_NATIVE=0` selects the Python reference (`ChangeDecoder`)."""
    from bridge import native
    from bridge.source.decoder import ChangeDecoder

    if native.enabled():
        from bridge.source.native_decoder import NativeChangeDecoder

        return NativeChangeDecoder(catalog, codec_for)
    return ChangeDecoder(catalog)


def resnapshotter(cfg: Config, catalog: Catalog, include: TableFilter) -> Any:
    """Serves `pgbridge snapshot` requests from the producer loop."""
    from bridge.produce.resnapshot import Resnapshotter
    from bridge.source.slot import sql_connect

    dsn, slot = cfg.source.conninfo(), cfg.source.slot
    return Resnapshotter(lambda: sql_connect(dsn, slot), catalog.relation, include)


def message_max_bytes(cfg: Config) -> int:
    """The producer's record size limit: `kafka.config."message.max.bytes"`, else librdkafka's
    default (1,000,000)."""
    try:
        return int(cfg.kafka.config.get("message.max.bytes", 1_000_000))
    except (TypeError, ValueError):
        return 1_000_000


def snapshot_plan(cfg: Config, start: Lsn, exported: Exported | None, producer: Any, include: TableFilter) -> Any:
    """The snapshot to run before streaming: a new one when the slot was just created with an
    exported snapshot, the rest of an interrupted one, or None."""
    from bridge.produce.initial_snapshot import SnapshotPlan
    from bridge.produce.snapshot_state import SnapshotStateStore
    from bridge.source.slot import sql_connect
    from bridge.source.snapshot import SnapshotState, list_tables

    extra = client_extra(cfg.kafka)
    topic_manager(cfg, 1).ensure(snapshot_topic(cfg.kafka.topic_prefix), partitions=1, compact=True)
    store = SnapshotStateStore(producer, cfg.kafka.bootstrap_servers, cfg.kafka.topic_prefix, extra)
    conn = sql_connect(cfg.source.conninfo(), cfg.source.slot, autocommit=True)
    if exported is not None:
        repl_conn, name, cp = exported
        state = SnapshotState.of_tables(cp.value, list_tables(conn, include))
        store.save(state)
        return SnapshotPlan(state, conn, name, store.save, repl_conn.close,
                            chunk_rows=cfg.source.snapshot_chunk_rows)
    loaded = store.load()
    if loaded is None or loaded.done:
        conn.close()
        return None
    if loaded.consistent_point != start.value:
        log.warning("snapshot state is for consistent point %s but the slot is at %s: not resuming it",
                    loaded.consistent_point, start)
        conn.close()
        return None
    log.info("resuming the snapshot: %d of %d tables left", sum(not t.done for t in loaded.tables.values()),
             len(loaded.tables))
    return SnapshotPlan(loaded, conn, None, store.save, lambda: None, delivered=_delivered_reader(cfg),
                        chunk_rows=cfg.source.snapshot_chunk_rows)


def _delivered_reader(cfg: Config) -> Callable[[str, int, int, int, int], tuple[set[bytes], int]]:
    from bridge.produce.snapshot_state import delivered_after

    extra = client_extra(cfg.kafka)

    def delivered(topic: str, partitions: int, cp: int, from_seq: int, scan: int) -> tuple[set[bytes], int]:
        return delivered_after(cfg.kafka.bootstrap_servers, extra, topic, partitions, cp, from_seq, scan)

    return delivered


def slot_watcher(cfg: Config) -> SlotWatcher:
    """The producer's slot watcher: slot metrics (confirmed LSN, retained WAL, wal_status) and
    retained-WAL warnings, polled from the producer loop every few seconds."""
    from bridge.produce.slotwatch import SlotWatcher
    from bridge.source.slot import SlotManager

    return SlotWatcher(SlotManager(cfg.source.conninfo(), cfg.source.slot),
                       interval_s=min(cfg.source.status_interval_s, 5.0),
                       warn_bytes=cfg.monitor.retained_wal_warn_bytes)


# -- sink -------------------------------------------------------------------------------------


def build_sink(cfg: Config, tick: Callable[[], None] = lambda: None) -> Built:
    """The sink loop and its collaborators; returns (loop, close). Creates `<prefix>._acks` and the
    dead-letter topic when missing. `tick` runs every turn of the sink loop (the liveness beat)."""
    cfg.require("sink", "kafka")
    probe_broker(cfg)
    topics = topic_manager(cfg, 1)
    topics.ensure(acks_topic(cfg.kafka.topic_prefix), partitions=1, compact=True)
    topics.ensure(cfg.sink.dead_letter_topic, partitions=1)
    from bridge.sink.apply import Applier

    applier = Applier(cfg.sink.conninfo(), state_schema=cfg.sink.state_schema)
    return sink_loop(cfg, applier, tick), _closing((applier.close,))


def sink_loop(cfg: Config, applier: Any, tick: Callable[[], None] = lambda: None) -> Any:
    """The `SinkLoop`: consumer, decoder, applier (with the truncate barrier), acks, dead letters,
    admission."""
    from confluent_kafka import Consumer, Producer

    from bridge.ack.channel import AckPublisher
    from bridge.sink.admit import Admission
    from bridge.sink.deadletter import DeadLetters
    from bridge.sink.loop import SinkLoop, SinkSettings, kafka_consumer_config
    from bridge.sink.native_stage import envelope_decoder, tune_gc

    k, s = cfg.kafka, cfg.sink
    extra = client_extra(k)
    side = Producer(side_producer_config(k.bootstrap_servers, extra))
    # native sink path (issue 16): the Rust reader unless BRIDGE_NATIVE=0; a GC tuned for batches
    decoder = envelope_decoder(schema_store(cfg), topic_prefix=k.topic_prefix)
    tune_gc()
    return SinkLoop(
        consumer=Consumer(kafka_consumer_config(k.bootstrap_servers, s.group_id, extra)), decode=decoder.decode,
        applier=applier, acks=AckPublisher(side, k.topic_prefix, signer(cfg)),
        dead_letters=DeadLetters(side, s.dead_letter_topic),
        settings=SinkSettings(topic_prefix=k.topic_prefix, group_id=s.group_id, batch_max_rows=s.batch_max_rows,
                              batch_max_bytes=s.batch_max_bytes, batch_max_ms=s.batch_max_ms),
        admission=Admission(k.topic_prefix, s.state_schema, s.tables),
        signer=signer(cfg), tick=tick)


# -- running ----------------------------------------------------------------------------------


def readiness(cfg: Config, component: str) -> dict[str, PeriodicCheck]:
    """Readiness probes (each in its own thread, cached): PostgreSQL and the broker reachable,
    and for the producer the slot held by this process's capture."""
    import psycopg
    from confluent_kafka.admin import AdminClient

    from bridge.health import PeriodicCheck

    admin = AdminClient({**cfg.kafka.client_config(), "log_level": 0})

    def broker() -> bool:
        return bool(admin.list_topics(timeout=5).brokers)

    dsn = cfg.source.conninfo() if component == "producer" else cfg.sink.conninfo()

    def postgres() -> bool:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            if component != "producer":
                return conn.execute("SELECT true").fetchone() == (True,)
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                               (cfg.source.slot,)).fetchone()
            return row is not None and bool(row[0])

    name = "source_slot_held" if component == "producer" else "target_reachable"
    return {"broker_reachable": PeriodicCheck(broker, 5.0, "broker"), name: PeriodicCheck(postgres, 5.0, name)}


# PQping answered OK (the server accepts connections) yet the build failed without a SQLSTATE:
# either a mistake (password, database) or a connection lost just before a restart finished.
# This many further attempts tell them apart; a mistake then stops the process.
_ANSWERED_RETRIES = 2


def build_waiting(cfg: Config, build: Callable[[Config], Built], stop: threading.Event, dsn: Callable[[], str],
                  wait_s: float = 120.0) -> Built:
    """`build(cfg)`, waiting up to `wait_s` while the PostgreSQL at `dsn()` is away (a restart in
    progress: `failures.unreachable_at_start`). Every other error — wrong settings, missing
    privileges — is raised at once."""
    from psycopg import conninfo, pq

    from bridge.retry import retry_while

    answered = [0]

    def ping() -> int:
        return int(pq.PGconn.ping(conninfo.make_conninfo(dsn(), connect_timeout=5).encode()))

    def transient(exc: BaseException) -> bool:
        if failures.unreachable_at_start(exc, ping):
            return True
        if failures.connection_failed(exc) and answered[0] < _ANSWERED_RETRIES:
            answered[0] += 1
            return True
        return False

    return retry_while(lambda: build(cfg), transient, stop, "PostgreSQL (at start)", wait_s=wait_s)


def _closing(closers: tuple[Callable[[], None] | None, ...]) -> Callable[[], None]:
    """A `close` that calls each closer once, in order, and goes on past failures (the process is
    stopping; one stuck client must not keep the others open)."""
    def close() -> None:
        for closer in closers:
            if closer is not None:
                try:
                    closer()
                except Exception:
                    pass

    return close
