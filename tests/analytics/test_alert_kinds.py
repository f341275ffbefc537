"""The alert kinds beyond the meters': a gateway's queue (``fila_gateway``), stale ANEEL/ONS data
(``dados_desatualizados``) and next month's bandeira (``bandeira``) — the rules' thresholds and pt-BR messages, the
engine against the real InfluxDB with an injected clock and a fake status provider, and the running backend fed by
a gateway status published on the real broker."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from backend.analytics.alert_rules import QueueHistory, check_bandeira, check_gateway_queue, check_stale
from backend.analytics.alerts import AlertEngine, AlertList
from backend.aneel.records import BandeiraMonth
from backend.aneel.sites import SiteConfig
from backend.aneel.store import AneelStore, day_ms
from backend.aneel.tariffs import BandeiraBook
from backend.api.app import create_app
from backend.ons.store import OnsStore
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ANEEL_FLAG, ANEEL_SYNC, ONS_SYNC
from backend.store.lineprotocol import point
from protocol.mqtt import GatewayStatus, json_encoder, status_topic
from protocol.timebase import DAY_MS, MINUTE_MS, TZ

NOW = int(dt.datetime(2026, 12, 2, 10, 0, tzinfo=TZ).timestamp() * 1000)
"""The injected clock: Wednesday 02/12/2026 10:00 in Brasília."""
QUEUE = {"age_s": 900, "critical_s": 86400, "rows": 1000, "window_s": 900}


def status(queued: int, oldest_s: float, ts: int = NOW, *, online: bool = True, unconfirmed: int = 0) -> GatewayStatus:
    return GatewayStatus(online=online, gateway="gw1", site="s", queued=queued, oldest_queued_ms=int(oldest_s * 1000),
                         ts=ts, unconfirmed=unconfirmed)


# --- fila_gateway ---------------------------------------------------------------------------------------------------

def test_gateway_queue_with_an_old_unsent_reading_not_shrinking_is_aviso() -> None:
    a = check_gateway_queue("s", "gw1", status(1520, 25 * 60, unconfirmed=3),
                            [(NOW - 30_000, 1500), (NOW, 1520)], **QUEUE)
    assert a is not None and (a.kind, a.severity, a.device, a.gateway) == ("fila_gateway", "aviso", "", "gw1")
    assert a.message == ("Fila do gateway gw1: 1.520 leitura(s) não enviada(s), a mais antiga aguarda há 25 min; "
                         "3 enviada(s) aguardando confirmação do servidor")
    assert a.id == "s:gw1:fila_gateway" and a.limit == "900 s" and a.value == 1520.0
    assert a.since == dt.datetime(2026, 12, 2, 9, 35, tzinfo=TZ).isoformat()
    # Just under the threshold, nothing; first status seen (no history yet): judged on the age alone.
    assert check_gateway_queue("s", "gw1", status(1520, 899), [(NOW, 1520)], **QUEUE) is None
    assert check_gateway_queue("s", "gw1", status(20, 901), [(NOW, 20)], **QUEUE) is not None


def test_gateway_backlog_draining_after_a_reconnect_is_not_reported_until_a_day_old() -> None:
    draining = [(NOW - 30_000, 5000), (NOW, 3000)]
    assert check_gateway_queue("s", "gw1", status(3000, 3600), draining, **QUEUE) is None
    a = check_gateway_queue("s", "gw1", status(3000, 86_401), draining, **QUEUE)
    assert a is not None and a.severity == "critico" and a.message.endswith("a mais antiga aguarda há 24 h")
    assert a.limit == "86400 s"


def test_gateway_queue_growing_above_1000_for_the_whole_window() -> None:
    growing = [(NOW - 15 * MINUTE_MS - 10_000, 1100), (NOW - 8 * MINUTE_MS, 1400), (NOW, 1900)]
    a = check_gateway_queue("s", "gw1", status(1900, 120), growing, **QUEUE)
    assert a is not None and a.severity == "aviso" and a.limit == "> 1000 leituras"
    assert a.message == ("Fila do gateway gw1: 1.900 leitura(s) não enviada(s), a mais antiga aguarda há 2 min; "
                         "a fila cresce há 15 min ou mais")
    short = growing[1:]  # 8 min of growth: not yet
    assert check_gateway_queue("s", "gw1", status(1900, 120), short, **QUEUE) is None
    dipped = [growing[0], (NOW - 8 * MINUTE_MS, 900), growing[2]]  # went under 1000 within the window
    assert check_gateway_queue("s", "gw1", status(1900, 120), dipped, **QUEUE) is None
    flat = [(NOW - 16 * MINUTE_MS, 1900), (NOW, 1900)]
    assert check_gateway_queue("s", "gw1", status(1900, 120), flat, **QUEUE) is None


def test_gateway_offline_or_with_an_empty_queue_is_not_judged() -> None:
    old = [(NOW, 5000)]
    assert check_gateway_queue("s", "gw1", status(5000, 90_000, online=False), old, **QUEUE) is None
    assert check_gateway_queue("s", "gw1", status(0, 0), old, **QUEUE) is None


def test_queue_history_keeps_distinct_statuses_for_the_window() -> None:
    h = QueueHistory(window_s=900)
    assert h.observe("s", "g", status(10, 1, NOW)) == [(NOW, 10)]
    assert h.observe("s", "g", status(10, 1, NOW)) == [(NOW, 10)]  # the same status seen again
    for i in range(1, 41):  # 40 statuses, 30 s apart: 20 min
        seen = h.observe("s", "g", status(10 + i, 1, NOW + i * 30_000))
    assert seen[0] == (NOW + 10 * 30_000, 20) and seen[-1] == (NOW + 40 * 30_000, 50)  # one sample at the start
    assert len(seen) == 31
    assert h.observe("s", "g", status(7, 1, NOW)) == [(NOW, 7)]  # the gateway's clock went back: start over
    h.observe("s", "other", status(1, 1, NOW))
    h.keep_only({("s", "other")})
    assert h.observe("s", "g", status(3, 1, NOW + 1)) == [(NOW + 1, 3)]


# --- dados_desatualizados -------------------------------------------------------------------------------------------

def test_stale_aneel_and_ons_data_after_two_days() -> None:
    fresh = NOW - 2 * DAY_MS
    assert check_stale("s", "aneel", fresh, True, NOW, 2 * 86400) is None
    a = check_stale("s", "aneel", NOW - 3 * DAY_MS - 5 * 3_600_000, True, NOW, 2 * 86400)
    assert a is not None and (a.kind, a.severity, a.device, a.id) == ("dados_desatualizados", "aviso", "",
                                                                       "s:aneel:dados_desatualizados")
    assert a.message == ("Tarifas e bandeiras da ANEEL sem atualização há 3 dias (última em 29/11/2026 05:00); "
                         "os custos usam a última cópia")
    assert a.value == 77.0
    b = check_stale("s", "ons", NOW - 50 * 3_600_000, True, NOW, 2 * 86400)
    assert b is not None and b.id == "s:ons:dados_desatualizados" and b.message.startswith(
        "Dados da rede do ONS sem atualização há 2 dias (última em 30/11/2026 08:00); a participação renovável")


def test_data_never_pulled_is_stale_only_after_a_failed_attempt() -> None:
    assert check_stale("s", "aneel", None, False, NOW, 86400) is None  # a backend that has just started
    a = check_stale("s", "aneel", None, True, NOW, 86400)
    assert a is not None and a.message == ("Tarifas e bandeiras da ANEEL nunca foram obtidas: todas as tentativas "
                                           "falharam")


# --- bandeira -------------------------------------------------------------------------------------------------------

def book(*months: tuple[str, str, str]) -> BandeiraBook:
    return BandeiraBook([BandeiraMonth(month=dt.date.fromisoformat(m), flag=f, adder_rs_mwh=Decimal(v))
                         for m, f, v in months])


def test_next_months_bandeira_differs_names_both_and_the_cost_per_100_kwh() -> None:
    b = book(("2026-12-01", "Amarela", "18.85"), ("2027-01-01", "Vermelha P1", "44.63"))
    a = check_bandeira("s", b, dt.date(2026, 12, 28))
    assert a is not None and (a.kind, a.severity, a.device, a.id) == ("bandeira", "aviso", "", "s:2027-01:bandeira")
    assert a.message == ("Bandeira tarifária de 01/2027: vermelha patamar 1 (acréscimo de R$ 4,463 a cada 100 kWh); "
                         "em 12/2026 é amarela (acréscimo de R$ 1,885 a cada 100 kWh)")
    assert a.value == 4.463
    assert check_bandeira("s", b, dt.date(2026, 12, 31)) is not None  # open until the month changes...
    assert check_bandeira("s", b, dt.date(2027, 1, 1)) is None  # ...then it is this month's bandeira
    green = check_bandeira("s", book(("2026-12-01", "Vermelha P2", "78.77"), ("2027-01-01", "Verde", "0")),
                           dt.date(2026, 12, 20))
    assert green is not None and green.message == (
        "Bandeira tarifária de 01/2027: verde (sem acréscimo); em 12/2026 é vermelha patamar 2 (acréscimo de "
        "R$ 7,877 a cada 100 kWh)")


def test_bandeira_unchanged_unpublished_or_unknown_is_no_alert() -> None:
    same = book(("2026-12-01", "Verde", "0"), ("2027-01-01", "Verde", "0"))
    assert check_bandeira("s", same, dt.date(2026, 12, 28)) is None
    assert check_bandeira("s", book(("2026-12-01", "Amarela", "18.85")), dt.date(2026, 12, 28)) is None
    assert check_bandeira("s", book(), dt.date(2026, 12, 28)) is None


# --- the engine against the real InfluxDB ---------------------------------------------------------------------------

def kinds(result: AlertList) -> set[tuple[str, str, str]]:
    return {(a.kind, a.gateway, a.id.split(":")[1]) for a in result.alerts if a.kind != "offline"}


@pytest.mark.asyncio
async def test_engine_reports_a_growing_gateway_queue_from_the_provided_statuses(env) -> None:  # type: ignore[no-untyped-def]
    settings, client = env
    settings = msgspec.structs.replace(settings, aneel_sync_enabled=False, ons_sync_enabled=False)
    await AneelStore(client, settings.influx_db).ensure_schema()
    site = SiteConfig(id="casa", distributor="CEMIG-D", devices=["00000000000000c1"])
    statuses: dict[tuple[str, str], GatewayStatus] = {}
    engine = AlertEngine(settings, client, {"casa": site}, gateways=lambda: statuses)
    statuses[("outra", "gw9")] = status(9000, 7200)  # another site's gateway is not this site's alert
    for i, queued in enumerate((1200, 1400, 1600, 1800)):  # a status every 5 min: flowing, but growing
        now = NOW + i * 5 * MINUTE_MS
        statuses[("casa", "gw1")] = status(queued, 60 + i * 30, now)
        result = await engine.evaluate_site(site, now)
        assert kinds(result) == (set() if i < 3 else {("fila_gateway", "gw1", "gw1")}), i
    assert result.alerts[-1].message.endswith("a fila cresce há 15 min ou mais")
    # The queue drains: the alert closes at the next status.
    statuses[("casa", "gw1")] = status(40, 5, NOW + 20 * MINUTE_MS)
    assert kinds(await engine.evaluate_site(site, NOW + 20 * MINUTE_MS)) == set()
    # The gateway's status cleared: nothing left to judge.
    statuses.clear()
    assert kinds(await engine.evaluate_site(site, NOW + 21 * MINUTE_MS)) == set()


@pytest.mark.asyncio
async def test_engine_reports_stale_data_and_next_months_bandeira_for_every_site(env) -> None:  # type: ignore[no-untyped-def]
    settings, client = env
    settings = msgspec.structs.replace(settings, aneel_sync_enabled=True, ons_sync_enabled=True)
    aneel, ons = AneelStore(client, settings.influx_db), OnsStore(client, settings.influx_db)
    await aneel.ensure_schema()
    await ons.ensure_schema()
    await aneel.write([point(ANEEL_SYNC, {}, {"ok": True, "tariffs": 10, "error": ""}, NOW - 3 * DAY_MS),
                       point(ANEEL_FLAG, {}, {"flag": "Amarela", "adder": "18.85", "gerado": ""},
                             day_ms(dt.date(2026, 12, 1))),
                       point(ANEEL_FLAG, {}, {"flag": "Vermelha P1", "adder": "44.63", "gerado": ""},
                             day_ms(dt.date(2027, 1, 1)))])
    await ons.write([point(ONS_SYNC, {}, {"ok": True, "points": 5, "error": ""}, NOW - 3_600_000)])
    sites = {s: SiteConfig(id=s, distributor="CEMIG-D") for s in ("casa", "loja")}
    published: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes) -> None:
        published.append((topic, payload))

    engine = AlertEngine(settings, client, sites, publish)
    await engine.run_once(NOW)
    assert engine.errors == 0 and [t for t, _ in published] == ["cds/v1/casa/alerts", "cds/v1/loja/alerts"]
    for topic, payload in published:
        body = msgspec.json.decode(payload, type=AlertList)
        assert kinds(body) == {("dados_desatualizados", "", "aneel"), ("bandeira", "", "2027-01")}, topic
        stale = next(a for a in body.alerts if a.kind == "dados_desatualizados")
        assert stale.message.startswith("Tarifas e bandeiras da ANEEL sem atualização há 3 dias")
    raw = json.loads(published[0][1])
    assert {a["kind"]: a["device"] for a in raw["alerts"]} == {"dados_desatualizados": "", "bandeira": ""}
    # January: the bandeira is this month's; a fresh pull clears the staleness.
    await aneel.write([point(ANEEL_SYNC, {}, {"ok": True, "tariffs": 10, "error": ""}, NOW + 31 * DAY_MS)])
    january = NOW + 31 * DAY_MS + MINUTE_MS
    assert kinds(await engine.evaluate_site(sites["casa"], january)) == {("dados_desatualizados", "", "ons")}


@pytest.mark.asyncio
async def test_engine_without_the_aneel_and_ons_schema_still_reports_the_meters(env) -> None:  # type: ignore[no-untyped-def]
    settings, client = env
    settings = msgspec.structs.replace(settings, aneel_sync_enabled=True, ons_sync_enabled=True)
    site = SiteConfig(id="casa", distributor="CEMIG-D", devices=["00000000000000c1"])
    engine = AlertEngine(settings, client, {"casa": site})
    result = await engine.evaluate_site(site, NOW)
    assert [(a.kind, a.device) for a in result.alerts] == [("offline", "00000000000000c1")] and engine.errors == 1


# --- the running backend --------------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_backend_alerts_on_a_gateway_status_published_on_the_broker(broker, influx, unique_id: str,  # type: ignore[no-untyped-def]
                                                                          tmp_path: Path, wait_for_async) -> None:
    import paho.mqtt.publish as mqtt_publish

    site = unique_id.replace("_", "-")[:40]
    sites = tmp_path / "sites.toml"
    sites.write_text(f'[[site]]\nid = "{site}"\ndistributor = "CEMIG-D"\n', encoding="utf-8")
    settings = Settings(mqtt_host=broker.host, mqtt_port=broker.port, influx_url=influx.url, influx_db=unique_id,
                        mqtt_client_id=f"be-{unique_id}", mqtt_share_group=f"g-{unique_id}", jwt_secret="k" * 40,
                        rollup_interval_s=3600, log_level="WARNING", sites_file=str(sites),
                        aneel_sync_enabled=False, ons_sync_enabled=False, alerts_interval_s=0.3)
    topic = status_topic(site, "gw-fila")
    stuck = GatewayStatus(online=True, gateway="gw-fila", site=site, queued=42, oldest_queued_ms=40 * 60_000,
                          ts=int(dt.datetime.now(dt.UTC).timestamp() * 1000))
    app = create_app(settings)
    try:
        async with AsyncTestClient(app) as client:
            headers = {"Authorization": f"Bearer {app.state.authenticator.issue('tester', 'viewer')}"}
            mqtt_publish.single(topic, json_encoder.encode(stuck), qos=1, retain=True, hostname=broker.host,
                                port=broker.port)

            async def gateway_alerts() -> list[dict[str, Any]]:
                r = await client.get("/api/v1/analytics/alertas", headers=headers, params={"site": site})
                assert r.status_code == 200, r.text
                return [a for a in r.json()[0]["alerts"] if a["kind"] == "fila_gateway"]

            found = await wait_for_async(gateway_alerts, timeout=20, what="fila_gateway in GET /analytics/alertas")
            assert found[0]["gateway"] == "gw-fila" and found[0]["device"] == "" and found[0]["severity"] == "aviso"
            assert found[0]["message"].startswith("Fila do gateway gw-fila: 42 leitura(s) não enviada(s), "
                                                  "a mais antiga aguarda há 40 min")
    finally:
        mqtt_publish.single(topic, b"", qos=1, retain=True, hostname=broker.host, port=broker.port)
        async with InfluxClient(influx.url) as c:
            await c.execute(f'DROP DATABASE "{unique_id}"', epoch=None)
