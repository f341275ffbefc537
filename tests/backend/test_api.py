"""REST API with the real app, broker and InfluxDB: auth and roles, readings, HTTP ingest, status, config."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import msgspec
import paho.mqtt.client as paho
import pytest
from litestar.testing import AsyncTestClient
from paho.mqtt.enums import CallbackAPIVersion

from backend.api.app import create_app
from backend.api.auth import hash_password, verify_password
from backend.errors import ConfigError
from backend.settings import Settings, User
from protocol import mqtt
from protocol.mqtt import ConfigResult, DeviceInfo, GatewayStatus
from tests.backend.conftest import REPO, batch_bytes, count_points, device_id, make_settings, reading, token


@pytest.mark.asyncio
async def test_tokens_for_configured_users_and_roles_enforced(broker: Any, influx: Any, unique_id: str) -> None:
    users = (User("ana", "admin", hash_password("s3nha-forte")), User("vi", "viewer", hash_password("olhar")))
    app = create_app(make_settings(broker, influx, unique_id, users=users, ingest_enabled=False))
    async with AsyncTestClient(app) as client:
        for path in ("/health", "/ready", "/metrics", "/docs/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
        missing = await client.get("/api/v1/nada", headers={"Authorization": "Bearer x"})
        assert missing.status_code == 404 and missing.json()["detail"] == "Recurso não encontrado."
        bad = await client.post("/api/v1/auth/token", json={"username": "ana", "password": "errada"})
        assert bad.status_code == 401 and bad.json()["detail"] == "Usuário ou senha incorretos."
        unknown = await client.post("/api/v1/auth/token", json={"username": "zé", "password": "x"})
        assert unknown.status_code == 401
        ok = await client.post("/api/v1/auth/token", json={"username": "vi", "password": "olhar"})
        assert ok.status_code == 200 and ok.json()["role"] == "viewer"
        viewer = {"Authorization": f"Bearer {ok.json()['access_token']}"}
        no_token = await client.get("/api/v1/devices")
        assert no_token.status_code == 401 and "Bearer" in no_token.json()["detail"]
        forged = await client.get("/api/v1/devices", headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."})
        assert forged.status_code == 401
        assert (await client.get("/api/v1/devices", headers=viewer)).status_code == 200
        denied = await client.put("/api/v1/aicss/config", headers=viewer,
                                  json={"device": device_id(1), "report_period_ms": 1000})
        assert denied.status_code == 403 and "operator" in denied.json()["detail"]
        expired = app.state.authenticator.issue("ana", "admin", ttl_s=-10)
        resp = await client.get("/api/v1/devices", headers={"Authorization": f"Bearer {expired}"})
        assert resp.status_code == 401 and "expirado" in resp.json()["detail"]


@pytest.mark.asyncio
async def test_http_ingest_idempotent_and_readings_by_resolution(app_client: Any, influx: Any, unique_id: str,
                                                                 wait_for_async: Any) -> None:
    op = token(app_client, "operator")
    now = int(time.time() * 1000)
    dev = device_id(5)
    body = batch_bytes(unique_id, "gw1", [reading(dev, s, now - 120_000 + s * 1000) for s in range(100)]
                       + [reading(dev, 999, now + 5 * 86_400_000)])
    for _ in range(2):
        resp = await app_client.post("/api/v1/aicss/dados", content=body, headers=op)
        assert resp.status_code == 200, resp.text
        assert resp.json()["accepted"] == 100
        assert [r["reason"] for r in resp.json()["rejected"]] == ["future_timestamp"]
    assert count_points(influx, unique_id) == 100
    assert (await app_client.post("/api/v1/aicss/dados", content=body, headers=token(app_client))).status_code == 403
    garbage = await app_client.post("/api/v1/aicss/dados", content=b'{"site": 1}', headers=op)
    assert garbage.status_code == 400 and "ReadingBatch" in garbage.json()["detail"]
    huge = await app_client.post("/api/v1/aicss/dados", content=b" " * 300_000, headers=op)
    assert huge.status_code == 413

    viewer = token(app_client)
    raw = await app_client.get(f"/api/v1/devices/{dev}/readings", headers=viewer)  # auto, last hour -> raw
    assert raw.status_code == 200 and raw.json()["resolution"] == "raw" and raw.json()["count"] == 100
    assert raw.json()["points"][0]["energy_mwh"] == 1000

    async def minute_total() -> int:
        r = await app_client.get(f"/api/v1/devices/{dev}/readings", params={"resolution": "1m"}, headers=viewer)
        return sum(p["n"] for p in r.json()["points"])

    await wait_for_async(lambda: minute_total(), timeout=15, what="1m rollups")
    await wait_for_async(lambda: _eq(minute_total(), 100), timeout=15, what="1m rollups complete")
    week = await app_client.get(f"/api/v1/devices/{dev}/readings", headers=viewer,
                                params={"start": "2026-01-01T00:00:00Z", "end": "2026-01-05T00:00:00Z"})
    assert week.status_code == 200 and week.json()["resolution"] == "1m"
    year = await app_client.get(f"/api/v1/devices/{dev}/readings", headers=viewer,
                                params={"start": "2025-01-01T00:00:00", "end": "2026-01-01T00:00:00"})
    assert year.json()["resolution"] == "1h"


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "params"), [
    pytest.param("/api/v1/devices/x' OR 1=1 --/readings", {}, id="quote-injection-in-device"),
    pytest.param("/api/v1/devices/00000000000000AA/readings", {}, id="uppercase-device"),
    pytest.param(f"/api/v1/devices/{device_id(1)}/readings", {"resolution": "1s"}, id="bad-resolution"),
    pytest.param(f"/api/v1/devices/{device_id(1)}/readings", {"start": "2026-02-01", "end": "2026-01-01"},
                 id="start-after-end"),
    pytest.param(f"/api/v1/devices/{device_id(1)}/readings", {"start": "now(); DROP DATABASE x"}, id="bad-time"),
    pytest.param("/api/v1/devices", {"site": 'a" OR device =~ /.*/'}, id="injection-in-site"),
    pytest.param("/api/v1/gateways", {"site": "ção"}, id="unicode-site"),
])
async def test_hostile_query_parameters_rejected(app_client: Any, path: str, params: dict[str, str]) -> None:
    resp = await app_client.get(path, params=params, headers=token(app_client))
    assert resp.status_code == 400, resp.text
    assert resp.json()["detail"]


@pytest.mark.asyncio
async def test_device_status_from_retained_messages_and_config_downlink(
    app_client: Any, broker: Any, unique_id: str, publisher_factory: Any, wait_for_async: Any,
) -> None:
    site, gw, dev, silent = unique_id, "gw1", device_id(9), device_id(10)
    now = int(time.time() * 1000)
    pub = publisher_factory(broker)
    pub.publish(mqtt.status_topic(site, gw), mqtt.json_encoder.encode(
        GatewayStatus(online=True, gateway=gw, site=site, version="1.2.3", queued=4, ts=now)), retain=True)
    for d in (dev, silent):
        pub.publish(mqtt.device_topic(site, gw, d), mqtt.json_encoder.encode(
            DeviceInfo(device=d, firmware="aicss-0.9", hw_rev=2, boot=17, report_period_ms=1000, seen_at=now)),
            retain=True)
    pub.wait_all_acked()
    viewer = token(app_client)

    async def device(d: str) -> dict[str, Any]:
        r = await app_client.get(f"/api/v1/devices/{d}", headers=viewer)
        return r.json() if r.status_code == 200 else {}

    info = await wait_for_async(lambda: device(dev), timeout=10, what="device known")
    assert info["firmware"] == "aicss-0.9" and info["boot"] == 17 and info["online"] is True
    assert info["site"] == site and info["gateway"] == gw

    async def gateway_with_both_devices() -> list[dict[str, Any]]:
        gws = (await app_client.get("/api/v1/gateways", params={"site": site}, headers=viewer)).json()
        return list(gws) if gws and gws[0]["devices"] == 2 else []

    # the two retained DeviceInfo messages are two deliveries: the first one known says nothing of the second
    gws = await wait_for_async(gateway_with_both_devices, timeout=10, what="both devices under the gateway")
    assert gws[0]["online"] is True and gws[0]["queued"] == 4 and gws[0]["devices"] == 2
    assert (await app_client.get(f"/api/v1/devices/{device_id(99)}", headers=viewer)).status_code == 404

    # a fake gateway applies CONFIG requests for `dev` and answers; `silent` never answers
    answered = threading.Event()

    def on_message(c: Any, u: Any, m: Any) -> None:
        req = mqtt.config_request_decoder.decode(m.payload)
        result = ConfigResult(device=m.topic.rsplit("/", 1)[1], request_id=req.request_id, status="applied",
                              report_period_ms=req.report_period_ms or 0)
        c.publish(mqtt.config_result_topic(site, gw), mqtt.json_encoder.encode(result), qos=1)
        answered.set()

    fake = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fakegw-{unique_id}", protocol=paho.MQTTv5)
    subscribed = threading.Event()
    fake.on_connect = lambda c, u, f, rc, p: c.subscribe(mqtt.config_topic(site, gw, dev), 1)
    fake.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    fake.on_message = on_message
    fake.connect(broker.host, broker.port)
    fake.loop_start()
    try:
        assert subscribed.wait(10)
        op = token(app_client, "operator")
        applied = await app_client.put("/api/v1/aicss/config", headers=op,
                                       json={"device": dev, "report_period_ms": 2000, "timeout_s": 10})
        assert applied.status_code == 200, applied.text
        assert applied.json()["status"] == "applied" and applied.json()["result"]["report_period_ms"] == 2000
        pending = await app_client.put("/api/v1/aicss/config", headers=op,
                                       json={"device": silent, "report_period_ms": 2000, "timeout_s": 0.3})
        assert pending.json()["status"] == "pending" and "Sem resposta" in pending.json()["detail"]
        invalid = await app_client.put("/api/v1/aicss/config", headers=op,
                                       json={"device": dev, "report_period_ms": 10})
        assert invalid.status_code == 400
    finally:
        fake.disconnect()
        fake.loop_stop()
    # the gateway's last will: offline -> its meters are offline
    pub.publish(mqtt.status_topic(site, gw), mqtt.json_encoder.encode(
        GatewayStatus(online=False, gateway=gw, site=site)), retain=True)
    await wait_for_async(lambda: _eq(_online(device(dev)), False), timeout=10, what="device offline")
    status = (await app_client.get("/api/v1/aicss/status", headers=viewer)).json()
    assert status["mqtt_connected"] is True and status["gateways_online"] == 0
    for d in (dev, silent):  # leave no retained state behind
        pub.publish(mqtt.device_topic(site, gw, d), b"", retain=True)
    pub.publish(mqtt.status_topic(site, gw), b"", retain=True)
    pub.wait_all_acked()


async def _online(info: Any) -> Any:
    return (await info).get("online")


def test_settings_from_env_with_secret_files_and_errors(tmp_path: Any) -> None:
    secret = tmp_path / "jwt"
    secret.write_text("a-very-long-secret-value\n")
    users = msgspec.json.encode([{"username": "ana", "role": "operator", "password_hash": hash_password("x")}])
    s = Settings.from_env({"BACKEND_MQTT_PORT": "1884", "BACKEND_INGEST_ENABLED": "false",
                           "BACKEND_JWT_SECRET_FILE": str(secret), "BACKEND_USERS": users.decode(),
                           "BACKEND_RETENTION_RAW": "52w"})
    assert s.mqtt_port == 1884 and s.ingest_enabled is False and s.jwt_secret == "a-very-long-secret-value"
    assert s.users[0].role == "operator" and s.retention_raw == "52w"
    for bad in ({"BACKEND_MQTT_PORT": "abc"}, {"BACKEND_RETENTION_RAW": "30 days; DROP"},
                {"BACKEND_INFLUX_DB": 'cds"; DROP DATABASE x'}, {"BACKEND_USERS": "[{"},
                {"BACKEND_USERS": '[{"username": "a", "role": "root", "password_hash": "x"}]'}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)


def test_hash_password_cli_output_verifies() -> None:
    out = subprocess.run([sys.executable, "-m", "backend", "hash-password", "--stdin"], input="minha senha\n",
                         capture_output=True, text=True, cwd=REPO, check=True).stdout.strip()
    assert out.startswith("scrypt$") and verify_password("minha senha", out)
    assert not verify_password("outra", out) and not verify_password("x", "garbage")
