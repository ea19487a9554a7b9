"""The chart's alert rules and Grafana dashboard against a real Prometheus (v0.316.0 = 3.16.0).

What users rely on: the PrometheusRule loads in Prometheus (`promtool check rules`); each alert
fires on its condition and stays quiet otherwise (`promtool test rules`, tests/ecosystem/promtool/);
and on a running producer and sink, every dashboard panel query and every alert expression finds
series: no misspelled metric, no grouping label the bridge never sets.

The scrape config gives each target the labels a ServiceMonitor scrape adds (namespace, service,
pod, endpoint): those are the labels the chart's alerts and dashboard select on. prometheus and
promtool come from tools/install-prometheus.sh (built from the Go module proxy, cached in
~/.cache/pgbridge); skip only with BRIDGE_SKIP_ECOSYSTEM=prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from confluent_kafka import Producer

from tests.ecosystem.tools import CHART, REPO, helm_binary, install, skip_unless_wanted

skip_unless_wanted("prometheus")

from bridge.local import free_port  # noqa: E402
from tests.conftest import BROKER_KINDS, Broker  # noqa: E402
from tests.pipeline import (  # noqa: E402
    BridgeProcess,
    stopped_cleanly,
    wait_converged,
    wait_slot_active,
    write_config,
)
from tests.support.waits import check_alive  # noqa: E402

RELEASE, NAMESPACE = "demo", "cdc"
SERVICE = f"{RELEASE}-pgbridge-metrics"
MONITORING_VALUES = REPO / "helm" / "ci" / "monitoring-values.yaml"
UNIT_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"
DASHBOARD = CHART / "dashboards" / "pgbridge.json"
TANSU = ["tansu"] if "tansu" in BROKER_KINDS else BROKER_KINDS
SCRAPE_S = 1
# Grafana's variables, as Grafana would fill them for this Prometheus: $__rate_interval is
# max(4 x scrape interval, $__interval + scrape interval); the namespace variable picks ours.
GRAFANA_VARS = {"__rate_interval": f"{8 * SCRAPE_S}s", "__interval": f"{2 * SCRAPE_S}s", "__range": "5m",
                "namespace": NAMESPACE}
# The bridge's metrics, and Prometheus' `up` of the scrape (PgBridgeComponentDown uses it).
METRIC = re.compile(r"\b(bridge_[a-z0-9_]+|up(?=\{))(\{[^}]*\})?")
BY = re.compile(r"\bby\s*\(([^)]*)\)")
THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.eE+-]+\s*$")


@pytest.fixture(scope="module")
def prometheus_dir() -> Path:
    return install("install-prometheus.sh")


@pytest.fixture(scope="module")
def rule_groups() -> dict[str, Any]:
    """The rendered PrometheusRule's spec (its rule groups), for the monitoring example values."""
    proc = subprocess.run([str(helm_binary()), "template", RELEASE, str(CHART), "-n", NAMESPACE,
                           "-f", str(MONITORING_VALUES), "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
                           "--show-only", "templates/prometheusrule.yaml"],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (rule,) = [d for d in yaml.safe_load_all(proc.stdout) if d]
    spec: dict[str, Any] = rule["spec"]
    return spec


def _alerts(groups: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups["groups"] for r in g["rules"]}


def _write_rules(groups: dict[str, Any], where: Path) -> Path:
    path = where / "rules.yaml"
    path.write_text(yaml.safe_dump(groups, sort_keys=False))
    return path


def test_promtool_check_rules(prometheus_dir: Path, rule_groups: dict[str, Any], tmp_path: Path) -> None:
    rules = _write_rules(rule_groups, tmp_path)
    proc = subprocess.run([str(prometheus_dir / "promtool"), "check", "rules", "--lint=all", "--lint-fatal",
                           str(rules)], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_alerts(rule_groups))} rules found" in proc.stdout + proc.stderr


