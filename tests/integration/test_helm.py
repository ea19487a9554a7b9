"""The Helm chart (helm/pgbridge) rendered and checked with a real helm binary; no cluster needed.

What users rely on: the producer is always exactly one replica replaced with Recreate; credentials
never land in a ConfigMap; the values schema rejects values that would break either; every manifest
is a valid Kubernetes object; the alerts and the dashboard query only metrics the bridge exports.

helm comes from `tools/install-helm.sh` (the Makefile runs it) at .cache/bin/helm. Core objects are
validated with kubernetes-validate (strict: unknown fields fail). ServiceMonitor/PrometheusRule are
CRDs that kubernetes-validate has no schema for: they are validated against the structural schemas
below (the fields the Prometheus Operator needs, with unknown fields rejected where the chart writes
them).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".cache" / "bin" / "helm"
CHART = ROOT / "helm" / "pgbridge"
CI_FILES = sorted((ROOT / "helm" / "ci").glob("*.yaml"))
RELEASE = "demo"
NAMESPACE = "cdc"
K8S_VERSIONS = ("1.25.0", "1.37.0")  # Chart.yaml kubeVersion floor and the newest known

if not HELM.exists():
    pytest.skip(f"helm not installed at {HELM}: run tools/install-helm.sh (make does)", allow_module_level=True)

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate not installed (part of the dev extra)"
)
jsonschema = pytest.importorskip("jsonschema")

# Fixed metric names (bridge/metrics.py); histograms also expose _bucket/_sum/_count.
COUNTERS = {
    "bridge_changes_captured_total", "bridge_transactions_total", "bridge_decoded_bytes_total",
    "bridge_records_produced_total", "bridge_produce_errors_total", "bridge_sink_rows_applied_total",
    "bridge_dead_letters_total", "bridge_heartbeats_total", "bridge_snapshot_rows_total",
}
GAUGES = {
    "bridge_up", "bridge_slot_retained_wal_bytes", "bridge_slot_confirmed_lsn", "bridge_slot_wal_status",
    "bridge_watermark_lsn", "bridge_acked_lsn", "bridge_sink_consumer_lag", "bridge_snapshot_tables_remaining",
    "bridge_last_progress_timestamp_seconds",
}
HISTOGRAMS = {"bridge_end_to_end_lag_seconds", "bridge_sink_batch_rows", "bridge_sink_batch_duration_seconds"}
SERIES = COUNTERS | GAUGES | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
METRIC_REF = re.compile(r"\bbridge_[a-z0-9_]+")

Manifest = dict[str, Any]

# --- structural schemas for the Prometheus Operator CRDs -----------------------------------------
_META = {
    "type": "object",
    "required": ["name", "namespace", "labels"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}}},
}
_DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["endpoints", "selector"],
                "properties": {
                    "endpoints": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "additionalProperties": False, "required": ["port"],
                        "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                       "interval": _DURATION, "scrapeTimeout": _DURATION,
                                       "metricRelabelings": {"type": "array"}, "relabelings": {"type": "array"}}}},
                    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                    "namespaceSelector": {"type": "object", "additionalProperties": False,
                                          "properties": {"matchNames": {"type": "array", "items": {"type": "string"}},
                                                         "any": {"type": "boolean"}}},
                    "selector": {"type": "object", "required": ["matchLabels"],
                                 "properties": {"matchLabels": {"type": "object", "minProperties": 1,
                                                                "additionalProperties": {"type": "string"}}}},
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _META,
            "spec": {
                "type": "object", "additionalProperties": False, "required": ["groups"],
                "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                    "properties": {"name": {"type": "string"}, "interval": _DURATION, "rules": {
                        "type": "array", "minItems": 1, "items": {
                            "type": "object", "additionalProperties": False, "required": ["alert", "expr"],
                            "properties": {
                                "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                "expr": {"type": "string", "minLength": 1},
                                "for": _DURATION,
                                "labels": {"type": "object", "required": ["severity"],
                                           "additionalProperties": {"type": "string"},
                                           "properties": {"severity": {"enum": ["critical", "warning", "info"]}}},
                                "annotations": {"type": "object", "required": ["summary", "description"],
                                                "additionalProperties": {"type": "string"}},
                            }}}}}}},
            },
        },
    },
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120, check=False)


# What a cluster with the Prometheus Operator's CRDs serves; without it the chart leaves the
# ServiceMonitor/PrometheusRule out (tests/ecosystem/test_k8s.py checks both on a real API server).
OPERATOR_APIS = ("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
                 "--api-versions", "monitoring.coreos.com/v1/PrometheusRule")


def render(*args: str) -> list[Manifest]:
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *OPERATOR_APIS, *args)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def values_args(path: Path | None) -> list[str]:
    return [] if path is None else ["-f", str(path)]


RENDERINGS: list[Path | None] = [None, *CI_FILES]
IDS = ["defaults", *(p.stem for p in CI_FILES)]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    return {name: render(*values_args(path)) for name, path in zip(IDS, RENDERINGS, strict=True)}


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Manifest], kind: str, suffix: str) -> Manifest:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"expected one {kind} *{suffix}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def containers(docs: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for dep in of_kind(docs, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            yield dep["metadata"]["name"], c


def test_ci_values_files_exist() -> None:
    assert {p.stem for p in CI_FILES} >= {"monitoring-values", "existing-secret-values", "sink-scaled-values",
                                          "kafka-sasl-values"}


@pytest.mark.parametrize("values", RENDERINGS, ids=IDS)
def test_helm_lint_strict(values: Path | None) -> None:
    proc = helm("lint", "--strict", str(CHART), *values_args(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("name", IDS)
def test_every_manifest_is_valid(rendered: dict[str, list[Manifest]], name: str) -> None:
    docs = rendered[name]
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Deployment", "Service", "ServiceAccount"} <= kinds
    for doc in docs:
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"]["namespace"] == NAMESPACE, where
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            errors = sorted(jsonschema.Draft7Validator(CRD_SCHEMAS[doc["kind"]]).iter_errors(doc), key=str)
            assert not errors, f"{where}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where} invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("name", IDS)
def test_producer_is_one_replica_with_recreate(rendered: dict[str, list[Manifest]], name: str) -> None:
    producer = named(rendered[name], "Deployment", "-producer")
    assert producer["spec"]["replicas"] == 1
    assert producer["spec"]["strategy"] == {"type": "Recreate"}
    args = producer["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["produce", "--config", "/etc/pgbridge/bridge.yaml"]
    sink = named(rendered[name], "Deployment", "-sink")
    assert sink["spec"]["template"]["spec"]["containers"][0]["args"][0] == "sink"


@pytest.mark.parametrize("name", IDS)
def test_pods_are_hardened_and_probed(rendered: dict[str, list[Manifest]], name: str) -> None:
    docs = rendered[name]
    config = yaml.safe_load(named(docs, "ConfigMap", RELEASE + "-pgbridge")["data"]["bridge.yaml"])
    port = config["metrics"]["port"]
    for dep in of_kind(docs, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
            assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
            assert c["resources"]["requests"] and c["resources"]["limits"]
            assert {m["mountPath"] for m in c["volumeMounts"]} == {"/etc/pgbridge", "/tmp"}


def test_config_change_rolls_the_pods(rendered: dict[str, list[Manifest]]) -> None:
    before = named(rendered["defaults"], "Deployment", "-sink")["spec"]["template"]["metadata"]["annotations"]
    after_docs = render("--set", "config.sink.batch_max_rows=5000")
    after = named(after_docs, "Deployment", "-sink")["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] != after["checksum/config"]
    cm = yaml.safe_load(named(after_docs, "ConfigMap", RELEASE + "-pgbridge")["data"]["bridge.yaml"])
    assert cm["sink"]["batch_max_rows"] == 5000


def test_sink_scales_behind_a_pdb(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["sink-scaled-values"]
    sink = named(docs, "Deployment", "-sink")
    assert sink["spec"]["replicas"] == 3
    pdb = named(docs, "PodDisruptionBudget", "-sink")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == sink["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "sink"
    assert not of_kind(rendered["defaults"], "PodDisruptionBudget")


def test_metrics_service_and_servicemonitor_select_the_pods(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["monitoring-values"]
    svc = named(docs, "Service", "-metrics")
    sm = named(docs, "ServiceMonitor", "pgbridge")
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    for dep in of_kind(docs, "Deployment"):
        assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not of_kind(rendered["defaults"], "ServiceMonitor")
    assert not of_kind(rendered["defaults"], "PrometheusRule")


def _secret_env(container: Manifest) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_existing_secret_becomes_env_per_component(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["existing-secret-values"]
    assert not of_kind(docs, "Secret"), "an existing Secret is referenced, never rendered"
    producer = named(docs, "Deployment", "-producer")["spec"]["template"]["spec"]["containers"][0]
    sink = named(docs, "Deployment", "-sink")["spec"]["template"]["spec"]["containers"][0]
    common = {"BRIDGE_SOURCE__DSN": ("pgbridge-credentials", "source-dsn"),
              "BRIDGE_SINK__DSN": ("pgbridge-credentials", "sink-dsn")}
    assert _secret_env(producer) == {**common, "PGPASSWORD": ("pgbridge-credentials", "source-password")}
    assert _secret_env(sink) == {**common, "PGPASSWORD": ("pgbridge-credentials", "sink-password")}
    assert not _secret_env(named(rendered["defaults"], "Deployment", "-producer")["spec"]["template"]["spec"]["containers"][0])


def test_secret_values_never_reach_a_configmap(rendered: dict[str, list[Manifest]]) -> None:
    ci = yaml.safe_load((ROOT / "helm" / "ci" / "kafka-sasl-values.yaml").read_text())
    sentinels = list(ci["secret"]["data"].values())
    assert sentinels and all(s.startswith("SENTINEL-") for s in sentinels)
    docs = rendered["kafka-sasl-values"]
    # The sentinels are rendered (into the Secret) — so the check below can fail.
    secret = named(docs, "Secret", "pgbridge")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert sorted(decoded.values()) == sorted(sentinels)
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = json.dumps(doc)
        for s in sentinels:
            assert s not in text, f"{doc['kind']}/{doc['metadata']['name']} contains a secret"
            assert base64.b64encode(s.encode()).decode() not in text
    for name, docs_ in rendered.items():
        for cm in of_kind(docs_, "ConfigMap"):
            body = json.dumps(cm)
            assert "SENTINEL" not in body, f"{name}: ConfigMap {cm['metadata']['name']}"
            assert not re.search(r"password\s*[:=]", body, re.I), f"{name}: ConfigMap {cm['metadata']['name']}"
    # ... and reach the pods as env, SASL password included.
    sink = named(docs, "Deployment", "-sink")["spec"]["template"]["spec"]["containers"][0]
    assert _secret_env(sink) == {
        "PGPASSWORD": (secret["metadata"]["name"], "sink-password"),
        "BRIDGE_KAFKA__CONFIG__SASL_PASSWORD": (secret["metadata"]["name"], "kafka-sasl-password"),
    }
    cm = yaml.safe_load(named(docs, "ConfigMap", RELEASE + "-pgbridge")["data"]["bridge.yaml"])
    assert cm["kafka"]["config"]["sasl.mechanism"] == "SCRAM-SHA-512"
    assert "sasl.password" not in cm["kafka"]["config"]


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (["--set", "producer.replicas=2"], "/producer/replicas"),
        (["--set", "sink.replicas=-1"], "/sink/replicas"),
        (["--set-string", "sink.replicas=3"], "/sink/replicas"),
        (["--set", "config.source.capture=logical"], "/config/source/capture"),
        (["--set", "config.source.snapshot=always"], "/config/source/snapshot"),
        (["--set", "config.ack=broker"], "/config/ack"),
        (["--set", "config.source.unknown_key=1"], "'unknown_key' not allowed"),
        (["--set", "config.surprise=1"], "'surprise' not allowed"),
        (["--set", "config.source.dsn=postgresql://bridge:hunter2@db:5432/app"], "/config/source/dsn"),
        (["--set", "config.sink.dsn=host=db user=bridge password=hunter2"], "/config/sink/dsn"),
        (["--set", "config.kafka.config.sasl\\.password=hunter2"], "'sasl.password'"),
        (["--set-string", "config.metrics.port=9187"], "/config/metrics/port"),
        (["--set", "securityContext.runAsNonRoot=false"], "/securityContext/runAsNonRoot"),
        (["--set", "logLevel=verbose"], "/logLevel"),
        (["--set", "prometheusRule.retainedWal.for=ten minutes"], "/prometheusRule/retainedWal/for"),
        (["--set", "unexpected=1"], "'unexpected' not allowed"),
    ],
    ids=lambda a: a[1] if isinstance(a, list) else None,
)
def test_values_schema_rejects(bad: list[str], where: str) -> None:
    """Each bad value fails `helm template` with a schema error naming that value."""
    proc = helm("template", RELEASE, str(CHART), *bad)
    assert proc.returncode != 0, f"accepted {bad}"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert where in proc.stderr, proc.stderr


def _referenced_metrics(expr: str) -> set[str]:
    return set(METRIC_REF.findall(expr))


def test_alert_rules_cover_the_slot_and_pipeline(rendered: dict[str, list[Manifest]]) -> None:
    rule = named(rendered["monitoring-values"], "PrometheusRule", "pgbridge")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    wanted = {
        "PgBridgeRetainedWalHigh": "bridge_slot_retained_wal_bytes",
        "PgBridgeSlotWalStatusNotReserved": "bridge_slot_wal_status",
        "PgBridgeNoProgress": "bridge_last_progress_timestamp_seconds",
        "PgBridgeDeadLetters": "bridge_dead_letters_total",
        "PgBridgeConsumerLagHigh": "bridge_sink_consumer_lag",
    }
    for alert, metric in wanted.items():
        assert metric in _referenced_metrics(alerts[alert]["expr"]), alert
    selector = f'namespace="{NAMESPACE}",service="{RELEASE}-pgbridge-metrics"'
    for name, r in alerts.items():
        refs = _referenced_metrics(r["expr"])
        assert refs and refs <= SERIES, f"{name}: unknown metrics {refs - SERIES}"
        # every selector, the bridge's metrics and Prometheus' own `up` of the scrape, is scoped
        assert r["expr"].count(selector) == len(re.findall(r"\b(?:bridge_[a-z0-9_]+|up)\{", r["expr"])), \
            f"{name} not scoped to the release"
    # thresholds from the values file
    assert alerts["PgBridgeRetainedWalHigh"]["expr"].endswith("> 5368709120")
    assert alerts["PgBridgeNoProgress"]["expr"].endswith("> 900")
    assert 'status!="reserved"' in alerts["PgBridgeSlotWalStatusNotReserved"]["expr"]
    # Prometheus templating survives helm's own templating.
    assert "{{ $labels.slot }}" in alerts["PgBridgeRetainedWalHigh"]["annotations"]["description"]


def test_dashboard_parses_and_uses_only_bridge_metrics(rendered: dict[str, list[Manifest]]) -> None:
    for name, docs in rendered.items():
        cm = named(docs, "ConfigMap", "-dashboard")
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", name
    cm = named(rendered["defaults"], "ConfigMap", "-dashboard")
    dashboard = json.loads(cm["data"]["pgbridge.json"])
    assert dashboard["uid"] == "pgbridge"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == len(set(titles))
    refs: set[str] = set()
    for expr in exprs:
        found = _referenced_metrics(expr)
        assert found, f"panel query without a bridge metric: {expr}"
        refs |= found
    assert refs <= SERIES, f"unknown metrics: {sorted(refs - SERIES)}"
    # throughput, lag, retained WAL, batch latency, dead letters
    assert {
        "bridge_records_produced_total", "bridge_sink_rows_applied_total", "bridge_sink_consumer_lag",
        "bridge_end_to_end_lag_seconds_bucket", "bridge_slot_retained_wal_bytes",
        "bridge_sink_batch_duration_seconds_bucket", "bridge_dead_letters_total",
    } <= refs
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
