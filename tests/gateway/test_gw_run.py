"""The running gateway (a real subprocess) seen from outside: downlink CONFIG results, persistent dedupe across a
restart, retained status with last will, the status page (HTML, JSON, metrics, password) and the monitor CLI."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest
from gwharness import REPO, Collector, GatewayProcess, check_delivery
from paho.mqtt.enums import CallbackAPIVersion

from devstack.mosquitto import MosquittoService
from protocol import mqtt
from sim.runner import MeterRunner

PERIOD_MS = 20


def publish(broker: MosquittoService, topic: str, payload: bytes) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="")
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def results(collector: Collector) -> list[mqtt.ConfigResult]:
    return [mqtt.config_result_decoder.decode(p) for p in collector.topic_payloads("/up/config-result")]


def test_downlink_config_applied_storage_error_undeliverable_timeout(
    sim: MeterRunner, broker: MosquittoService, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    meter = sim.add_meter(report_period_ms=PERIOD_MS, queue_capacity=256)
    bystander = sim.add_meter(report_period_ms=PERIOD_MS, queue_capacity=256)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    wait_for(lambda: len({k[0] for k in collector.keys(None)}) == 2, 10, what="readings from both meters")
    topic = mqtt.config_topic(unique_id, gw.gateway, meter.device)

    publish(broker, topic, mqtt.json_encoder.encode(mqtt.ConfigRequest(request_id=7, report_period_ms=250)))
    wait_for(lambda: any(r.request_id == 7 for r in results(collector)), 10, what="result 7")
    (r7,) = [r for r in results(collector) if r.request_id == 7]
    assert (r7.device, r7.status, r7.report_period_ms) == (meter.device, "applied", 250)
    assert (meter.model.report_period_ms, bystander.model.report_period_ms) == (250, PERIOD_MS)  # the right one
    wait_for(lambda: any(b'"report_period_ms":250' in p for p in collector.topic_payloads(meter.device)), 5,
             what="DeviceInfo with the new period")  # fmt: skip

    meter.set_storage_fails(True)
    publish(broker, topic, mqtt.json_encoder.encode(mqtt.ConfigRequest(request_id=8, v_gain=250_001)))
    wait_for(lambda: any(r.request_id == 8 for r in results(collector)), 10, what="result 8")
    assert [r.status for r in results(collector) if r.request_id == 8] == ["storage_error"]

    other = mqtt.config_topic(unique_id, gw.gateway, "a1c5500000000fff")
    publish(broker, other, mqtt.json_encoder.encode(mqtt.ConfigRequest(request_id=9, report_period_ms=1000)))
    wait_for(lambda: any(r.request_id == 9 for r in results(collector)), 10, what="result 9")
    assert [r.status for r in results(collector) if r.request_id == 9] == ["undeliverable"]

    meter.set_drop_rate(1.0, "rx")  # the CONFIG never reaches the meter
    publish(broker, topic, mqtt.json_encoder.encode(mqtt.ConfigRequest(request_id=10, i_gain=97_000)))
    wait_for(lambda: any(r.request_id == 10 for r in results(collector)), 10, what="result 10")
    assert [r.status for r in results(collector) if r.request_id == 10] == ["timeout"]
    meter.set_drop_rate(0.0, "rx")

    publish(broker, topic, b'{"request_id": "nope"}')
    wait_for(lambda: gw.status()["errors"].get("config_bad_request", 0) == 1, 10, what="bad request counted")


def test_gateway_restart_does_not_reforward_readings_whose_ack_was_lost(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    """ACKs are lost, so the meter keeps everything and resends it (go-back-N, and after the restarted
    gateway's SYNC); the gateway recognises the resends by the (device, boot, seq) progress it committed — also
    after a restart — and forwards each reading once."""
    meter = sim.add_meter(report_period_ms=PERIOD_MS, queue_capacity=256)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    wait_for(lambda: collector.count() >= 10, 10, what="first readings")
    meter.set_drop_rate(1.0, "rx")
    wait_for(lambda: gw.counter("duplicates") > 20, 15, what="the meter's resends")

    def held_and_forwarded() -> int:
        """Readings the meter still holds that the gateway has already forwarded (committed, then published).
        What the meter holds is not enough: the readings of the last moments before the gateway stopped (longer
        on a loaded machine) never reached it, and are new, not resends, to the restarted one."""
        keys = {(meter.device, boot, seq) for boot, seq in meter.truth().unacked}
        return len(keys & collector.keys(meter.device))

    # ACKs never arrive, so what the meter holds only grows (up to its 256 slots): wait for enough of it.
    wait_for(lambda: held_and_forwarded() > 40, 30, what="more than 40 forwarded readings held by the meter")
    wait_for(lambda: gw.status()["queue"]["rows"] == 0, 10, what="queue drained")
    gw.stop()
    resent = held_and_forwarded()
    meter.set_drop_rate(0.0, "rx")
    gw.start()
    wait_for(lambda: gw.counter("duplicates") >= resent, 15, what="resends after the restart's SYNC")
    wait_for(lambda: gw.status()["queue"]["rows"] == 0, 10, what="queue drained")
    check_delivery([meter], collector, gw, wait_for)
    assert collector.duplicates == 0


def test_retained_status_online_then_offline_and_last_will_on_kill(
    sim: MeterRunner, broker: MosquittoService, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])

    def last_status() -> mqtt.GatewayStatus | None:
        payloads = collector.topic_payloads("/status")
        return mqtt.status_decoder.decode(payloads[-1]) if payloads else None

    gw.start()
    wait_for(lambda: (s := last_status()) is not None and s.online, 10, what="online")
    gw.stop()
    wait_for(lambda: (s := last_status()) is not None and not s.online, 10, what="offline on clean stop")
    gw.start()
    wait_for(lambda: (s := last_status()) is not None and s.online, 10, what="online again")
    gw.kill9()  # keepalive 10 s: the broker publishes the will after 1.5 x keepalive at most
    wait_for(lambda: (s := last_status()) is not None and not s.online, 20, what="last will")


def test_status_port_taken_costs_the_page_not_the_readings(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    """Another process listens on the status page's port (a stale gateway, another service): the gateway says so
    and keeps forwarding readings. It used to stop at start-up, the failed bind's clean-up raising past the
    fallback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sim.add_meter(report_period_ms=PERIOD_MS, status_interval_ms=500)
        collector = collector_factory(unique_id)
        gw = gateway_factory(unique_id, [str(sim.link_dir / "*")], status={"port": port})
        gw.start(wait=False)
        wait_for(lambda: collector.count() >= 20, 15, what=lambda: f"readings without the page:\n{gw.log_tail()}")
        assert gw.proc is not None and gw.proc.poll() is None, gw.log_tail()
        assert f"status page disabled: cannot listen on 127.0.0.1:{port}" in gw.log_tail(400)


def _get(url: str, auth: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def test_status_page_html_json_metrics_and_password(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    meter = sim.add_meter(report_period_ms=PERIOD_MS, queue_capacity=256)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")], status={"password": "olá-senha", "username": "cds"})
    gw.start(wait=False)

    def page_code() -> int:
        try:
            return _get_code(f"http://127.0.0.1:{gw.bound_port()}/status.json")
        except OSError:  # the gateway has not logged its port yet
            return 0

    wait_for(lambda: page_code() == 401, 15, what="page up, password required")
    base = lambda: f"http://127.0.0.1:{gw.status_port}"  # noqa: E731
    wait_for(lambda: collector.count() >= 20, 10, what="readings")
    code, ctype, body = _get(base() + "/status.json", "cds:olá-senha")
    assert code == 200 and ctype == "application/json"
    data = json.loads(body)
    (m,) = data["meters"]
    assert m["device"] == meter.device and m["link"] == "up" and m["readings"] >= 20
    assert m["last_reading"]["vrms"] > 100 and data["broker"]["state"] == "connected"
    assert data["queue"]["policy"] == "drop-oldest" and data["counters"]["readings_committed"] >= 20

    code, ctype, html = _get(base() + "/", "cds:olá-senha")
    assert code == 200 and ctype.startswith("text/html")
    for label in ("Medidores", "Fila local", "Potência ativa (W)", "Leitura mais antiga não enviada",
                  "Erros por tipo", meter.device, 'http-equiv="refresh"', 'lang="pt-BR"'):  # fmt: skip
        assert label in html, label

    code, ctype, metrics = _get(base() + "/metrics", "cds:olá-senha")
    assert code == 200 and ctype.startswith("text/plain")
    assert "cds_gateway_readings_committed_total" in metrics
    assert f'cds_gateway_link_up{{port="{sim.link_dir}/ttyAICSS-{meter.device}"}} 1.0' in metrics
    assert 'cds_gateway_readings_lost_total{reason="dropped_full"} 0.0' in metrics
    assert "cds_gateway_queue_oldest_age_seconds" in metrics

    assert _get(base() + "/", "cds:wrong")[0] == 401
    req = urllib.request.Request(base() + "/status.json", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code in (401, 405)


def _get_code(url: str) -> int:
    try:
        return _get(url)[0]
    except OSError:
        return 0


def test_monitor_prints_frames_and_acks_only_when_asked(sim: MeterRunner, wait_for: Callable[..., Any]) -> None:
    # What the meter says between the monitor opening the port and its SYNC arriving comes before the HELLO: a
    # reading per period and, when its resend timer fires in that gap, its whole unacknowledged queue. The
    # firmware's 16-reading ring bounds that burst, so 40 frames at 100 ms hold the HELLO unless the monitor
    # stalls for over 2 s between open() and write() (with 256 held readings and 12 frames, one resend was enough).
    meter = sim.add_meter(report_period_ms=100, queue_capacity=16)
    cmd = [sys.executable, "-m", "gateway", "monitor", str(meter.link_path), "--count", "40", "--duration", "20"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "SYNC sent" in out.stdout and f"HELLO   device={meter.device}" in out.stdout, out.stdout
    assert "STATUS  oldest=" in out.stdout and "READING seq=" in out.stdout
    assert meter.truth().acked.get(1, 0) == 0
    out = subprocess.run([*cmd, "--ack"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"HELLO   device={meter.device}" in out.stdout, out.stdout
    # the monitor may exit right after writing its ACKs: the simulator reads them when its thread next runs
    wait_for(lambda: meter.truth().acked.get(1, 0) > 0, 10, what="the monitor's ACKs at the meter")


def test_monitor_reports_a_missing_port() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "monitor", "/nonexistent/tty"], cwd=REPO,
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 2 and "cannot open" in out.stderr
