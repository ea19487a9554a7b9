"""`pgbridge` — the one command line. The only place that wires services together.

Exit codes: 0 ok, 2 bad config or usage, 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from bridge import __version__
from bridge.errors import BridgeError, ConfigError

Handler = Callable[[argparse.Namespace], int]


def _not_built(name: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        print(f"pgbridge {name}: not available in this build yet", file=sys.stderr)
        return 1

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgbridge",
        description="A Kafka-compatible change-stream bridge for PostgreSQL: "
        "logical slot (test_decoding) -> Avro -> Kafka -> target PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"pgbridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, *, config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config:
            p.add_argument("--config", "-c", required=True, help="bridge.yaml (YAML or JSON)")
        p.add_argument("--log-format", choices=["json", "text"], default="json")
        p.add_argument("--log-level", default="INFO")
        p.set_defaults(handler=_not_built(name))
        return p

    command("produce", "Run the producer (slot -> Kafka) until SIGTERM.")
    command("sink", "Run one sink member (Kafka -> target PostgreSQL) until SIGTERM.")
    command("run", "Run producer and sink as two supervised child processes.")
    status = command("status", "Show slot, producer, sink positions, retained WAL and lags.")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    slot = command("slot", "Create, drop or inspect the logical replication slot.")
    slot.add_argument("action", choices=["create", "drop", "status"])
    command("check", "Preflight: exit 0 only when everything needed is in place.")
    snap = command("snapshot", "Resnapshot one table while streaming.")
    snap.add_argument("--table", required=True, help="schema.table")
    demo = command("demo", "A throwaway source, broker and target, with a live workload.", config=False)
    demo.add_argument("--seconds", type=float, default=30.0, help="how long the workload runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
        return 1
    except KeyboardInterrupt:
        return 130
