"""The bridge on a real Mosquitto with the shipped security (dynamic security, users from ``broker-users``):
Home Assistant's user sees discovery, states and availability of its own site and nothing else, the bridge
re-publishes after a restart and Home Assistant's birth, and hostile input never stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from backend.homeassistant.bridge import HomeAssistantBridge
from devstack.processes import HOST, free_port
from protocol import homeassistant as ha
from protocol import mqtt
from protocol.mqtt import DeviceInfo, GatewayStatus, Reading, ReadingBatch
from tests.backend.secured_broker import Probe
from tests.homeassistant.conftest import HaBroker, gateway, home_assistant, now_ms

REPO = Path(__file__).resolve().parents[2]
NOT_AUTHORIZED = 0x87
DEV = "a1c5500000000001"
ROOT = ha.DEFAULT_DISCOVERY_ROOT


def reading(seq: int, energy_mwh: int, *, p: float = 410.5, export: int = 0) -> Reading:
    return Reading(device=DEV, boot=1, seq=seq, ts=now_ms() - 1000 + seq, vrms=127.1, irms=3.2, p=p, s=430.0,
                   pf=0.95, freq=60.0, energy_mwh=energy_mwh, energy_export_mwh=export)


def send(gw: Probe, hb: HaBroker, *readings: Reading) -> None:
    gw.publish(mqtt.readings_topic(hb.site, "gw1"),
               mqtt.json_encoder.encode(ReadingBatch(site=hb.site, gateway="gw1", readings=list(readings))))


def announce(gw: Probe, hb: HaBroker) -> None:
    """What a gateway publishes when it connects and a meter says HELLO (both retained)."""
    gw.publish(mqtt.status_topic(hb.site, "gw1"),
               mqtt.json_encoder.encode(GatewayStatus(online=True, gateway="gw1", site=hb.site)), retain=True)
    gw.publish(mqtt.device_topic(hb.site, "gw1", DEV), mqtt.json_encoder.encode(
        DeviceInfo(device=DEV, firmware="1.4.0", hw_rev=2, boot=1, report_period_ms=1000, seen_at=now_ms())),
        retain=True)


def follow(ha_client: Probe, hb: HaBroker) -> None:
    """Subscribe to what the configs point at, as Home Assistant does after discovery."""
    assert ha_client.subscribe(ha.site_state_filter(hb.site), mqtt.status_topic(hb.site, "gw1"),
                               mqtt.device_topic(hb.site, "gw1", DEV)) == [1, 1, 1]


def config_topics(c: Probe) -> set[str]:
    return {t for t, _, _ in c.received() if t.endswith("/config")}


def state(c: Probe, hb: HaBroker) -> dict[str, Any] | None:
    payload = c.last(ha.state_topic(hb.site, DEV))
    return json.loads(payload) if payload else None


def available(c: Probe, hb: HaBroker) -> bool:
    """Home Assistant's verdict with ``availability_mode: all``, from the last payload of each topic."""
    config = json.loads(c.last(ha.config_topic(ROOT, hb.site, DEV, "energy")) or b"{}")
    verdicts = []
    for a in config["availability"]:
        payload = c.last(a["topic"])
        if payload is None:
            return False
        if a.get("value_template"):
            doc = json.loads(payload)
            value = (ha.ONLINE if doc["online"] else ha.OFFLINE) if "online" in doc else (
                ha.ONLINE if doc["link"] == "up" else ha.OFFLINE)
        else:
            value = payload.decode()
        verdicts.append(value == a["payload_available"])
    return all(verdicts)


def test_home_assistant_sees_retained_discovery_then_state_updates(
        ha_broker: HaBroker, clients: Callable[..., Probe], bridges: Callable[..., HomeAssistantBridge],
        wait_for: Any) -> None:
    hb = ha_broker
    gw = gateway(clients, hb)
    announce(gw, hb)
    bridges(hb)
    early = home_assistant(clients, hb)  # until the bridge's configs are on the broker
    wait_for(lambda: len(config_topics(early)) == 5, what="the bridge's configs")
    early.close()
    # Home Assistant starts after the bridge published: the configs must be retained
    ha_client = home_assistant(clients, hb)
    wait_for(lambda: len(config_topics(ha_client)) == 5, what=lambda: f"5 configs, got {config_topics(ha_client)}")
    assert all(retain for t, _, retain in ha_client.received() if t.endswith("/config"))
    config = json.loads(ha_client.last(ha.config_topic(ROOT, hb.site, DEV, "power")) or b"")
    assert config["device"]["sw_version"] == "1.4.0" and config["state_topic"] == ha.state_topic(hb.site, DEV)
    follow(ha_client, hb)
    wait_for(lambda: available(ha_client, hb), what="the meter available")

    send(gw, hb, reading(1, 123_456_789, export=10))
    first = wait_for(lambda: state(ha_client, hb), what="a state")
    assert first["energy"] == 123.456789 and first["power"] == 410.5
    # the first exported energy adds the export sensor
    wait_for(lambda: ha.config_topic(ROOT, hb.site, DEV, "energy_export") in config_topics(ha_client))
    send(gw, hb, reading(2, 123_466_789, p=900.0))
    last = wait_for(lambda: (s := state(ha_client, hb)) and s["power"] == 900.0 and s,
                    what=lambda: f"the second state, last {state(ha_client, hb)}")
    assert last["energy"] == 123.466789


