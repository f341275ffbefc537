"""The analytics and ANEEL endpoints end to end: readings in the real InfluxDB, rollups, the scheduled pull from the
fake CKAN, and the hand-computed month of tests/analytics/test_billing_month.py served by ``/custo``.

The tests that only read share one server and database for the module (``shared_api``); a test that changes the
server's state (the admin sync) gets a fresh one of its own (``api``). Both are built by :func:`serving`."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal as D
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from backend.settings import Settings
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore
from backend.store.rollups import RollupWorker
from devstack.aneel_fake import FakeCkan
from devstack.influxdb import InfluxService
from devstack.mosquitto import MosquittoService
from protocol.mqtt import Reading
from protocol.timebase import DAY_MS
from tests.analytics.test_billing_month import register_samples
from tests.conftest import module_db, poll_until_async, running_broker, running_influx

DEV1, DEV2 = "00000000000000a1", "00000000000000a2"
JWT = "analytics-test-secret-" + "y" * 20
TZ3 = dt.timezone(dt.timedelta(hours=-3))
SEED_CHUNK_S: Final = 40 * DAY_MS / 1000
"""Rollup chunk of :func:`load_month`'s pass: longer than the month, so the month is rolled up in two chunks (the
chunk grid splits it) instead of the default's 720 hours of a dozen queries each (30 s of every fixture here, under
load 45 s). The chunk size does not change what is rolled up: tests/analytics/test_rollup_chunks.py."""


def sites_toml(site: str) -> str:
    return f"""
[[site]]
id = "{site}"
name = "Casa no Rio"
distributor = "LIGHT SESA"
subgroup = "B1"
modality = "Convencional"
icms = "0.24"
pis = "0.0123"
cofins = "0.0567"
billing_day = 15
devices = ["{DEV1}", "{DEV2}"]
[site.groups]
cozinha = ["{DEV1}"]
"""


@pytest.fixture
def fake() -> Iterator[FakeCkan]:
    server = FakeCkan().start()
    try:
        yield server
    finally:
        server.stop()


async def load_month(settings: Settings, site: str) -> None:
    """DEV1: the month of the billing test (15-min register samples, 14 kWh/day); DEV2: idle register. Written in
    one batch through the backend's write path, then rolled up by one worker pass (chunks of ``SEED_CHUNK_S``)."""
    from backend.store.influx import InfluxClient

    async with InfluxClient(settings.influx_url) as influx:
        from backend.store.layout import ensure_schema

        await ensure_schema(influx, settings)
        store = ReadingStore(influx, settings)
        samples = register_samples(dt.date(2026, 4, 16), 30)
        lines, spans = [], {}
        for dev, idle in ((DEV1, False), (DEV2, True)):
            for seq, s in enumerate(samples):
                lines.append(reading_line(site, "gw1", Reading(
                    device=dev, boot=3, seq=seq, ts=s.ts_ms, vrms=127.0, irms=1.0, p=500.0, s=520.0, pf=0.96,
                    freq=60.0, energy_mwh=5_000 if idle else s.energy_mwh)))
            spans[dev] = (samples[0].ts_ms, samples[-1].ts_ms)
        await store.write(lines, spans)
        seeding = msgspec.structs.replace(settings, rollup_chunk_s=SEED_CHUNK_S)
        await RollupWorker(influx, seeding).run_once(now_ns=(int(dt.datetime.now().timestamp()) + 60) * 10**9)


def app_settings(broker: MosquittoService, influx: InfluxService, db: str, sites: Path, fake: FakeCkan) -> Settings:
    """The backend of these tests: no MQTT ingest, rollups on, the ANEEL pull from ``fake``, ONS off."""
    return Settings(mqtt_host=broker.host, mqtt_port=broker.port, influx_url=influx.url, influx_db=db,
                    mqtt_client_id=f"be-{db}", jwt_secret=JWT, ingest_enabled=False, rollup_enabled=True,
                    rollup_interval_s=3600, retention_raw="INF", log_level="WARNING", sites_file=str(sites),
                    aneel_base_url=fake.url, aneel_backoff_max_s=0.05, alerts_enabled=False,
                    ons_sync_enabled=False)


