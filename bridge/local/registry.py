"""A throwaway schema registry: Apicurio Registry (in-memory storage), Confluent-compatible API.

`tools/install-apicurio.sh` puts the distribution under `~/.cache/pgbridge/apicurio-<version>/`;
`LocalRegistry` runs its Quarkus runner jar with `java -jar`, bound to 127.0.0.1 on a free port,
and serves the Confluent Schema Registry API at `url` (`http://127.0.0.1:<port>/apis/ccompat/v7`).
Nothing it does leaves the machine: authentication (OIDC/Keycloak), multitenancy (tenant manager),
Sentry and the Kafka event sink are off, which are also the distribution's defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError
from bridge.local.process import LocalProcess

APICURIO_VERSION = "2.6.13.Final"
CCOMPAT_PATH = "/apis/ccompat/v7"
DEFAULT_COMPATIBILITY = "BACKWARD"  # Confluent Schema Registry's default level, documented in README

_REPO = Path(__file__).resolve().parents[2]


def apicurio_home(version: str = APICURIO_VERSION, *, install: bool = True) -> Path:
    """The unpacked distribution (`BRIDGE_APICURIO_HOME`, else the cache); with `install`, runs
    `tools/install-apicurio.sh` when it is missing. Raises `BridgeError` when it cannot be had."""
    env = os.environ.get("BRIDGE_APICURIO_HOME")
    if env:
        return Path(env)
    cache = Path(os.environ.get("PGBRIDGE_CACHE", Path.home() / ".cache" / "pgbridge"))
    home = cache / f"apicurio-{version}"
    if (home / ".complete").exists():
        return home
    script = _REPO / "tools" / "install-apicurio.sh"
    if not install or not script.exists():
        raise BridgeError("Apicurio Registry not installed: run tools/install-apicurio.sh", path=str(home))
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                         env={**os.environ, "APICURIO_VERSION": version})
    if res.returncode != 0:
        raise BridgeError(f"tools/install-apicurio.sh failed: {res.stderr.strip()[-2000:]}")
    return Path(res.stdout.strip().splitlines()[-1])


class LocalRegistry(LocalProcess):
    """An Apicurio Registry process owned by this process: `start()`, `url`, `stop()`, `destroy()`.

    `compatibility` is set as the registry's global level once it answers (Apicurio's own
    default is no check at all; Confluent's is BACKWARD).
    """

    name = "apicurio"

    def __init__(self, root: Path | None = None, *, version: str = APICURIO_VERSION,
                 compatibility: str = DEFAULT_COMPATIBILITY, java: str = "java") -> None:
        super().__init__(root)
        self.version = version
        self.compatibility = compatibility
        self.java = java

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API: what `kafka.schema_registry_url` is set to."""
        return self.base + CCOMPAT_PATH

    def _command(self, home: Path) -> list[str]:
        jar = home / f"apicurio-registry-app-{self.version}-runner.jar"
        props = {
            "quarkus.http.host": "127.0.0.1",
            "quarkus.http.port": str(self.port),
            "quarkus.http.cors": "false",
            "quarkus.oidc.tenant-enabled": "false",  # no Keycloak
            "registry.auth.enabled": "false",
            "registry.enable.multitenancy": "false",  # no tenant manager
            "registry.enable.sentry": "false",  # no error reports sent anywhere
            "registry.events.kafka.config.bootstrap.servers": "",  # no event sink
            "registry.rules.global.compatibility": self.compatibility,
            "quarkus.log.level": "WARN",
            "quarkus.log.category.\"io.apicurio\".level": "WARN",
        }
        # A small heap and C1 only: the registry holds a few dozen schemas; starts in ~7 s.
        return [self.java, "-Xms64m", "-Xmx384m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                *(f"-D{k}={v}" for k, v in props.items()), "-jar", str(jar)]

    def start(self, timeout: float = 120.0) -> LocalRegistry:
        """Start (if not running) and wait until the Confluent API answers; then set the global
        compatibility level. Raises `BridgeError` with the log's tail when it does not come up."""
        if self.proc is None or self.proc.poll() is not None:
            self._spawn(self._command(apicurio_home(self.version)), cwd=self.root)
        self.wait_ready(timeout)
        self.request("PUT", "/config", {"compatibility": self.compatibility})
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise BridgeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.request("GET", "/subjects", timeout=2)
                return
            except (OSError, BridgeError):
                pass
            if time.monotonic() > deadline:
                raise BridgeError(f"{self.name} did not answer on {self.url}:\n{self.log_tail()}")
            time.sleep(0.2)

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> Any:
        """One call of the Confluent-compatible API (`path` below `/apis/ccompat/v7`); the decoded
        JSON answer. Raises `BridgeError` with the registry's message on a non-2xx answer."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json",
                                              "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            raise BridgeError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        return json.loads(text) if text else None
