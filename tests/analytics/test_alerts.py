"""Alert rules (PRODIST Módulo 8 voltage, power factor, offline, unusual consumption) and their publication on MQTT
by the running backend."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from backend.analytics.alert_rules import check_offline, check_power_factor, check_profile, check_voltage, voltage_class
from backend.api.app import create_app
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ensure_schema
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore
from protocol.mqtt import Reading


@pytest.mark.parametrize(("v", "nominal", "cls"), [
    (202.0, 220, "adequada"), (231.0, 220, "adequada"), (201.9, 220, "precaria"), (191.0, 220, "precaria"),
    (233.0, 220, "precaria"), (233.1, 220, "critica"), (190.9, 220, "critica"),
    (117.0, 127, "adequada"), (133.0, 127, "adequada"), (116.9, 127, "precaria"), (110.0, 127, "precaria"),
    (135.0, 127, "precaria"), (135.1, 127, "critica"), (109.9, 127, "critica"),
])
def test_prodist_modulo_8_voltage_classes(v: float, nominal: int, cls: str) -> None:
    assert voltage_class(v, nominal) == cls


def test_voltage_alert_infers_nominal_and_grades_severity() -> None:
    assert check_voltage("s", "d", 127.4) is None
    a = check_voltage("s", "d", 236.0)
    assert a is not None and a.severity == "critico" and "nominal 220 V" in a.message and a.limit == "202-231 V"
    b = check_voltage("s", "d", 114.0)
    assert b is not None and b.severity == "aviso" and "precária" in b.message
    assert check_voltage("s", "d", 140.0, nominal=127) is not None


def test_power_factor_below_092_only_with_a_real_load() -> None:
    assert check_power_factor("s", "d", 0.80, 500.0) is not None
    assert check_power_factor("s", "d", 0.80, 20.0) is None  # standby: PF is meaningless
    assert check_power_factor("s", "d", 0.92, 500.0) is None
    assert check_power_factor("s", "d", -0.85, 500.0) is not None


def test_offline_after_threshold_and_never_seen() -> None:
    now = 1_800_000_000_000
    assert check_offline("s", "d", now - 599_000, now, 600) is None
    a = check_offline("s", "d", now - 1_200_000, now, 600)
    assert a is not None and a.message == "Medidor sem comunicação há 20 min"
    assert check_offline("s", "d", None, now, 600) is not None


def test_consumption_far_above_the_usual_profile() -> None:
    usual = [0.30, 0.32, 0.28, 0.31, 0.29, 0.30, 0.33, 0.27]
    assert check_profile("s", "d", 0.45, usual, "19h") is None
    a = check_profile("s", "d", 1.20, usual, "19h")
    assert a is not None and a.kind == "consumo_anormal" and "acima do habitual" in a.message
    assert check_profile("s", "d", 5.0, usual[:5], "19h") is None  # too little history to judge


@pytest.mark.asyncio
async def test_backend_publishes_retained_alerts_on_mqtt(broker, influx, unique_id: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         mqtt_recorder, wait_for_async) -> None:
    site = unique_id.replace("_", "-")[:40]
    d_volt, d_off = "00000000000000b1", "00000000000000b2"
    sites = tmp_path / "sites.toml"
    sites.write_text(f'[[site]]\nid = "{site}"\ndistributor = "CEMIG-D"\ndevices = ["{d_volt}", "{d_off}"]\n',
                     encoding="utf-8")
    settings = Settings(mqtt_host=broker.host, mqtt_port=broker.port, influx_url=influx.url, influx_db=unique_id,
                        mqtt_client_id=f"be-{unique_id}", mqtt_share_group=f"g-{unique_id}", jwt_secret="k" * 40,
                        rollup_interval_s=3600, log_level="WARNING", sites_file=str(sites),
                        aneel_sync_enabled=False, ons_sync_enabled=False, alerts_interval_s=0.3,
                        alerts_offline_s=600)
    now = int(time.time() * 1000)
    async with InfluxClient(influx.url) as client:
        await ensure_schema(client, settings)
        lines = [reading_line(site, "gw", Reading(device=d_volt, boot=1, seq=i, ts=now - 300_000 + i * 10_000,
                                                  vrms=236.0, irms=3.0, p=560.0, s=700.0, pf=0.80, freq=60.0,
                                                  energy_mwh=1000 + i)) for i in range(25)]
        lines.append(reading_line(site, "gw", Reading(device=d_off, boot=1, seq=1, ts=now - 1_800_000, vrms=127.0,
                                                      irms=1.0, p=100.0, s=100.0, pf=1.0, freq=60.0, energy_mwh=5)))
        await ReadingStore(client, settings).write(lines, {})
    recorder = mqtt_recorder(f"cds/v1/{site}/alerts")
    app = create_app(settings)
    try:
        async with AsyncTestClient(app):
            await wait_for_async(lambda: recorder.payloads, timeout=20, what="alerts on MQTT")
    finally:
        async with InfluxClient(influx.url) as client:
            await client.execute(f'DROP DATABASE "{unique_id}"', epoch=None)
    msg: dict[str, Any] = json.loads(recorder.payloads[0])
    kinds = {(a["device"], a["kind"], a["severity"]) for a in msg["alerts"]}
    assert kinds == {(d_volt, "tensao", "critico"), (d_volt, "fator_potencia", "aviso"),
                     (d_off, "offline", "critico")}
    assert msg["site"] == site and dt.datetime.fromisoformat(msg["evaluated_at"]).tzinfo is not None
    # Retained: a subscriber arriving later gets the current list at once.
    late = mqtt_recorder(f"cds/v1/{site}/alerts")
    await wait_for_async(lambda: late.messages, timeout=10, what="retained alerts")
    assert late.messages[0][2] is True and json.loads(late.messages[0][1])["site"] == site
    import paho.mqtt.publish as publish

    publish.single(f"cds/v1/{site}/alerts", b"", retain=True, hostname=broker.host, port=broker.port)
