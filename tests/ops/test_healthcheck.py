"""``python -m backend health-check`` against a real broker, InfluxDB and backend replica: a healthy deployment
passes; a silent site, an offline gateway and a killed replica are each reported, and only failures fail the exit
code."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from backend.healthcheck import probe
from backend.healthcheck.report import Check, Thresholds, exit_code, freshness, render, report
from protocol import mqtt
from protocol.mqtt import DeviceInfo, GatewayStatus
from tests.backend.conftest import REPO, BackendProcess, batch_bytes, count_points, device_id, make_settings, reading


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_freshness_and_exit_code_rules() -> None:
    assert freshness("x", "a", "a", None, 10, 20).status == "falha"
    assert freshness("x", "a", "a", 5, 10, 20).status == "ok"
    assert freshness("x", "a", "a", 15, 10, 20).status == "aviso"
    assert freshness("x", "a", "a", 25, 10, 20).status == "falha"
    warn = report([Check("a", "ok", "", ""), Check("b", "aviso", "", "")])
    assert (warn.status, exit_code(warn)) == ("aviso", 0)
    fail = report([Check("a", "falha", "x", "y"), Check("b", "aviso", "", "")])
    assert (fail.status, exit_code(fail)) == ("falha", 1)
    assert render(fail).splitlines()[0] == "FALHA a: x | y"


def test_health_check_reports_each_broken_part(
    broker: Any, influx: Any, unique_id: str, publisher_factory: Any, backend_process: Callable[..., BackendProcess],
    wait_for: Any,
) -> None:
    site, quiet = f"{unique_id}_a", f"{unique_id}_b"
    settings = make_settings(broker, influx, unique_id)
    replica = backend_process(settings)
    replica.start()
    url = f"http://127.0.0.1:{replica.port}"
    pub = publisher_factory(broker)
    now = int(time.time() * 1000)
    pub.publish(mqtt.status_topic(site, "gw1"), mqtt.json_encoder.encode(GatewayStatus(online=True, site=site,
                                                                                        gateway="gw1")), retain=True)
    pub.publish(mqtt.readings_topic(site, "gw1"), batch_bytes(site, "gw1", [reading(device_id(1), 1, now - 1000)]))
    pub.wait_all_acked()
    wait_for(lambda: count_points(influx, unique_id) == 1, 15, what="the reading stored")
    try:
        rep = asyncio.run(probe.run(settings, [url], Thresholds(), gateway_window_s=1.0))
        checks = _by_name(rep.checks)
        assert checks["broker"].status == "ok" and checks["influxdb"].status == "ok"
        assert checks[f"réplica {url}"].status == "ok"
        assert checks[f"medições {site}"].status == "ok", checks
        # the broker is shared with the other tests, whose gateways' statuses are retained: ask for this one
        assert probe.gateway_statuses(settings, 1.0)[f"{site}/gw1"] is True  # type: ignore[index]
        assert checks["aneel"].status == checks["ons"].status == "ok"  # sync disabled in these settings

        # a meter of another site is provisioned (its DeviceInfo) but never reports; gw1 goes offline
        info = DeviceInfo(device=device_id(2), firmware="1", hw_rev=1, boot=1, report_period_ms=1000, link="up",
                          port="/dev/ttyUSB0", seen_at=now)
        pub.publish(mqtt.device_topic(quiet, "gw9", device_id(2)), mqtt.json_encoder.encode(info), retain=True)
        pub.publish(mqtt.status_topic(site, "gw1"), mqtt.json_encoder.encode(GatewayStatus(online=False, site=site,
                                                                                            gateway="gw1")),
                    retain=True)
        pub.wait_all_acked()
        wait_for(lambda: influx.rows(f'SELECT * FROM "{unique_id}_accounts"."accounts"."fleet_device" WHERE '
                                     f"device = '{device_id(2)}'", db=f"{unique_id}_accounts"), 15,
                 what="the quiet site's meter claimed")
        rep = asyncio.run(probe.run(settings, [url], Thresholds(), gateway_window_s=1.0))
        checks = _by_name(rep.checks)
        assert checks["medições"].status == "falha" and quiet in checks["medições"].detalhe
        assert checks["gateways"].status == "aviso"
        assert probe.gateway_statuses(settings, 1.0)[f"{site}/gw1"] is False  # type: ignore[index]
        assert rep.status == "falha"

        replica.kill()
        env = {**replica.env(), "BACKEND_LOG_LEVEL": "ERROR"}
        done = subprocess.run([sys.executable, "-m", "backend", "health-check", "--replica", url, "--json",
                               "--gateway-window", "0.5"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 1, done.stderr
        out = _by_name([Check(**c) for c in json.loads(done.stdout)["checks"]])
        assert out[f"réplica {url}"].status == "falha" and "sem resposta" in out[f"réplica {url}"].detalhe
        assert out["influxdb"].status == "ok"
    finally:
        for topic in (mqtt.device_topic(quiet, "gw9", device_id(2)), mqtt.status_topic(site, "gw1")):
            pub.publish(topic, b"", retain=True)  # no retained junk for other tests
        pub.wait_all_acked()
