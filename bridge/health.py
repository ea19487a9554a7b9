"""One HTTP port: `/metrics` (Prometheus), `/healthz` (liveness), `/readyz` (readiness).

Checks are plain callables `() -> bool` registered by name. A check that raises counts as failing
(its error, redacted, goes into the response). Checks run in the request's thread on every probe,
so they must be cheap: read state a loop keeps (a `Heartbeat`, a "connected" flag); a check that
needs the network belongs in a `PeriodicCheck`, which probes in its own thread and caches the answer.

Response body (JSON): `{"status": "ok"|"failing", "checks": {"name": true|false, ...},
"failing": [...], "errors": {"name": "..."}}`; 200 when every check passes, else 503.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from bridge.config import redact_text
from bridge.errors import BridgeError

log = logging.getLogger(__name__)

Check = Callable[[], bool]


class HealthError(BridgeError):
    """The health server cannot bind or is used before `start()`."""


class Heartbeat:
    """A loop calls `beat()` on every iteration; `alive(max_age_s)` is its liveness check.

    Starts as if it had just beaten, so a loop gets `max_age_s` to make its first tick.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = time.monotonic()

    def beat(self) -> None:
        """Called by the loop each time it goes round. Cheap: one clock read."""
        self._last = time.monotonic()

    def age(self) -> float:
        """Seconds since the last beat."""
        return time.monotonic() - self._last

    def alive(self, max_age_s: float) -> bool:
        """True if the loop beat within the last `max_age_s` seconds."""
        return time.monotonic() - self._last <= max_age_s

    def check(self, max_age_s: float) -> Check:
        """`alive(max_age_s)` as a check for `register_liveness`."""
        return lambda: self.alive(max_age_s)


class PeriodicCheck:
    """Runs a slow probe (network) every `interval_s` in a daemon thread; calling the instance
    returns the last answer (False until the first probe finished, and when the last one is older
    than `3 * interval_s + timeout` because the probe hangs). Stop it with `stop()`."""

    def __init__(self, probe: Check, interval_s: float = 5.0, name: str = "probe") -> None:
        self._probe = probe
        self._interval = interval_s
        self._ok = False
        self._at = 0.0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"check-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ok, err = bool(self._probe()), None
            except Exception as exc:
                ok, err = False, redact_text(f"{type(exc).__name__}: {exc}")
            self._ok, self.error, self._at = ok, err, time.monotonic()
            self._stop.wait(self._interval)

    def __call__(self) -> bool:
        return self._ok and time.monotonic() - self._at <= 3 * self._interval + 1.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 1.0)


class HealthServer:
    """The HTTP server of one process. Created by the CLI; components register checks on it.

    `start()` binds and serves in a daemon thread; `stop()` shuts down and closes the socket.
    Port 0 binds any free port; `port` tells which.
    """

    def __init__(self, host: str = "0.0.0.0", port: int = 9187, registry: CollectorRegistry = REGISTRY) -> None:
        self.host = host
        self._port = port
        self.registry = registry
        self._liveness: dict[str, Check] = {}
        self._readiness: dict[str, Check] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def register_liveness(self, name: str, fn: Check) -> None:
        """Add (or replace) a liveness check: failing means "restart me" (e.g. a loop stopped ticking)."""
        with self._lock:
            self._liveness[name] = fn

    def register_readiness(self, name: str, fn: Check) -> None:
        """Add (or replace) a readiness check: failing means "not serving" (PostgreSQL, broker, slot)."""
        with self._lock:
            self._readiness[name] = fn

    def unregister(self, name: str) -> None:
        """Remove a check of either kind (a component that stopped on purpose)."""
        with self._lock:
            self._liveness.pop(name, None)
            self._readiness.pop(name, None)

    @property
    def port(self) -> int:
        """The bound port (after `start()`), else the configured one."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(self.host, self.host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        """Bind and serve in a background thread. Raises `HealthError` if the port cannot be bound."""
        if self._server is not None:
            return self
        try:
            server_cls = _IPv6Server if ":" in self.host else ThreadingHTTPServer
            server = server_cls((self.host, self._port), _handler_for(self))
        except OSError as exc:
            raise HealthError(f"cannot listen on {self.host}:{self._port}: {exc.strerror or exc}",
                              host=self.host, port=self._port) from exc
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="health-http", daemon=True)
        self._thread.start()
        log.info("serving /metrics /healthz /readyz on %s:%s", self.host, self.port,
                 extra={"port": self.port})
        return self

    def stop(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def evaluate(self, kind: str) -> tuple[bool, dict[str, Any]]:
        """Run the `"liveness"` or `"readiness"` checks; (all passed, response body)."""
        with self._lock:
            checks = dict(self._liveness if kind == "liveness" else self._readiness)
        results: dict[str, bool] = {}
        errors: dict[str, str] = {}
        for name, fn in checks.items():
            try:
                results[name] = bool(fn())
            except Exception as exc:
                results[name] = False
                errors[name] = redact_text(f"{type(exc).__name__}: {exc}")
            if not results[name] and isinstance(fn, PeriodicCheck) and fn.error:
                errors[name] = fn.error
        failing = [n for n, ok in results.items() if not ok]
        body: dict[str, Any] = {"status": "failing" if failing else "ok", "checks": results, "failing": failing}
        if errors:
            body["errors"] = errors
        return not failing, body


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler_for(owner: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pgbridge"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(owner.registry))
            elif path in ("/healthz", "/readyz"):
                ok, body = owner.evaluate("liveness" if path == "/healthz" else "readiness")
                self._send(200 if ok else 503, "application/json", json.dumps(body).encode())
            else:
                self._send(404, "application/json", b'{"error": "not found"}')

        def _send(self, code: int, ctype: str, data: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

    return Handler
