"""The shipped Mosquitto ACL (deploy/mosquitto/acl) loaded by a real broker with a password file made by
mosquitto_passwd: gateways are confined to their prefix, the backend works through it."""

from __future__ import annotations

import subprocess
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
from tests.backend.conftest import REPO, batch_bytes, count_points, device_id, make_settings, reading

ACL = REPO / "deploy" / "mosquitto" / "acl"


def _passwd(path: Path, users: dict[str, str]) -> Path:
    path.touch(mode=0o600)
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True, capture_output=True)
    return path


@pytest.mark.asyncio
async def test_gateway_outside_its_prefix_refused_by_acl_broker(
    mosquitto_factory: Any, influx: Any, unique_id: str, tmp_path: Path, publisher_factory: Any,
    wait_for_async: Any,
) -> None:
    site = unique_id
    gw_user, gw_pass = f"{site}/gw1", "gw1-secret"
    passwd = _passwd(tmp_path / "passwd", {"backend": "backend-secret", gw_user: gw_pass,
                                           f"{site}/gw2": "gw2-secret"})
    broker = mosquitto_factory(acl_file=ACL, password_file=passwd, allow_anonymous=False)
    settings = make_settings(broker, influx, unique_id, mqtt_username="backend", mqtt_password="backend-secret")
    app = create_app(settings)
    async with AsyncTestClient(app):
        assert await app.state.services.ingest.bridge.wait_connected(10)
        gw = publisher_factory(broker, username=gw_user, password=gw_pass)
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
        # Mosquitto 2.0 grants every SUBACK and applies the read ACL when delivering: gw1 subscribed to its own
        # downlink, gw2's downlink and everyone's uplink must only ever receive its own downlink.
        got = _Recorder(broker, gw_user, gw_pass, [f"cds/v1/{site}/gw1/down/#", f"cds/v1/{site}/gw2/down/#",
                                                   "cds/v1/+/+/up/readings"])
        try:
            gw2 = publisher_factory(broker, username=f"{site}/gw2", password="gw2-secret")
            gw2.publish(mqtt.readings_topic(site, "gw2"), forged_gw)
            gw2.wait_all_acked()
            backend = publisher_factory(broker, username="backend", password="backend-secret")
            backend.publish(mqtt.config_topic(site, "gw2", device_id(2)), b"{}")
            backend.publish(mqtt.config_topic(site, "gw1", device_id(1)), b"{}")
            backend.wait_all_acked()
            assert gw2.refused == [] and backend.refused == []
            await wait_for_async(lambda: got.topics, timeout=10, what="gw1 receives its own downlink")
            assert got.topics == [mqtt.config_topic(site, "gw1", device_id(1))]
        finally:
            got.close()


class _Recorder:
    def __init__(self, broker: Any, user: str, password: str, filters: list[str]) -> None:
        self.topics: list[str] = []
        self._ready = threading.Event()
        self._c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"rec-{time.monotonic_ns()}",
                              protocol=paho.MQTTv5)
        self._c.username_pw_set(user, password)
        self._c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([(t, 1) for t in filters])
        self._c.on_subscribe = lambda cl, u, mid, rcs, p: self._ready.set()
        self._c.on_message = lambda cl, u, m: self.topics.append(m.topic)
        self._c.connect(broker.host, broker.port)
        self._c.loop_start()
        assert self._ready.wait(10), "no SUBACK"

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


def test_wrong_password_refused_by_acl_broker(mosquitto_factory: Any, tmp_path: Path, publisher_factory: Any) -> None:
    passwd = _passwd(tmp_path / "passwd", {"s1/gw1": "right"})
    broker = mosquitto_factory(acl_file=ACL, password_file=passwd, allow_anonymous=False)
    pub = publisher_factory(broker, username="s1/gw1", password="wrong")
    assert pub.connect_reason is not None and pub.connect_reason.is_failure