def test_meter_unavailable_when_the_gateways_will_fires_and_when_the_bridge_stops(
        ha_broker: HaBroker, clients: Callable[..., Probe], bridges: Callable[..., HomeAssistantBridge],
        wait_for: Any) -> None:
    hb = ha_broker
    gw = gateway(clients, hb)
    announce(gw, hb)
    bridge = bridges(hb)
    ha_client = home_assistant(clients, hb)
    wait_for(lambda: len(config_topics(ha_client)) == 5)
    follow(ha_client, hb)
    wait_for(lambda: available(ha_client, hb), what="available")

    gw.drop_connection()  # no DISCONNECT: the broker publishes the gateway's last will
    wait_for(lambda: not available(ha_client, hb), what="unavailable after the gateway's will")
    assert json.loads(ha_client.last(mqtt.status_topic(hb.site, "gw1")) or b"")["online"] is False

    gw2 = gateway(clients, hb)
    announce(gw2, hb)
    wait_for(lambda: available(ha_client, hb), what="available again")
    bridge.stop()
    wait_for(lambda: ha_client.last(ha.bridge_status_topic(hb.site)) == b"offline")
    assert not available(ha_client, hb)


def test_home_assistant_user_reads_only_its_site_and_writes_nothing_but_its_birth(
        ha_broker: HaBroker, clients: Callable[..., Probe], wait_for: Any) -> None:
    hb = ha_broker
    c = clients(hb.broker, ha.ha_username(hb.site), hb.password(ha.ha_username(hb.site)), ha.ha_client_id(hb.site))
    other, o = hb.other_site, hb.other_site
    # Home Assistant's default discovery subscriptions are wider than its ACL: dynamic security refuses them
    # (SUBACK 0x87) rather than narrowing them, which is why its discovery prefix must be homeassistant/<site>
    assert c.subscribe("homeassistant/#", "homeassistant/+/+/config", "homeassistant/+/+/+/config") == [
        NOT_AUTHORIZED] * 3
    assert c.subscribe(f"homeassistant/{other}/+/+/config", f"cds-ha/v1/{o}/#", f"cds/v1/{o}/+/status",
                       f"cds/v1/{hb.site}/+/up/readings", "cds/v1/#", f"$share/cds-backend/cds/v1/{hb.site}/+/status",
                       f"$share/cds-backend/{mqtt.READINGS_FILTER}") == [NOT_AUTHORIZED] * 7
    assert c.subscribe(f"homeassistant/{hb.site}/+/+/config", f"cds/v1/{hb.site}/+/status") == [1, 1]
    mids = [c.publish(ha.config_topic(ROOT, hb.site, DEV, "power"), b"{}"),
            c.publish(mqtt.readings_topic(hb.site, "gw1"), b"{}"), c.publish(ha.state_topic(hb.site, DEV), b"{}"),
            c.publish(ha.birth_topic(ROOT, hb.site), b"online")]
    codes = pubacks(c, mids, wait_for)
    assert codes[:3] == [NOT_AUTHORIZED] * 3 and codes[3] in (0x00, 0x10)
    # bound to its client id: the same password under another id (a backend replica's, say) is refused
    stolen = clients(hb.broker, ha.ha_username(hb.site), hb.password(ha.ha_username(hb.site)), "cds-backend-x")
    assert stolen.refused


def test_bridge_user_cannot_publish_readings_nor_join_the_share_group(
        ha_broker: HaBroker, clients: Callable[..., Probe], wait_for: Any) -> None:
    hb = ha_broker
    user = ha.bridge_username(hb.site)
    c = clients(hb.broker, user, hb.password(user), ha.bridge_client_id(hb.site))
    assert c.subscribe(f"$share/cds-backend/cds/v1/{hb.site}/+/up/readings", mqtt.READINGS_FILTER,
                       f"cds/v1/{hb.other_site}/+/up/readings") == [NOT_AUTHORIZED] * 3
    mids = [c.publish(mqtt.readings_topic(hb.site, "gw1"), b"{}"), c.publish(mqtt.status_topic(hb.site, "gw1"), b"{}"),
            c.publish(ha.config_topic(ROOT, hb.other_site, DEV, "power"), b"{}"),
            c.publish(ha.state_topic(hb.site, DEV), b"{}")]
    codes = pubacks(c, mids, wait_for)
    assert codes[:3] == [NOT_AUTHORIZED] * 3 and codes[3] in (0x00, 0x10)