def test_promtool_unit_tests_every_alert(prometheus_dir: Path, rule_groups: dict[str, Any], tmp_path: Path) -> None:
    """Each alert has a case where it fires and one where it stays quiet, and all pass."""
    spec = yaml.safe_load(UNIT_TESTS.read_text())
    cases: dict[str, set[bool]] = {}
    for group in spec["tests"]:
        for t in group["alert_rule_test"]:
            cases.setdefault(t["alertname"], set()).add(bool(t.get("exp_alerts")))
    assert cases == {a: {True, False} for a in _alerts(rule_groups)}, cases
    _write_rules(rule_groups, tmp_path)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    proc = subprocess.run([str(prometheus_dir / "promtool"), "test", "rules", UNIT_TESTS.name], cwd=tmp_path,
                          capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- a real Prometheus scraping a running producer and sink ---------------------------------------


class PrometheusServer:
    """prometheus with a generated config (static targets), on a loopback port."""

    def __init__(self, binary: Path, workdir: Path, targets: dict[str, int], rules: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": f"{SCRAPE_S}s",
                       "evaluation_interval": f"{SCRAPE_S}s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{
                "job_name": SERVICE,
                "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"],
                     "labels": {"namespace": NAMESPACE, "service": SERVICE, "endpoint": "metrics",
                                "pod": f"{RELEASE}-pgbridge-{component}-0", "container": "pgbridge",
                                "app_kubernetes_io_component": component}}
                    for component, port in targets.items()
                ],
            }],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"

    def start(self) -> PrometheusServer:
        self.proc = subprocess.Popen(
            [str(self.binary), f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        result: list[dict[str, Any]] = data["result"]
        return result


def _grafana(expr: str) -> str:
    """The query as Grafana sends it: every $var / ${var} replaced; an unknown variable fails."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in GRAFANA_VARS, f"dashboard variable ${name} has no test value"
        return GRAFANA_VARS[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def _without_threshold(expr: str) -> str:
    """An alert's expression without its final comparison: the series it compares."""
    return THRESHOLD.sub("", expr)


def _missing(prom: PrometheusServer, expr: str) -> list[str]:
    """What `expr` lacks on this Prometheus: no series for it or for one of its metric selectors,
    or a `by (...)` label that no series of its metrics carries."""
    problems = []
    if not prom.query(expr):
        problems.append("no series")
    raw: list[dict[str, str]] = []
    for name, matchers in METRIC.findall(expr):
        series = prom.query(name + matchers)
        if not series:
            problems.append(f"no series for {name}{matchers}")
        raw += [s["metric"] for s in series]
    for group in BY.findall(expr):
        for label in (x.strip() for x in group.split(",") if x.strip()):
            if not any(label in m for m in raw):
                problems.append(f"label {label!r} (by) is on no series of {sorted({n for n, _ in METRIC.findall(expr)})}")
    return problems


@pytest.fixture
def pipeline(broker: Broker, source_dsn: str, target_dsn: str, tmp_path: Path
             ) -> Iterator[tuple[dict[str, int], str, str]]:
    """Producer and sink running on a table with a snapshot behind it; yields their metrics ports,
    the config's topic prefix and the table's topic."""
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.m (id int PRIMARY KEY, v int NOT NULL, note text)")
        conn.execute("INSERT INTO public.m SELECT g, g, 'snap ' || g FROM generate_series(1, 200) g")
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap,
                       source__snapshot="initial")
    conf = json.loads(cfg.read_text())
    ports = {"producer": free_port(), "sink": free_port()}
    procs = [BridgeProcess(c, cfg, tmp_path, env={"BRIDGE_METRICS__PORT": str(p)}).start()
             for c, p in (("produce", ports["producer"]), ("sink", ports["sink"]))]
    with stopped_cleanly(*procs):
        wait_slot_active(source_dsn, conf["source"]["slot"], procs[0])
        yield ports, conf["kafka"]["topic_prefix"], f"{conf['kafka']['topic_prefix']}.public.m"
        check_alive(procs)


@pytest.mark.parametrize("broker", TANSU, indirect=True)
def test_dashboard_and_alerts_find_series_on_a_running_bridge(
        prometheus_dir: Path, rule_groups: dict[str, Any], pipeline: tuple[dict[str, int], str, str],
        broker: Broker, source_dsn: str, target_dsn: str, tmp_path: Path) -> None:
    ports, _prefix, topic = pipeline
    # Traffic: inserts, updates, deletes in several transactions, and one record the sink cannot
    # decode (so the dead-letter counter has a topic).
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        for i in range(5):
            conn.execute("INSERT INTO public.m SELECT g, g, 'row' FROM generate_series(%s::int, %s::int) g",
                         (1000 + 100 * i, 1099 + 100 * i))
            conn.execute("UPDATE public.m SET v = v + 1 WHERE id %% 7 = %s", (i,))
        conn.execute("DELETE FROM public.m WHERE id BETWEEN 10 AND 19")
    wait_converged(source_dsn, target_dsn, {"public.m": (["id", "v", "note"], "id")})
    kp = Producer({"bootstrap.servers": broker.bootstrap})
    kp.produce(topic, key=b"junk", value=b"not avro at all \xff")
    assert kp.flush(30) == 0

    (tmp_path / "prom").mkdir()
    server = PrometheusServer(prometheus_dir / "prometheus", tmp_path / "prom", ports,
                              _write_rules(rule_groups, tmp_path)).start()
    try:
        dashboard = json.loads(DASHBOARD.read_text())
        panels = {f"panel {p['title']!r}: {t['expr']}": _grafana(t["expr"])
                  for p in dashboard["panels"] for t in p.get("targets", [])}
        alerts = {f"alert {name}: {r['expr']}": _without_threshold(r["expr"])
                  for name, r in _alerts(rule_groups).items()}
        queries = {**panels, **alerts}
        assert len(panels) >= 20 and len(alerts) == 8
        # More traffic while Prometheus scrapes, so rates see a change.
        deadline = time.monotonic() + 90
        missing: dict[str, list[str]] = {}
        n = 0
        while True:
            with psycopg.connect(source_dsn, autocommit=True) as conn:
                conn.execute("UPDATE public.m SET v = v + 1 WHERE id %% 5 = %s", (n % 5,))
            n += 1
            targets = server.api("targets")["activeTargets"]
            up = all(t["health"] == "up" for t in targets) and len(targets) == 2
            if up:
                missing = {q: m for q, expr in queries.items() if (m := _missing(server, expr))}
                if not missing:
                    break
            if time.monotonic() > deadline:
                break
            time.sleep(2)
        assert up, f"targets not up: {targets}"
        assert not missing, "queries without series:\n" + "\n".join(f"{q}\n    {m}" for q, m in missing.items())
        # The Grafana variable's own query finds our namespace.
        assert NAMESPACE in server.api("label/namespace/values", **{"match[]": "bridge_up"})
        # Every rule evaluates without error in the real server.
        rules = [r for g in server.api("rules")["groups"] for r in g["rules"]]
        assert len(rules) == 8 and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError"))
                                                                              for r in rules]
    finally:
        server.stop()
