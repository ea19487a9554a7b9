"""A throwaway PostgreSQL cluster: `initdb` in a temporary directory, `wal_level=logical`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from bridge.errors import BridgeError
from bridge.local import free_port

_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "logical",
    # One cluster serves a whole test session, whose pipelines each make a slot of their own
    # (about 60 in `make test`; tests that end early may leave theirs behind).
    "max_replication_slots": "200",
    "max_wal_senders": "64",
    "max_connections": "200",
    "shared_buffers": "256MB",
    # Throwaway clusters: durability against an OS crash is not what the tests exercise,
    # a PostgreSQL restart (fast or immediate) still replays WAL.
    "fsync": "off",
    "full_page_writes": "off",
    "max_wal_size": "4GB",
    "log_min_messages": "warning",
    # A fast shutdown waits for each logical walsender's client to confirm all it was sent, at
    # most wal_sender_timeout; the bridge confirms only what the sink applied, so keep it short.
    "wal_sender_timeout": "5s",
    "log_line_prefix": "'%m [%p] %d '",
}


def _bindir() -> Path:
    """PostgreSQL's server binaries: `pg_config --bindir`, else the newest Debian install."""
    env = os.environ.get("BRIDGE_PG_BINDIR")
    if env:
        return Path(env)
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    except (OSError, subprocess.CalledProcessError):
        pass
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists():
            return cand
    raise BridgeError("PostgreSQL server binaries not found (install postgresql-15 or set BRIDGE_PG_BINDIR)")


class LocalPostgres:
    """A cluster owned by this process. `start()`, `dsn(db)`, `create_database()`, `restart()`, `stop()`.

    As root, the cluster runs as the `postgres` user (`initdb` refuses root).
    """

    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        self.bindir = _bindir()
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="bridge-pg-"))
        self.datadir = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = port or free_port()
        self._as_postgres = os.geteuid() == 0
        self._dbs = 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check)

    def init(self) -> None:
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        res = self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                        "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", check=False)
        if res.returncode != 0:
            raise BridgeError(f"initdb failed: {res.stderr.strip() or res.stdout.strip()}")
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# bridge throwaway cluster\n")
            for k, v in _SETTINGS.items():
                conf.write(f"{k} = {v}\n")
            conf.write(f"port = {self.port}\nunix_socket_directories = '{self.root}'\n")
        with open(self.datadir / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")

    def start(self) -> LocalPostgres:
        if not self.datadir.exists():
            self.init()
        res = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                        "-w", "-t", "60", "start", check=False)
        if res.returncode != 0:
            raise BridgeError(f"PostgreSQL did not start: {res.stderr.strip()}\n{self.log_tail()}")
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; a `fast` stop that has not finished in 30 s becomes `immediate`."""
        if not self.datadir.exists():
            return
        res = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "30",
                        "stop", check=False)
        if res.returncode != 0 and mode != "immediate" and "Is server running?" not in res.stderr:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop",
                      check=False)

    def restart(self, mode: str = "fast") -> None:
        """Stop (`fast` or `immediate`, which is a crash) and start again on the same port."""
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "db") -> str:
        """Create a fresh database and return its DSN."""
        self._dbs += 1
        name = f"{prefix}_{os.getpid()}_{self._dbs}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name is ours, not user input
        return self.dsn(name)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
