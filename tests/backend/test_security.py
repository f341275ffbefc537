"""The shipped broker security (the dynamic-security plugin, deploy/mosquitto/conf.d/security.conf) on a real
broker with users made by ``python -m backend broker-users``: gateways are confined to their prefix, the backend
works through it. The share-group attack and the operator's command: tests/backend/test_broker_security.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from litestar.testing import AsyncTestClient
from paho.mqtt.enums import CallbackAPIVersion

from backend.api.app import create_app
from protocol import mqtt
from tests.backend.conftest import batch_bytes, count_points, device_id, make_settings, reading
from tests.backend.secured_broker import BACKEND_USER, gateway_client_id, start_secured_broker


@pytest.mark.asyncio
async def test_gateway_outside_its_prefix_refused_by_acl_broker(
    mosquitto_factory: Any, influx: Any, unique_id: str, tmp_path: Path, publisher_factory: Any,
    wait_for_async: Any,
) -> None:
    site = unique_id
    secured = start_secured_broker(mosquitto_factory, tmp_path / "users", f"g-{unique_id}",
                                   [(site, "gw1"), (site, "gw2")])
    broker = secured.broker
    gw_user, gw_pass = f"{site}/gw1", secured.password(f"{site}/gw1")
    gw2_pass = secured.password(f"{site}/gw2")
    backend_pass = secured.password(BACKEND_USER)
    settings = make_settings(broker, influx, unique_id, mqtt_username=BACKEND_USER, mqtt_password=backend_pass)
    app = create_app(settings)
    async with AsyncTestClient(app):
        assert await app.state.services.ingest.bridge.wait_connected(10)
        gw = publisher_factory(broker, client_id=gateway_client_id(site, "gw1"), username=gw_user, password=gw_pass)
        now = int(time.time() * 1000)
        own = batch_bytes(site, "gw1", [reading(device_id(1), 1, now - 1000)])
        forged_gw = batch_bytes(site, "gw2", [reading(device_id(2), 1, now - 1000)])
        forged_site = batch_bytes("outro", "gw1", [reading(device_id(3), 1, now - 1000)])
        gw.publish(mqtt.readings_topic(site, "gw2"), forged_gw)        # another gateway of the same site
        gw.publish(mqtt.readings_topic("outro", "gw1"), forged_site)   # another site
        gw.publish(f"{mqtt.DEAD_LETTER_ROOT}/x", b"{}")                 # backend-only topic
        gw.publish(mqtt.readings_topic(site, "gw1"), own)
        gw.wait_all_acked()
        assert sorted(code for _, code in gw.refused) == [0x87, 0x87, 0x87]  # MQTT 5 "not authorized"
        await wait_for_async(lambda: count_points(influx, unique_id) >= 1, timeout=10, what="own batch stored")
        await wait_for_async(lambda: app.state.services.ingest.unacked == 0, timeout=10, what="all acked")
        rows = influx.rows(f'SELECT seq FROM "{unique_id}"."raw"."readings" GROUP BY device', db=unique_id)
        assert {r["device"] for r in rows} == {device_id(1)}
        # The dynamic-security plugin refuses the SUBSCRIBEs outside the prefix (SUBACK 0x87) and the read ACL
        # still applies on delivery: gw1 subscribed to its own downlink, gw2's downlink and everyone's uplink
        # must only ever receive its own downlink.
        got = _Recorder(broker, gw_user, gw_pass, gateway_client_id(site, "gw1"),
                        [f"cds/v1/{site}/gw1/down/#", f"cds/v1/{site}/gw2/down/#", "cds/v1/+/+/up/readings"])
        try:
            assert got.subacks == [0x01, 0x87, 0x87]
            gw2 = publisher_factory(broker, client_id=gateway_client_id(site, "gw2"), username=f"{site}/gw2",
                                    password=gw2_pass)
            gw2.publish(mqtt.readings_topic(site, "gw2"), forged_gw)
            gw2.wait_all_acked()
            backend = publisher_factory(broker, username=BACKEND_USER, password=backend_pass)
            backend.publish(mqtt.config_topic(site, "gw2", device_id(2)), b"{}")
            backend.publish(mqtt.config_topic(site, "gw1", device_id(1)), b"{}")
            backend.wait_all_acked()
            assert gw2.refused == [] and backend.refused == []
            await wait_for_async(lambda: got.topics, timeout=10, what="gw1 receives its own downlink")
            assert got.topics == [mqtt.config_topic(site, "gw1", device_id(1))]
        finally:
            got.close()


class _Recorder:
    def __init__(self, broker: Any, user: str, password: str, client_id: str, filters: list[str]) -> None:
        self.topics: list[str] = []
        self.subacks: list[int] = []
        self._ready = threading.Event()
        self._c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self._c.username_pw_set(user, password)
        self._c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([(t, 1) for t in filters])
        self._c.on_subscribe = self._on_subscribe
        self._c.on_message = lambda cl, u, m: self.topics.append(m.topic)
        self._c.connect(broker.host, broker.port)
        self._c.loop_start()
        assert self._ready.wait(10), "no SUBACK"

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self.subacks = [r.value for r in reasons]
        self._ready.set()

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


def test_wrong_password_refused_by_acl_broker(mosquitto_factory: Any, tmp_path: Path, publisher_factory: Any) -> None:
    secured = start_secured_broker(mosquitto_factory, tmp_path / "users", "cds-backend", [("s1", "gw1")])
    assert secured.password("s1/gw1") != "wrong"
    pub = publisher_factory(secured.broker, client_id=gateway_client_id("s1", "gw1"), username="s1/gw1",
                            password="wrong")
    assert pub.connect_reason is not None and pub.connect_reason.is_failure
