"""The container image, built from the Dockerfile and run, without a container engine.

`tools/build-image.sh` builds it with buildah (chroot isolation, vfs storage) from a Debian base
made by mmdebstrap; the test runs the image's `pgbridge` as the image's non-root user with
`buildah run` (chroot isolation shares the host's network, so the local PostgreSQL and broker on
127.0.0.1 are reachable): `--version`, then a producer and a sink that replicate a table.
Needs root (chroot); the first build takes ~5 minutes, later ones reuse the cached layers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bridge import __version__
from bridge.local import free_port
from tests.conftest import Broker
from tests.pipeline import REPO, wait_converged, wait_slot_active, write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="buildah's chroot isolation needs root")

UID = 10001  # the Dockerfile's fixed non-root user


def _buildah(*args: str) -> list[str]:
    store = Path(os.environ.get("PGBRIDGE_CACHE", Path.home() / ".cache" / "pgbridge")) / "containers"
    return ["buildah", "--root", str(store / "storage"), "--runroot", str(store / "run"),
            "--storage-driver", "vfs", *args]


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built (or taken from the layer cache) from the worktree's Dockerfile."""
    res = subprocess.run(["bash", str(REPO / "tools" / "build-image.sh")], capture_output=True, text=True,
                         timeout=1800)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout.strip().splitlines()[-1]


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = subprocess.run(_buildah("from", "--pull-never", image), capture_output=True, text=True,
                          check=True).stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(_buildah("rm", name), capture_output=True, check=False)


def _run(container: str, config: Path | None, *argv: str, env: dict[str, str] | None = None) -> list[str]:
    opts = ["--volume", f"{config}:/etc/pgbridge/bridge.yaml:ro"] if config is not None else []
    for k, v in (env or {}).items():
        opts += ["--env", f"{k}={v}"]
    return _buildah("run", "--isolation", "chroot", "--user", f"{UID}:{UID}", *opts, container, "--", *argv)


def test_image_config(image: str) -> None:
    """Non-root user, entrypoint, and the HEALTHCHECK kept (the OCI format would drop it)."""
    out = subprocess.run(_buildah("inspect", "--type", "image", image), capture_output=True, text=True, check=True)
    cfg = json.loads(out.stdout)["Docker"]["config"]
    assert cfg["User"] == f"{UID}:{UID}"
    assert cfg["Entrypoint"] == ["pgbridge"]
    assert cfg["Healthcheck"]["Test"][0] == "CMD" and "/healthz" in cfg["Healthcheck"]["Test"][-1]


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_image_runs_producer_and_sink(container: str, broker: Broker, source_dsn: str, target_dsn: str,
                                      tmp_path: Path) -> None:
    who = subprocess.run(_run(container, None, "python", "-c", "import os; print(os.getuid(), os.getgid())"),
                         capture_output=True, text=True, timeout=120)
    assert who.stdout.split() == [str(UID), str(UID)], who.stderr
    version = subprocess.run(_run(container, None, "pgbridge", "--version"), capture_output=True, text=True,
                             timeout=120)
    assert version.returncode == 0, version.stderr
    assert __version__ in version.stdout

    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v text, n numeric(10,2))")
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap)
    cfg.chmod(0o644)  # read by the image's user
    slot = json.loads(cfg.read_text())["source"]["slot"]
    procs: list[subprocess.Popen[bytes]] = []
    logs = {name: tmp_path / f"{name}.log" for name in ("produce", "sink")}
    try:
        for name, logfile in logs.items():
            with open(logfile, "wb") as out:
                procs.append(subprocess.Popen(
                    _run(container, cfg, "pgbridge", name, "--config", "/etc/pgbridge/bridge.yaml",
                         "--log-format", "text", env={"BRIDGE_METRICS__PORT": str(free_port())}), stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        wait_slot_active(source_dsn, slot, timeout=120)
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.t SELECT g, 'v' || g, g / 4.0 FROM generate_series(1, 500) g")
            conn.execute("UPDATE public.t SET v = 'changed' WHERE id % 10 = 0")
            conn.execute("DELETE FROM public.t WHERE id > 490")
        try:
            wait_converged(source_dsn, target_dsn, {"public.t": (["id", "v", "n"], "id")}, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n" + "\n".join(f"--- {n} ---\n{f.read_text()[-3000:]}"
                                                         for n, f in logs.items())) from exc
        for p in procs:
            assert p.poll() is None, "\n".join(f.read_text()[-3000:] for f in logs.values())
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