@asynccontextmanager
async def serving(settings: Settings, site: str) -> AsyncIterator[AsyncTestClient[Any]]:
    """:func:`load_month` for ``site`` into ``settings.influx_db``, then a client of the app started on it once its
    first scheduled ANEEL pull succeeded. Afterwards the app is started once more on the same database and stopped,
    and the database is dropped."""
    try:
        await load_month(settings, site)
        app = create_app(settings)
        async with AsyncTestClient(app) as client:
            svc = app.state.services.analytics
            await poll_until_async(lambda: svc.scheduler.last_report is not None and svc.scheduler.last_report.ok,
                                  timeout=20, what="first ANEEL sync")
            yield client
        async with AsyncTestClient(app):
            pass
    finally:
        await influx_drop(settings.influx_url, settings.influx_db)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_api(mosquitto: MosquittoService, influxdb: InfluxService,
                     tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[AsyncTestClient[Any], str]]:
    """One server with the month for the module's read-only tests (``loop_scope="module"`` on them)."""
    db = module_db("api_module")
    site = db.replace("_", "-")[:40]
    sites = tmp_path_factory.mktemp("sites") / "sites.toml"
    sites.write_text(sites_toml(site), encoding="utf-8")
    broker, influx = running_broker(mosquitto), running_influx(influxdb)
    with FakeCkan() as fake:
        async with serving(app_settings(broker, influx, db, sites, fake), site) as client:
            yield client, site


@pytest_asyncio.fixture
async def api(broker: MosquittoService, influx: InfluxService, fake: FakeCkan, unique_id: str,
              tmp_path: Path) -> AsyncIterator[tuple[AsyncTestClient[Any], str]]:
    """A server of its own, with the month, for a test that changes the server's state."""
    sites = tmp_path / "sites.toml"
    site = unique_id.replace("_", "-")[:40]
    sites.write_text(sites_toml(site), encoding="utf-8")
    async with serving(app_settings(broker, influx, unique_id, sites, fake), site) as client:
        yield client, site


async def influx_drop(url: str, db: str) -> None:
    from backend.store.influx import InfluxClient

    async with InfluxClient(url) as c:
        await c.execute(f'DROP DATABASE "{db}"', epoch=None)


def auth(client: AsyncTestClient[Any], role: str = "viewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {client.app.state.authenticator.issue('tester', role)}"}


