"""The ``notifier`` broker role (backend/ingest/broker_users.py, ``notifier_acls``) on a real Mosquitto with the
dynamic-security plugin and the file ``python -m backend broker-users`` writes: the notifier's user subscribes to
``cds/v1/+/alerts`` and receives the retained lists, and nothing else — no readings, no share group, no publishing,
so a stolen notifier password can neither read meters nor forge or wipe an alert list."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backend.ingest.bridge import Incoming, MqttBridge
from backend.ingest.broker_provisioning import broker_users
from backend.notify.notifier import ALERTS_FILTER, mqtt_settings
from backend.settings import Settings
from devstack.mosquitto import MosquittoService
from protocol import mqtt
from tests.backend.conftest import Publisher
from tests.backend.secured_broker import Probe
from tests.notify.conftest import T0, alert_list

pytestmark = [pytest.mark.services, pytest.mark.asyncio]
GRANTED_QOS1 = 0x01
NOT_AUTHORIZED = 0x87


async def test_notifier_user_reads_alert_lists_and_nothing_else(
        mosquitto_factory: Callable[..., MosquittoService], unique_id: str, tmp_path: Path,
        wait_for: Any, wait_for_async: Any) -> None:
    site, group = unique_id.replace("_", "-"), f"g-{unique_id}"
    folder = tmp_path / "users"
    folder.mkdir()
    users = folder / "gateways.toml"
    users.write_text(f'passwords_dir = "passwords"\nnotifier_username = "notifier"\n\n[[gateways]]\n'
                     f'site = "{site}"\ngateway = "gw1"\n', encoding="utf-8")
    dynsec = folder / "dynamic-security.json"
    broker_users(users, settings=Settings(mqtt_username="backend", mqtt_share_group=group), out=dynsec)
    broker = mosquitto_factory(dynamic_security_file=dynsec, allow_anonymous=False)

    def password(name: str) -> str:
        return (folder / "passwords" / name).read_text(encoding="utf-8").strip()

    topic, original = f"cds/v1/{site}/alerts", alert_list(site, T0, ("00000000000000a1", "offline", "critico"))
    backend = Publisher(broker, username="backend", password=password("backend"))
    backend.publish(topic, original, retain=True)
    backend.wait_all_acked()
    backend.close()
    assert backend.refused == []

    # The notifier's own connection, as the process makes it, gets the retained list.
    got: list[Incoming] = []
    settings = Settings(mqtt_host=broker.host, mqtt_port=broker.port, notify_mqtt_username="notifier",
                        notify_mqtt_password=password("notifier"), notify_mqtt_client_id=f"nt-{unique_id}")
    bridge = MqttBridge(mqtt_settings(settings), got.append, [(ALERTS_FILTER, 1)])
    await bridge.start()
    try:
        assert await bridge.wait_connected(30), bridge.last_error
        (msg,) = await wait_for_async(lambda: got, timeout=30,
                                      what="the retained list through the notifier's subscription")
        assert (msg.topic, msg.payload, msg.retain) == (topic, original, True)
        bridge.ack(msg)
    finally:
        await bridge.stop()

    probe = Probe(broker, "notifier", password("notifier"), f"nt-probe-{unique_id}")
    try:
        assert not probe.refused
        assert probe.subscribe(ALERTS_FILTER) == [GRANTED_QOS1]
        wait_for(lambda: probe.topics() == [topic], timeout=30, what="the retained list on the probe")
        refused = [mqtt.READINGS_FILTER, f"cds/v1/{site}/gw1/up/readings", f"$share/{group}/{mqtt.READINGS_FILTER}",
                   f"$share/{group}/{ALERTS_FILTER}", f"$share/g-{unique_id}-x/{ALERTS_FILTER}",
                   f"cds/v1/{site}/gw1/status", "cds/v1/#", "#"]
        assert probe.subscribe(*refused) == [NOT_AUTHORIZED] * len(refused)
        denied = [probe.publish(t, b"") for t in (topic, f"cds/v1/{site}/gw1/down/config",
                                                   f"cds/v1/{site}/gw1/up/readings", "cds/v1/other/alerts")]
        wait_for(lambda: all(probe.puback(m) is not None for m in denied), timeout=30, what="every PUBACK")
        assert [probe.puback(m) for m in denied] == [NOT_AUTHORIZED] * len(denied)
    finally:
        probe.close()

    # The empty retained publish above was refused: the list is still there for the next subscriber.
    late: list[Incoming] = []
    bridge = MqttBridge(mqtt_settings(settings), late.append, [(ALERTS_FILTER, 1)])
    await bridge.start()
    try:
        (again,) = await wait_for_async(lambda: late, timeout=30, what="the retained list, untouched")
        assert again.payload == original
        bridge.ack(again)
    finally:
        await bridge.stop()
        backend = Publisher(broker, username="backend", password=password("backend"))
        backend.publish(topic, b"", retain=True)
        backend.wait_all_acked()
        backend.close()
