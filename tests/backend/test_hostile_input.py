"""Hostile and out-of-range input against the running backend (real Mosquitto and InfluxDB): each gets a clear
4xx in pt-BR or a per-reading rejection with a reason, is counted, and never loses or strands good data."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from protocol import mqtt
from tests.backend.conftest import batch_bytes, count_points, device_id, reading, token

DAY_MS = 86_400_000


def _metric(client: Any, name: str, label: str = "") -> float:
    for family in client.app.state.services.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and (not label or label in sample.labels.values()):
                return float(sample.value)
    return 0.0


def _r1m_count(influx: Any, db: str) -> int:
    rows = influx.rows(f'SELECT sum(n) FROM "{db}"."r1m"."readings"', db=db)
    return int(rows[0]["sum"]) if rows else 0


@pytest.mark.asyncio
async def test_reading_older_than_raw_retention_refused_alone_the_rest_stored_and_rolled_up(
    app_client: Any, broker: Any, influx: Any, unique_id: str, publisher_factory: Any, mqtt_recorder: Any,
    wait_for_async: Any,
) -> None:
    """One reading beyond the raw retention policy (30 d) or at ts=0 in a batch: InfluxDB would drop it and
    answer 400 for the whole write; the backend refuses that reading alone, so the others are stored, reach
    the rollups and the message is acknowledged."""
    dead = mqtt_recorder(f"{mqtt.DEAD_LETTER_ROOT}/#")
    pub = publisher_factory(broker)
    site, gw, dev = unique_id, "gw1", device_id(3)
    now = int(time.time() * 1000)
    old = reading(dev, 1, now - 40 * DAY_MS)
    zero = reading(dev, 2, 0)
    good = [reading(dev, 3 + i, now - 120_000 + i * 1000) for i in range(5)]
    pub.publish(mqtt.readings_topic(site, gw), batch_bytes(site, gw, [old, *good[:2], zero, *good[2:]]))
    pub.wait_all_acked()
    ingest = app_client.app.state.services.ingest
    await wait_for_async(lambda: dead.count() >= 1 and ingest.unacked == 0, timeout=15, what="dead letter + ack")
    assert count_points(influx, unique_id) == 5
    letter = json.loads(dead.payloads[0])
    assert letter["reason"] == "beyond_retention"
    assert sorted(r["seq"] for r in json.loads(letter["payload"])["readings"]) == [1, 2]
    assert _metric(app_client, "cds_ingest_rejected_total", "beyond_retention") == 2
    await wait_for_async(lambda: _r1m_count(influx, unique_id) == 5, timeout=15, what="the good readings rolled up")


@pytest.mark.asyncio
async def test_http_ingest_with_an_old_reading_stores_the_rest_and_says_why(
    app_client: Any, influx: Any, unique_id: str,
) -> None:
    now = int(time.time() * 1000)
    dev = device_id(4)
    body = batch_bytes(unique_id, "gw1", [reading(dev, 1, now - 60_000), reading(dev, 2, now - 45 * DAY_MS)])
    resp = await app_client.post("/api/v1/aicss/dados", content=body, headers=token(app_client, "operator"))
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["accepted"] == 1
    assert [(r["seq"], r["reason"]) for r in out["rejected"]] == [(2, "beyond_retention")]
    assert count_points(influx, unique_id) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(("name", "body"), [
    ("deep_nesting", b"[" * 100_000 + b"]" * 100_000),
    ("invalid_utf8", b'{"site": "s\xff\xfe", "gateway": "g", "readings": []}'),
    ("newline_in_site", json.dumps({"site": "x\n", "gateway": "gw1", "readings": [{}]}).encode()),
    ("control_char_in_gateway", json.dumps({"site": "x", "gateway": "g\u0000", "readings": [{}]}).encode()),
])
async def test_hostile_http_ingest_bodies_get_a_pt_br_4xx(app_client: Any, name: str, body: bytes) -> None:
    resp = await app_client.post("/api/v1/aicss/dados", content=body, headers=token(app_client, "operator"))
    assert 400 <= resp.status_code < 500, (name, resp.status_code, resp.text[:300])
    assert resp.json()["detail"].startswith("Lote")


@pytest.mark.asyncio
@pytest.mark.parametrize("query", [
    "end=0001-01-01T00:00:00", "start=0001-01-01T00:00:00&end=0001-01-02T00:00:00",
    "start=2300-01-01T00:00:00&end=2300-01-02T00:00:00", "end=9999-12-31T23:59:59",
])
async def test_readings_out_of_range_dates_are_422(app_client: Any, query: str) -> None:
    resp = await app_client.get(f"/api/v1/devices/{device_id(1)}/readings?{query}", headers=token(app_client))
    assert resp.status_code == 422, resp.text
    assert "Data fora do intervalo" in resp.json()["detail"]


@pytest.mark.asyncio
@pytest.mark.parametrize("query", [
    "site=s&inicio=0001-01-01&fim=0001-01-02", "site=s&inicio=2300-01-01&fim=2300-01-02",
    "site=s&fim=9999-12-31",
])
async def test_analytics_out_of_range_dates_are_422(app_client: Any, query: str) -> None:
    resp = await app_client.get(f"/api/v1/analytics/consumo?{query}", headers=token(app_client))
    assert resp.status_code == 422, resp.text
    assert "Data fora do intervalo" in resp.json()["detail"]


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/painel/%00", "/painel/a%00b.js", "/painel/%2e%2e/%2e%2e/etc/passwd"])
async def test_dashboard_hostile_paths_are_404(app_client: Any, path: str) -> None:
    resp = await app_client.get(path)
    assert resp.status_code == 404, (path, resp.status_code, resp.text[:200])


@pytest.mark.asyncio
async def test_unexpected_errors_are_a_pt_br_500_logged_and_counted(app_client: Any) -> None:
    """The last line of defence: an exception nobody translated answers a pt-BR 500 without internals, is
    logged with its traceback and counted (the tests above prove none of the known inputs reach it)."""
    services = app_client.app.state.services

    async def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("internal detail that must not leak")

    services.influx.rows = broken  # type: ignore[method-assign]
    before = _metric(app_client, "cds_http_errors_total", "500")
    resp = await app_client.get("/api/v1/devices", headers=token(app_client))
    assert resp.status_code == 500
    assert resp.json()["detail"] == "Erro interno do servidor."
    assert "internal detail" not in resp.text
    assert _metric(app_client, "cds_http_errors_total", "500") == before + 1