def pubacks(c: Probe, mids: list[int], wait_for: Any) -> list[int]:
    wait_for(lambda: all(c.puback(mid) is not None for mid in mids), what="every PUBACK")
    return [c.puback(mid) or 0 for mid in mids]


def test_restart_and_home_assistant_birth_republish_discovery(
        ha_broker: HaBroker, clients: Callable[..., Probe], bridges: Callable[..., HomeAssistantBridge],
        wait_for: Any) -> None:
    hb = ha_broker
    gw = gateway(clients, hb)
    announce(gw, hb)
    ha_client = home_assistant(clients, hb)
    bridge = bridges(hb)
    wait_for(lambda: len(config_topics(ha_client)) == 5)
    bridge.stop()
    seen = len(ha_client.received())
    bridges(hb)  # a new process knows nothing: the retained DeviceInfo tells it the meter again
    wait_for(lambda: len({t for t, _, _ in ha_client.received()[seen:] if t.endswith("/config")}) == 5,
             what="configs published again after the restart")
    seen = len(ha_client.received())
    ha_client.publish(ha.birth_topic(ROOT, hb.site), b"online")  # Home Assistant (re)started
    wait_for(lambda: len({t for t, _, _ in ha_client.received()[seen:] if t.endswith("/config")}) == 5,
             what="configs published again after Home Assistant's birth")


def test_hostile_readings_are_counted_and_the_bridge_keeps_going(
        ha_broker: HaBroker, clients: Callable[..., Probe], bridges: Callable[..., HomeAssistantBridge],
        wait_for: Any) -> None:
    hb = ha_broker
    gw = gateway(clients, hb)
    bridge = bridges(hb)
    ha_client = home_assistant(clients, hb)
    follow(ha_client, hb)
    topic = mqtt.readings_topic(hb.site, "gw1")
    for payload in (b"\xff\xfe", b"{", b'{"site": 1}', json.dumps({"site": hb.site, "gateway": "gw1", "readings": [
            {"device": DEV, "boot": 1, "seq": "x"}]}).encode(), b"[" * 10000):
        gw.publish(topic, payload)
    send(gw, hb, reading(1, 42_000_000))
    wait_for(lambda: state(ha_client, hb), what="the valid reading's state")
    assert bridge.mirror.stats.rejected == {"invalid": 5}
    assert bridge.connected.is_set()


def _scrape(port: int) -> dict[str, float]:
    """The bridge's /metrics as {sample with labels: value}; empty while it does not answer yet."""
    try:
        text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("cds_homeassistant_")}


def test_cli_runs_the_bridge_until_sigterm_and_says_offline(
        ha_broker: HaBroker, clients: Callable[..., Probe], tmp_path: Path, wait_for: Any) -> None:
    """The real process: online, its counters on /metrics (a hostile batch counted, a good reading taken),
    offline after SIGTERM."""
    hb = ha_broker
    watcher = home_assistant(clients, hb)
    follow(watcher, hb)
    password_file = hb.passwords_dir / ha.bridge_username(hb.site)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    env.update(BACKEND_MQTT_HOST=hb.broker.host, BACKEND_MQTT_PORT=str(hb.broker.port),
               BACKEND_HOMEASSISTANT_PASSWORD_FILE=str(password_file), BACKEND_LOG_LEVEL="INFO",
               BACKEND_HOST=HOST, BACKEND_HOMEASSISTANT_METRICS_PORT=str(port))
    log = tmp_path / "bridge.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "backend", "homeassistant", "--site", hb.site], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: watcher.last(ha.bridge_status_topic(hb.site)) == b"online", timeout=30,
                 what=lambda: f"the bridge online; log: {log.read_text()[-2000:]}")
        gw = gateway(clients, hb)
        gw.publish(mqtt.readings_topic(hb.site, "gw1"), b"{")
        send(gw, hb, reading(1, 42_000_000))
        site = f'site="{hb.site}"'
        wait_for(lambda: _scrape(port).get(f"cds_homeassistant_readings_total{{{site}}}") == 1, timeout=30,
                 what=lambda: f"the reading counted: {_scrape(port)}")
        figures = _scrape(port)
        assert figures.get(f'cds_homeassistant_rejected_total{{reason="invalid",{site}}}') == 1, figures
        assert figures["cds_homeassistant_connected"] == 1 and figures["cds_homeassistant_meters"] == 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()[-2000:]
    wait_for(lambda: watcher.last(ha.bridge_status_topic(hb.site)) == b"offline")
