"""deploy/prometheus: promtool accepts the scrape config and the rules, the rules' unit tests pass, every alert is
shaped for the people on call, and every metric an alert or a dashboard panel names is really exported.

promtool comes from Debian's ``prometheus`` package (scripts/setup.sh); blackbox_exporter, which only the
certificate alerts need, from ``prometheus-blackbox-exporter``.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.processes import free_port
from tests.ops.metricnames import (
    BLACKBOX,
    PROMETHEUS_OWN,
    REPO,
    backend_names,
    exposition_names,
    gateway_names,
    promql_names,
)

PROM = REPO / "deploy" / "prometheus"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: run `bash scripts/setup.sh` (Debian package prometheus)", pytrace=False)
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def prometheus_exprs_of_dashboards() -> list[tuple[str, str]]:
    """(dashboard: panel, expr) of every Prometheus target of the Grafana dashboards."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == "prometheus":
                    out.append((f"{path.stem}: {panel['title']}", target["expr"]))
    return out


def test_promtool_accepts_the_scrape_config_with_the_example_gateway_targets(tmp_path: Path) -> None:
    # A copy with the example targets where the config looks for them, so promtool reads and checks them too
    # (it validates file_sd files it finds, and warns when the glob matches none).
    shutil.copytree(PROM, tmp_path / "prometheus")
    (tmp_path / "prometheus" / "gateways").mkdir()
    shutil.copy(PROM / "gateways.example.yml", tmp_path / "prometheus" / "gateways" / "example.yml")
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", "alerts.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout + result.stderr


def test_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alerts_test.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_pt_annotations_and_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text(encoding="utf-8"))["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    names = {rule["alert"] for rule in alert_rules()}
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        # pt-BR for the people on call: accented letters or the usual short words of a Portuguese sentence
        assert re.search(r"[ãçéêíóõúá]|\b(não|sem|há|de|do|da)\b", text), rule["alert"]
    for name in names:
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), f"{name}: no case where it fires"
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), f"{name}: no quiet case"
    assert {c["alertname"] for c in cases} <= names, "a test names an alert that does not exist"


def test_promql_names_finds_the_metrics_and_nothing_else() -> None:
    assert promql_names('sum by (job, reason) (increase(cds_a_total{kind="x"}[15m])) > 0 '
                        "or cds_a_total unless on (job) cds_b offset 15m") == {"cds_a_total", "cds_b"}
    assert promql_names("time() - max by (job) (cds_c_seconds) > 2 * 86400") == {"cds_c_seconds"}
    assert promql_names("histogram_quantile(0.95, sum by (le) (rate(cds_d_bucket[$__rate_interval])))") == {
        "cds_d_bucket"}


def test_every_metric_of_the_alerts_and_dashboards_is_exported(tmp_path: Path) -> None:
    exported = backend_names() | gateway_names(tmp_path) | PROMETHEUS_OWN | BLACKBOX
    used = [(rule["alert"], rule["expr"]) for rule in alert_rules()] + prometheus_exprs_of_dashboards()
    assert len(used) > 20
    missing = {f"{where}: {name}" for where, expr in used for name in promql_names(expr) - exported}
    assert not missing, f"metrics nobody exports (renamed?): {sorted(missing)}"
    # and the sets are not vacuous: the backend's and the gateway's own names are among them
    assert {"cds_ingest_site_readings_total", "cds_gateway_queue_oldest_age_seconds"} <= exported


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS listener on 127.0.0.1 with a fresh self-signed certificate valid for 10 days: (port, cert)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "10", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                conn.settimeout(5)
                context.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], cert
    stop.set()
    thread.join(5)
    listener.close()


def test_blackbox_exporter_with_the_shipped_module_exports_the_certificate_expiry(
        tmp_path: Path, tls_server: tuple[int, Path]) -> None:
    binary = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
    if binary is None:
        pytest.skip("blackbox_exporter not installed (Debian package prometheus-blackbox-exporter)")
    check = subprocess.run([binary, "--config.check", f"--config.file={PROM / 'blackbox.yml'}"],
                           capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr
    # The shipped module, trusting the test's certificate the way a private CA is configured (blackbox.yml).
    config = yaml.safe_load((PROM / "blackbox.yml").read_text(encoding="utf-8"))
    port, cert = tls_server
    config["modules"]["cds_tls"]["tcp"]["tls_config"]["ca_file"] = str(cert)
    (tmp_path / "blackbox.yml").write_text(yaml.safe_dump(config))
    listen = free_port()
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'blackbox.yml'}",
                             f"--web.listen-address=127.0.0.1:{listen}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{listen}/probe?module=cds_tls&target=127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    text = resp.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # the exporter is still starting (polling for readiness, not synchronising)
    finally:
        proc.terminate()
        proc.wait(10)
    assert exposition_names(text) >= BLACKBOX
    values = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) (\S+)$", text, re.M)}
    assert values["probe_success"] == 1.0
    assert abs(values["probe_ssl_earliest_cert_expiry"] - (time.time() + 10 * 86400)) < 3600
