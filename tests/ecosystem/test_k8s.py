"""The Helm chart on a real Kubernetes API server (kube-apiserver v1.34.0 + etcd, no controllers).

What users rely on: `helm install`, `helm upgrade` and `helm uninstall` of the chart work on a real
cluster with the default values and every example under helm/ci/; the API server accepts every
rendered object with strict field validation (no unknown field, no wrong type, no field the server
drops silently); on a cluster without the Prometheus Operator the chart installs and leaves the
ServiceMonitor/PrometheusRule out (it says so in NOTES), and with the operator's CRDs (the
published ones, from prometheus-operator v0.85.0) they are created and accepted.

kube-apiserver comes from tools/install-kube-apiserver.sh (built from the Go module proxy, cached
in ~/.cache/pgbridge), etcd from Debian's etcd-server; skip only with BRIDGE_SKIP_ECOSYSTEM=k8s.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.ecosystem.tools import CHART, CI_VALUES, helm_binary, install, skip_unless_wanted

skip_unless_wanted("k8s")

from tests.ecosystem.kube import ApiError, KubeApiServer, Manifest  # noqa: E402

KUBE_VERSION = "v1.34.0"
RELEASE = "demo"
CASES: list[Path | None] = [None, *CI_VALUES]
IDS = ["defaults", *(p.stem for p in CI_VALUES)]
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
CRD_NAMES = ["servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"]


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    server = KubeApiServer(install("install-kube-apiserver.sh"), tmp_path_factory.mktemp("kube"))
    try:
        yield server.start()
    finally:
        server.stop()


class Helm:
    """helm pointed at the test server, with its own config/cache/data directories."""

    def __init__(self, kube: KubeApiServer) -> None:
        self.binary = helm_binary()
        home = kube.workdir / "helm"
        self.env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
                    "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=self.env,
                              timeout=300, check=False)
        if ok:
            assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def manifest(self, release: str, namespace: str) -> list[Manifest]:
        out = self("get", "manifest", release, "-n", namespace).stdout
        return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def helm(kube: KubeApiServer) -> Helm:
    return Helm(kube)


@pytest.fixture
def no_operator_crds(kube: KubeApiServer) -> None:
    kube.delete_crds(CRD_NAMES)
    _wait_discovery(kube, present=False)


@pytest.fixture
def operator_crds(kube: KubeApiServer) -> Iterator[None]:
    crd_dir = install("install-operator-crds.sh")
    kube.delete_crds(CRD_NAMES)
    _wait_discovery(kube, present=False)
    kube.create_crds([yaml.safe_load(p.read_text()) for p in sorted(crd_dir.glob("monitoring.coreos.com_*.yaml"))])
    _wait_discovery(kube, present=True)
    yield
    kube.delete_crds(CRD_NAMES)


def _wait_discovery(kube: KubeApiServer, *, present: bool, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            kinds = {r["kind"] for r in kube.request("GET", "/apis/monitoring.coreos.com/v1")["resources"]}
        except ApiError as exc:
            if exc.code != 404:
                raise
            kinds = set()
        if (OPERATOR_KINDS <= kinds) == present and (present or not kinds):
            return
        assert time.monotonic() < deadline, f"monitoring.coreos.com/v1 discovery still {kinds}"
        time.sleep(0.3)


def _values(path: Path | None) -> list[str]:
    return [] if path is None else ["-f", str(path)]


def _namespace(case: str, *suffix: str) -> str:
    return "-".join(["t", case.removesuffix("-values"), *suffix])[:63]


def _get(kube: KubeApiServer, doc: Manifest, namespace: str) -> Manifest:
    path = kube.resource_path(doc["apiVersion"], doc["kind"], doc["metadata"].get("namespace", namespace))
    got: Manifest = kube.request("GET", f"{path}/{doc['metadata']['name']}")
    return got


def _by_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def _render(helm: Helm, path: Path | None, namespace: str, *extra: str) -> list[Manifest]:
    """`helm template` as the test server would see it (its version, its served APIs)."""
    out = helm("template", RELEASE, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION, *extra,
               *_values(path)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_server_is_the_wanted_kubernetes(kube: KubeApiServer) -> None:
    version = kube.request("GET", "/version")
    assert version["gitVersion"] == KUBE_VERSION, version
    assert (version["major"], version["minor"]) == ("1", "34")


@pytest.mark.parametrize("values", CASES, ids=IDS)
def test_install_upgrade_uninstall(kube: KubeApiServer, helm: Helm, no_operator_crds: None,
                                   values: Path | None) -> None:
    """Install creates every object of the release on the server; upgrade changes them in place
    (a config change rolls the pods' checksum); uninstall removes them all."""
    case = "defaults" if values is None else values.stem
    ns = _namespace(case)
    helm("install", RELEASE, str(CHART), "-n", ns, "--create-namespace", *_values(values))
    docs = helm.manifest(RELEASE, ns)
    assert {"ConfigMap", "Deployment", "Service", "ServiceAccount"} <= {d["kind"] for d in docs}
    stored = {(d["kind"], d["metadata"]["name"]): _get(kube, d, ns) for d in docs}
    for (kind, name), obj in stored.items():
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, f"{kind}/{name}"
        assert obj["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE, f"{kind}/{name}"
    sink = next(o for (k, n), o in stored.items() if k == "Deployment" and n.endswith("-sink"))
    before = sink["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    helm("upgrade", RELEASE, str(CHART), "-n", ns, *_values(values), "--set", "config.sink.batch_max_rows=4321")
    status = json.loads(helm("status", RELEASE, "-n", ns, "-o", "json").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{RELEASE}-pgbridge")
    config = yaml.safe_load(_get(kube, cm, ns)["data"]["bridge.yaml"])
    assert config["sink"]["batch_max_rows"] == 4321
    after = _get(kube, sink, ns)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert after != before

    helm("uninstall", RELEASE, "-n", ns)
    for (kind, name) in stored:
        with pytest.raises(ApiError) as gone:
            _get(kube, next(d for d in docs if (d["kind"], d["metadata"]["name"]) == (kind, name)), ns)
        assert gone.value.code == 404, f"{kind}/{name} left behind"


@pytest.mark.parametrize("values", CASES, ids=IDS)
def test_server_side_dry_run_strict(kube: KubeApiServer, helm: Helm, no_operator_crds: None,
                                    values: Path | None) -> None:
    """Every rendered object passes the server's admission and validation with strict field
    validation, without warnings; `helm install --dry-run=server` agrees."""
    case = "defaults" if values is None else values.stem
    ns = _namespace(case, "dry")
    kube.ensure_namespace(ns)
    docs = _render(helm, values, ns)
    for doc in docs:
        where = f"{case}: {doc['kind']}/{doc['metadata']['name']}"
        try:
            stored = kube.dry_run_create(doc, ns)
        except ApiError as exc:
            pytest.fail(f"{where} rejected: {exc}")
        assert not kube.warnings, f"{where}: server warnings {kube.warnings}"
        assert stored["metadata"]["name"] == doc["metadata"]["name"]
    helm("install", RELEASE, str(CHART), "-n", ns, "--dry-run=server", *_values(values))


def test_strict_validation_rejects_an_unknown_field(kube: KubeApiServer, helm: Helm) -> None:
    """The check above can fail: one misplaced field in a rendered Deployment is refused."""
    ns = _namespace("defaults", "bad")
    kube.ensure_namespace(ns)
    deployment = _by_kind(_render(helm, None, ns), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {"periodSeconds": 5}
    with pytest.raises(ApiError) as refused:
        kube.dry_run_create(deployment, ns)
    message = json.loads(refused.value.body)["message"]
    assert refused.value.code == 400 and 'unknown field "spec.template.spec.containers[0].readinessprobe"' in message


def test_without_operator_crds_monitoring_objects_are_left_out(kube: KubeApiServer, helm: Helm,
                                                               no_operator_crds: None) -> None:
    """On a cluster without the Prometheus Operator an install with the monitoring values works
    and says in NOTES that no ServiceMonitor/PrometheusRule was created."""
    monitoring = next(p for p in CI_VALUES if p.stem == "monitoring-values")
    ns = _namespace("monitoring", "nocrd")
    proc = helm("install", RELEASE, str(CHART), "-n", ns, "--create-namespace", "-f", str(monitoring))
    kinds = {d["kind"] for d in helm.manifest(RELEASE, ns)}
    assert not kinds & OPERATOR_KINDS, kinds
    assert "no ServiceMonitor was created" in proc.stdout and "no alert rules were created" in proc.stdout
    helm("uninstall", RELEASE, "-n", ns)


def test_with_operator_crds_monitoring_objects_are_created(kube: KubeApiServer, helm: Helm,
                                                           operator_crds: None) -> None:
    """With the operator's CRDs the ServiceMonitor and PrometheusRule are rendered, pass strict
    validation against the operator's published schemas, and follow install/upgrade/uninstall."""
    monitoring = next(p for p in CI_VALUES if p.stem == "monitoring-values")
    ns = _namespace("monitoring", "crd")
    kube.ensure_namespace(ns)
    served = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
              "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]
    rendered = [d for d in _render(helm, monitoring, ns, *served) if d["kind"] in OPERATOR_KINDS]
    assert {d["kind"] for d in rendered} == OPERATOR_KINDS
    for doc in rendered:
        try:
            kube.dry_run_create(doc, ns)
        except ApiError as exc:
            pytest.fail(f"{doc['kind']} rejected by the operator's CRD schema: {exc}")
        assert not kube.warnings, kube.warnings

    proc = helm("install", RELEASE, str(CHART), "-n", ns, "-f", str(monitoring))
    assert "WARNING: serviceMonitor" not in proc.stdout
    docs = [d for d in helm.manifest(RELEASE, ns) if d["kind"] in OPERATOR_KINDS]
    assert {d["kind"] for d in docs} == OPERATOR_KINDS
    rule = _get(kube, _by_kind(docs, "PrometheusRule")[0], ns)
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} >= {"PgBridgeRetainedWalHigh",
                                                                               "PgBridgeNoProgress"}
    helm("upgrade", RELEASE, str(CHART), "-n", ns, "-f", str(monitoring),
         "--set", "prometheusRule.noProgress.minutes=20")
    rule = _get(kube, _by_kind(docs, "PrometheusRule")[0], ns)
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "PgBridgeNoProgress"]
    assert exprs and exprs[0].endswith("> 1200")
    helm("uninstall", RELEASE, "-n", ns)
    for doc in docs:
        with pytest.raises(ApiError) as gone:
            _get(kube, doc, ns)
        assert gone.value.code == 404


