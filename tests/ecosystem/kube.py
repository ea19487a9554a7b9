"""A throwaway Kubernetes API server for tests: etcd on loopback plus kube-apiserver, no controllers.

Nothing else of a cluster runs: Deployments are stored but never get pods, which is all a chart
install needs. Authentication is a static bearer token in group system:masters (RBAC on); the
service-account signing key and the serving certificate are made fresh for each server.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.local import free_port

Manifest = dict[str, Any]


class ApiError(Exception):
    """An HTTP error answer of the API server, with its Status body."""

    def __init__(self, method: str, path: str, code: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {code}: {body[:2000]}")
        self.method = method
        self.path = path
        self.code = code
        self.body = body


def _wait(url: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Returns once `ready()` is true; raises RuntimeError (with the log's end) when `proc` exits
    or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if ready():
                return
        except (OSError, ApiError) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout}s ({last}):\n{log.read_text()[-4000:]}")


class KubeApiServer:
    """etcd + kube-apiserver under `workdir`; `start()` returns once /readyz answers ok."""

    def __init__(self, apiserver: Path, workdir: Path) -> None:
        self.apiserver = apiserver
        self.workdir = workdir
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.token = "pgbridge-test-" + "0" * 16
        self.kubeconfig = workdir / "kubeconfig"
        self._procs: list[subprocess.Popen[bytes]] = []
        self.warnings: list[str] = []
        # Loopback only and a certificate made for this run: verification would add nothing.
        self._ssl = ssl.create_default_context()
        self._ssl.check_hostname = False
        self._ssl.verify_mode = ssl.CERT_NONE

    def start(self) -> KubeApiServer:
        """Starts etcd, then kube-apiserver; writes a kubeconfig for helm. Raises RuntimeError."""
        etcd = shutil.which("etcd")
        if etcd is None:
            raise RuntimeError("etcd not found: bash tools/ensure-system-deps.sh etcd")
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        client, peer = free_port(), free_port()
        etcd_log = w / "etcd.log"
        self._procs.append(subprocess.Popen(
            [etcd, "--name", "t", "--data-dir", str(w / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"t=http://127.0.0.1:{peer}",
             "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}"],
            stdout=etcd_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait(f"etcd :{client}", lambda: b'"health":"true"' in urllib.request.urlopen(
            f"http://127.0.0.1:{client}/health", timeout=2).read(), self._procs[-1], etcd_log, 60)

        subprocess.run(["openssl", "genrsa", "-out", str(w / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(w / "sa.key"), "-pubout", "-out", str(w / "sa.pub")],
                       check=True, capture_output=True)
        (w / "tokens.csv").write_text(f'{self.token},pgbridge-admin,1,"system:masters"\n')
        log = w / "kube-apiserver.log"
        self._procs.append(subprocess.Popen(
            [str(self.apiserver),
             f"--etcd-servers=http://127.0.0.1:{client}",
             "--bind-address=127.0.0.1", f"--secure-port={self.port}", "--advertise-address=127.0.0.1",
             f"--cert-dir={w / 'certs'}",
             f"--token-auth-file={w / 'tokens.csv'}", "--authorization-mode=RBAC",
             f"--service-account-key-file={w / 'sa.pub'}",
             f"--service-account-signing-key-file={w / 'sa.key'}",
             "--service-account-issuer=https://kubernetes.default.svc",
             "--service-cluster-ip-range=10.96.0.0/16",
             # One process, no nodes, no peers: nothing to reconcile endpoints for.
             "--endpoint-reconciler-type=none",
             "--enable-priority-and-fairness=false"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait(self.url, lambda: self.request("GET", "/readyz", raw=True) == "ok", self._procs[-1], log, 180)
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        }))
        return self

    def stop(self) -> None:
        """Stops kube-apiserver, then etcd."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()

    def request(self, method: str, path: str, body: Manifest | None = None, *, raw: bool = False) -> Any:
        """One API call; the decoded JSON answer (or the text with raw=True). Raises ApiError.
        The answer's `Warning` headers (deprecations, ...) are kept in `self.warnings`."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=30) as resp:
                text = resp.read().decode()
                self.warnings = resp.headers.get_all("Warning") or []
        except urllib.error.HTTPError as exc:
            raise ApiError(method, path, exc.code, exc.read().decode(errors="replace")) from exc
        return text if raw else json.loads(text)

    def resource_path(self, api_version: str, kind: str, namespace: str | None) -> str:
        """The collection URL of `kind` in `api_version`, from the server's discovery."""
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        for res in self.request("GET", base)["resources"]:
            if res["kind"] == kind and "/" not in res["name"]:
                if res["namespaced"]:
                    assert namespace, f"{kind} is namespaced"
                    return f"{base}/namespaces/{namespace}/{res['name']}"
                return f"{base}/{res['name']}"
        raise LookupError(f"{api_version} {kind} not served")

    def dry_run_create(self, doc: Manifest, namespace: str) -> Manifest:
        """POSTs `doc` with server-side dry-run and strict field validation: every admission and
        validation step runs, nothing is stored; an unknown or duplicate field is an error.
        Returns the object as the server would store it. Raises ApiError."""
        path = self.resource_path(doc["apiVersion"], doc["kind"], doc["metadata"].get("namespace", namespace))
        result: Manifest = self.request("POST", f"{path}?dryRun=All&fieldValidation=Strict", doc)
        return result

    def ensure_namespace(self, name: str) -> None:
        try:
            self.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": name}})
        except ApiError as exc:
            if exc.code != 409:
                raise

    def create_crds(self, crds: list[Manifest], timeout: float = 60.0) -> None:
        """Creates the CRDs and waits until each is Established and served."""
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        for crd in crds:
            self.request("POST", path, crd)
        deadline = time.monotonic() + timeout
        for crd in crds:
            name = crd["metadata"]["name"]
            while True:
                got = self.request("GET", f"{path}/{name}")
                conds = {c["type"]: c["status"] for c in (got.get("status") or {}).get("conditions") or []}
                if conds.get("Established") == "True":
                    break
                assert time.monotonic() < deadline, f"CRD {name} not established: {conds}"
                time.sleep(0.2)

    def delete_crds(self, names: list[str]) -> None:
        for name in names:
            try:
                self.request("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            except ApiError as exc:
                if exc.code != 404:
                    raise