@pytest.mark.asyncio(loop_scope="module")
async def test_analytics_endpoints_over_a_real_month(shared_api: tuple[AsyncTestClient[Any], str]) -> None:
    client, site = shared_api
    h = auth(client)

    r = await client.get("/api/v1/analytics/consumo", headers=h, params={
        "site": site, "inicio": "2026-04-16", "fim": "2026-05-15", "granularidade": "day"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["buckets"]) == 30 and {b["kwh"] for b in body["buckets"]} == {14.0}
    assert body["kwh_total"] == 420.0 and body["buckets"][0]["start"] == "2026-04-16T00:00:00-03:00"
    assert body["peak_kw"] == 1.5  # 18h-20h: 500 W + 1 000 W

    r = await client.get("/api/v1/analytics/consumo", headers=h, params={
        "site": site, "grupo": "cozinha", "inicio": "2026-05-01", "fim": "2026-05-01", "granularidade": "hour"})
    assert r.status_code == 200 and len(r.json()["buckets"]) == 24 and r.json()["kwh_total"] == 14.0

    r = await client.get("/api/v1/analytics/custo", headers=h, params={"site": site, "referencia": "2026-05-02"})
    assert r.status_code == 200, r.text
    conta = r.json()["conta"]
    assert (conta["start"], conta["end"], conta["total"], conta["subtotal"]) == (
        "2026-04-16", "2026-05-15", "528.28", "373.79")
    assert "Total: R$ 528,28" in r.json()["explicacao"]
    assert conta["rehs"] == ["RESOLUÇÃO HOMOLOGATÓRIA Nº 3.571, DE 10 DE MARÇO DE 2026"]

    r = await client.get("/api/v1/analytics/tarifa-branca", headers=h, params={
        "site": site, "inicio": "2026-04-16", "fim": "2026-05-15"})
    assert r.status_code == 200, r.text
    tb = r.json()
    assert (tb["convencional"]["total"], tb["branca"]["total"], tb["saving_rs"]) == ("528.28", "558.58", "-30.30")
    assert tb["kwh"] == {"Ponta": 70.0, "Intermediário": 20.0, "Fora ponta": 330.0}
    assert tb["hours"][0]["hora"] in (18, 19)  # the evening load drives the difference

    r = await client.get("/api/v1/analytics/relatorios", headers=h, params={
        "site": site, "tipo": "mensal", "inicio": "2026-04-16", "fim": "2026-05-15", "formato": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.lstrip("\ufeff").split("\r\n")
    assert lines[1].startswith("2026-04;01/04/2026;30/04/2026;210,000;1,500;")
    assert lines[1].endswith(";Verde;não") and lines[2].endswith(";Amarela;não")
    # One number everywhere: the CSV's total is the bill's and the comparison's, to the cent and the Wh.
    assert lines[3] == "Total;;;420,000;;528,28;;"
    assert sum(D(x.split(";")[5].replace(",", ".")) for x in lines[1:3]) == D("528.28")

    r = await client.get("/api/v1/analytics/previsao", headers=h, params={"device": DEV1})
    assert r.status_code == 200, r.text
    assert set(r.json()["forecast"]) >= {"days", "next_7_days", "rest_of_month", "backtest"}

    r = await client.get("/api/v1/analytics/alertas", headers=h, params={"site": site})
    assert r.status_code == 200
    kinds = {(a["device"], a["kind"]) for a in r.json()[0]["alerts"]}
    assert (DEV1, "offline") in kinds and (DEV2, "offline") in kinds


@pytest.mark.asyncio
async def test_aneel_endpoints_and_admin_sync(api: tuple[AsyncTestClient[Any], str]) -> None:
    client, _ = api
    h = auth(client)
    r = await client.get("/api/v1/aneel/tarifas", headers=h, params={"distribuidora": "LIGHT SESA",
                                                                     "data": "2026-05-01"})
    assert r.status_code == 200, r.text
    body = r.json()
    vigentes = {(t["modalidade"], t["posto"]): t["rs_kwh"] for t in body["tarifas"] if t["vigente"]}
    assert vigentes[("Convencional", "Não se aplica")] == "0.88056"
    assert vigentes[("Branca", "Ponta")] == "1.61431"
    assert body["idade_dos_dados"]["sync"]["age_s"] is not None and body["idade_dos_dados"]["stale"] is False

    r = await client.get("/api/v1/aneel/bandeiras", headers=h, params={"desde": "2026-01-01"})
    assert r.status_code == 200 and len(r.json()["meses"]) == 9

    assert (await client.post("/api/v1/aneel/sync", headers=h)).status_code == 403
    r = await client.post("/api/v1/aneel/sync", headers=auth(client, "admin"))
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["added"] == []

    r = await client.get("/api/v1/aneel/tarifas", headers=h, params={"distribuidora": "NÃO EXISTE"})
    assert r.status_code == 404
    r = await client.get("/api/v1/analytics/consumo", headers=h, params={"device": "not-hex"})
    assert r.status_code == 400
    r = await client.get("/api/v1/analytics/consumo", params={"site": "x"})
    assert r.status_code == 401


@pytest.mark.asyncio(loop_scope="module")
async def test_dashboard_is_served_without_a_token(shared_api: tuple[AsyncTestClient[Any], str]) -> None:
    client, _ = shared_api
    r = await client.get("/painel/")
    assert r.status_code == 200 and "Consumo de energia" in r.text and 'lang="pt-BR"' in r.text
    js = await client.get("/painel/app.js")
    assert js.status_code == 200 and '"analytics/relatorios"' in js.text
    plotly = await client.get("/vendor/plotly/plotly.min.js")  # from the installed package, no CDN
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
