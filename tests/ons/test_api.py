"""The ONS endpoints and ``/analytics/renovavel`` end to end: the app pulls from the fake ONS into the real
InfluxDB on start, then answers balance, latest hour and CMO (with the data's age), refuses bad input in pt-BR,
keeps serving when ONS or InfluxDB is down, and weighs a site's known consumption by its subsystem's renewable
share hour by hour.

The tests that only read (GET) share one app, database and fake for the module (``api``: loading the readings,
the first pull and the app's start cost seconds, every read test paid them before); the tests that change
something — a pull by the admin, ONS or InfluxDB down — get their own (``fresh_api``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ensure_schema
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore
from backend.store.rollups import RollupWorker
from devstack.influxdb import InfluxService
from devstack.ons_fake import FakeOns
from devstack.ons_model import SinModel
from protocol.mqtt import Reading
from protocol.timebase import TZ
from tests.conftest import module_db, poll_until_async, running_influx
from tests.ons.conftest import UNTIL

JWT = "ons-test-secret-" + "z" * 24
DEV_SE, DEV_NE = "00000000000000e1", "00000000000000e2"
DAYS = [dt.date(2026, 8, d) for d in (10, 11, 12, 27)]  # the 27th is after the fake's last published day


def kwh_at(hour: int) -> float:
    """The sites' known consumption: 2 kWh in each hour from 10 h to 13 h, 0.5 kWh in every other hour."""
    return 2.0 if 10 <= hour < 14 else 0.5


READINGS_FROM, READINGS_TO = dt.datetime(2026, 8, 10, tzinfo=TZ), dt.datetime(2026, 8, 28, tzinfo=TZ)


async def load_readings(settings: Settings, sites: Mapping[str, str], start: dt.datetime = READINGS_FROM,
                        end: dt.datetime = READINGS_TO) -> None:
    """15-minute register samples of the known consumption for each (site, device) from ``start`` to ``end``
    (aware, on a quarter hour), then the rollups — in one chunk: the worker's default of an hour per chunk makes
    an 18-day load ~430 chunks of queries (~25 s); the rollups are the same either way."""
    async with InfluxClient(settings.influx_url) as influx:
        await ensure_schema(influx, settings)
        lines, spans = [], {}
        for site, dev in sites.items():
            energy, seq = 1_000_000, 0
            t = start
            first = t
            while t <= end:
                lines.append(reading_line(site, "gw1", Reading(
                    device=dev, boot=1, seq=seq, ts=int(t.timestamp() * 1000), vrms=127.0, irms=1.0, p=500.0,
                    s=520.0, pf=0.96, freq=60.0, energy_mwh=energy)))
                energy += int(kwh_at(t.hour) * 1_000_000 / 4)
                seq += 1
                t += dt.timedelta(minutes=15)
            spans[dev] = (int(first.timestamp() * 1000), int(t.timestamp() * 1000))
        await ReadingStore(influx, settings).write(lines, spans)
        span_s = (end - start).total_seconds() + 3600
        rollups = msgspec.structs.replace(settings, rollup_chunk_s=max(settings.rollup_chunk_s, span_s))
        await RollupWorker(influx, rollups).run_once(now_ns=(int(dt.datetime.now().timestamp()) + 60) * 10**9)


SITES = f"""
[[site]]
id = "bh"
distributor = "CEMIG-D"
devices = ["{DEV_SE}"]
[[site]]
id = "natal"
distributor = "COOPERATIVA SEM TABELA"
subsystem = "NE"
devices = ["{DEV_NE}"]
[[site]]
id = "sem-subsistema"
distributor = "COOPERATIVA SEM TABELA"
"""


def app_settings(influx: InfluxService, fake: FakeOns, db: str, sites_file: Path) -> Settings:
    """The app of these tests: ONS pulls from ``fake`` (2026 on, short retries), everything else that runs on its
    own switched off."""
    return Settings(influx_url=influx.url, influx_db=db, jwt_secret=JWT, ingest_enabled=False, rollup_enabled=False,
                    retention_raw="INF", log_level="WARNING", sites_file=str(sites_file), aneel_sync_enabled=False,
                    alerts_enabled=False, ons_base_url=fake.url, ons_first_year=2026, ons_attempts=2,
                    ons_backoff_max_s=0.05)


@asynccontextmanager
async def serving(settings: Settings, readings: Mapping[str, str] | None = None) -> AsyncIterator[
        AsyncTestClient[Any]]:
    """The app on ``settings.influx_db`` (a fresh database, dropped on leaving), with the known consumption of
    ``readings`` (site -> device) loaded, once its own scheduler's first ONS pull has succeeded."""
    try:
        if readings:
            await load_readings(settings, readings)
        app = create_app(settings)
        async with AsyncTestClient(app) as client:
            ons = app.state.services.ons
            # tests.conftest's helper itself: a module-scoped fixture cannot take the function-scoped fixture
            await poll_until_async(lambda: ons.scheduler.last_report is not None, timeout=60, what="first ONS pull")
            assert ons.scheduler.last_report.ok, ons.scheduler.last_report.errors
            yield client
    finally:
        async with InfluxClient(settings.influx_url) as c:
            await c.execute(f'DROP DATABASE "{settings.influx_db}"', epoch=None)


@asynccontextmanager
async def shared_app(influxdb: InfluxService, fake: FakeOns, stem: str, sites_toml: str,
                     folder: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    """A module's shared read-only app: ``sites_toml`` with the known consumption of "bh" (``DEV_SE``) and "natal"
    (``DEV_NE``), on a database unique to the module's run; InfluxDB started first if a fault test left it stopped
    (the session fixture, not the per-test ``influx``, is what a module-scoped fixture can take)."""
    sites = folder / "sites.toml"
    sites.write_text(sites_toml, encoding="utf-8")
    async with serving(app_settings(running_influx(influxdb), fake, module_db(stem), sites),
                       {"bh": DEV_SE, "natal": DEV_NE}) as client:
        yield client


@pytest.fixture(scope="module")
def module_fake() -> Iterator[FakeOns]:
    """The fake ONS of the module's shared app; no test changes it (those that do use ``fake``)."""
    with FakeOns(until=UNTIL) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_api(influxdb: InfluxService, module_fake: FakeOns,
                     tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app of the tests that only read: sites "bh" (Sudeste by its distributor) and "natal" (Nordeste by the
    sites file) with their known consumption, and "sem-subsistema"; ONS pulled once."""
    async with shared_app(influxdb, module_fake, "ons_api", SITES, tmp_path_factory.mktemp("ons_api")) as client:
        yield client


@pytest.fixture
def api(shared_api: AsyncTestClient[Any], influx: InfluxService) -> AsyncTestClient[Any]:
    """The module's shared app, for tests that only read (``@pytest.mark.asyncio(loop_scope="module")``): its
    data is the same whichever tests ran before; ``influx`` restarts InfluxDB if a fault test left it stopped."""
    return shared_api


@pytest_asyncio.fixture
async def fresh_api(influx: InfluxService, fake: FakeOns, unique_id: str,
                    tmp_path: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    """An app of its own, for a test that changes something (pulls, ONS or InfluxDB down); no readings: these
    tests ask only the ONS endpoints."""
    sites = tmp_path / "sites.toml"
    sites.write_text(SITES, encoding="utf-8")
    async with serving(app_settings(influx, fake, unique_id, sites)) as client:
        yield client


def auth(client: AsyncTestClient[Any], role: str = "viewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {client.app.state.authenticator.issue('tester', role)}"}


@pytest.mark.asyncio(loop_scope="module")
async def test_balance_by_hour_day_and_month_with_sin_as_the_sum_of_the_four(api: AsyncTestClient[Any]) -> None:
    h = auth(api)
    r = await api.get("/api/v1/ons/balanco", headers=h, params={
        "subsistema": "ne", "inicio": "2026-08-01", "fim": "2026-08-02", "granularidade": "hora"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["subsistema"], body["nome"], body["unidade"], len(body["buckets"])) == ("NE", "Nordeste", "MWh", 48)
    first = body["buckets"][0]
    model = SinModel(1).day(dt.date(2026, 8, 1))[0]["NE"]
    assert first["inicio"] == "2026-08-01T00:00:00-03:00" and first["eolica"] == pytest.approx(model["eolica"],
                                                                                               abs=1e-3)
    assert first["renovavel_pct"] == pytest.approx(
        100 * (model["hidraulica"] + model["eolica"] + model["solar"]) /
        (model["hidraulica"] + model["termica"] + model["eolica"] + model["solar"]), abs=0.01)

    r = await api.get("/api/v1/ons/balanco", headers=h, params={"inicio": "2026-01-01", "fim": "2026-12-31",
                                                                "granularidade": "mes"})
    months = r.json()
    assert r.status_code == 200 and months["subsistema"] == "SIN" and len(months["buckets"]) == 8
    assert months["buckets"][-1]["horas"] == 26 * 24 and months["buckets"][0]["horas"] == 31 * 24
    parts = []
    for s in ("SE", "S", "NE", "N"):
        parts.append((await api.get("/api/v1/ons/balanco", headers=h, params={
            "subsistema": s, "inicio": "2026-01-01", "fim": "2026-12-31", "granularidade": "mes"})).json()["totais"])
    for field in ("hidraulica", "termica", "eolica", "solar", "carga"):
        assert months["totais"][field] == pytest.approx(sum(p[field] for p in parts), rel=1e-9)
    assert months["totais"]["intercambio"] == pytest.approx(150.0 * 238 * 24, rel=1e-6)  # international only

    r = await api.get("/api/v1/ons/balanco", headers=h, params={"subsistema": "S", "granularidade": "dia"})
    days = r.json()  # no dates: the month up to the newest data held
    assert r.status_code == 200 and days["fim"] == "2026-08-26" and len(days["buckets"]) == 31
    assert days["idade_dos_dados"]["hora_mais_recente"] == "2026-08-26T23:00:00-03:00"


@pytest.mark.asyncio(loop_scope="module")
async def test_now_gives_each_subsystem_and_the_sin_with_the_datas_age(api: AsyncTestClient[Any]) -> None:
    r = await api.get("/api/v1/ons/agora", headers=auth(api))
    assert r.status_code == 200, r.text
    body = r.json()
    by = {s["subsistema"]: s for s in body["subsistemas"]}
    assert list(by) == ["SE", "S", "NE", "N", "SIN"] and body["unidade"] == "MWmed"
    assert {s["hora"] for s in by.values()} == {"2026-08-26T23:00:00-03:00"}
    assert set(by["NE"]["geracao"]) == {"hidraulica", "termica", "eolica", "solar"}
    assert by["SIN"]["carga"] == pytest.approx(sum(by[s]["carga"] for s in ("SE", "S", "NE", "N")), abs=0.01)
    assert by["SIN"]["intercambio"] == pytest.approx(150.0, abs=0.01)
    assert 0 < by["NE"]["renovavel_pct"] <= 100
    age = body["idade_dos_dados"]
    assert age["idade_s"] > 0 and age["ultima_sincronizacao"] and age["erro_ultima_tentativa"] == ""
    assert age["fonte"] == "influxdb"


@pytest.mark.asyncio(loop_scope="module")
async def test_cmo_half_hourly_per_subsystem(api: AsyncTestClient[Any]) -> None:
    h = auth(api)
    r = await api.get("/api/v1/ons/cmo", headers=h, params={"subsistema": "NE", "inicio": "2026-08-20",
                                                            "fim": "2026-08-20"})
    assert r.status_code == 200, r.text
    (series,) = r.json()["series"]
    model = SinModel(1).cmo_day(dt.date(2026, 8, 20))
    assert len(series["pontos"]) in (0, 48) and r.json()["unidade"] == "R$/MWh"
    if series["pontos"]:  # unless it is one of the model's missing days
        assert series["pontos"][1] == {"inicio": "2026-08-20T00:30:00-03:00",
                                       "rs_mwh": pytest.approx(round(model[1]["NE"], 2))}
    r = await api.get("/api/v1/ons/cmo", headers=h)
    assert r.status_code == 200 and [s["subsistema"] for s in r.json()["series"]] == ["SE", "S", "NE", "N"]
    assert r.json()["fim"] == "2026-08-26"


@pytest.mark.parametrize(("path", "params", "detail"), [
    ("/api/v1/ons/balanco", {"subsistema": "XX"}, "'subsistema' deve ser um de SE, S, NE, N, SIN."),
    ("/api/v1/ons/balanco", {"granularidade": "semana"}, "'granularidade' deve ser uma de hora, dia, mes."),
    ("/api/v1/ons/balanco", {"inicio": "2026-13-01"}, "'inicio' deve estar no formato AAAA-MM-DD."),
    ("/api/v1/ons/balanco", {"inicio": "2026-08-02", "fim": "2026-08-01"}, "'fim' é anterior a 'inicio'."),
    ("/api/v1/ons/balanco", {"inicio": "2026-01-01", "fim": "2026-12-31"},
     "Período máximo para esta consulta: 93 dias."),
    ("/api/v1/ons/balanco", {"fim": "1999-12-31"}, "'fim' deve estar entre 2000 e 2100 (o ONS publica dados "
                                                   "desde 2000)."),
    ("/api/v1/ons/balanco", {"fim": "99999-01-01"}, "'fim' deve estar no formato AAAA-MM-DD."),
    ("/api/v1/ons/cmo", {"subsistema": "SIN"}, "O CMO é publicado por subsistema (SE, S, NE, N), não para o SIN."),
    ("/api/v1/ons/cmo", {"subsistema": "' OR 1=1 --"}, "'subsistema' deve ser um de SE, S, NE, N."),
    ("/api/v1/analytics/renovavel", {"site": "nao-existe"}, "Site 'nao-existe' não configurado (BACKEND_SITES_FILE)."),
    ("/api/v1/analytics/renovavel", {"site": "bh", "inicio": "ontem"}, "Datas devem estar no formato AAAA-MM-DD."),
], ids=["subsystem", "granularity", "date", "reversed", "too-long", "before-2000", "huge-year", "cmo-sin",
        "injection", "unknown-site", "renovavel-date"])
@pytest.mark.asyncio(loop_scope="module")
async def test_bad_input_is_refused_in_portuguese_never_a_500(api: AsyncTestClient[Any], path: str,
                                                              params: dict[str, str], detail: str) -> None:
    r = await api.get(path, headers=auth(api), params=params)
    assert r.status_code in (400, 404), r.text
    assert r.json()["detail"] == detail


def expected_renewable(subsystem: str, days: list[dt.date]) -> tuple[float, float]:
    """Σ kWh × renewable share per hour, from the fake's own model (independent of the backend's code)."""
    kwh = renewable = 0.0
    model = SinModel(1)
    for day in days:
        for hour, per in enumerate(model.day(day)):
            v = per[subsystem]
            share = (v["hidraulica"] + v["eolica"] + v["solar"]) / (v["hidraulica"] + v["termica"] + v["eolica"]
                                                                   + v["solar"])
            kwh += kwh_at(hour)
            renewable += kwh_at(hour) * share
    return kwh, renewable


@pytest.mark.asyncio(loop_scope="module")
async def test_renewable_share_of_a_sites_known_consumption_hour_by_hour(api: AsyncTestClient[Any]) -> None:
    h = auth(api)
    r = await api.get("/api/v1/analytics/renovavel", headers=h, params={"site": "bh", "inicio": "2026-08-10",
                                                                        "fim": "2026-08-12"})
    assert r.status_code == 200, r.text
    body = r.json()
    kwh, renewable = expected_renewable("SE", DAYS[:3])
    assert (body["subsistema"], body["origem_subsistema"], body["kwh_total"]) == ("SE", "distribuidora", 54.0)
    assert body["kwh_renovavel"] == pytest.approx(renewable, abs=0.005)
    assert body["participacao_renovavel_pct"] == pytest.approx(100 * renewable / kwh, abs=0.01)
    assert body["horas_sem_dados_da_rede"] == 0 and len(body["dias"]) == 3 and body["dias"][0]["kwh"] == 18.0
    assert "hidráulica + eólica + solar" in body["metodo"] and len(body["limites"]) == 5

    r = await api.get("/api/v1/analytics/renovavel", headers=h, params={"site": "natal", "inicio": "2026-08-10",
                                                                        "fim": "2026-08-27"})
    body = r.json()
    assert r.status_code == 200 and (body["subsistema"], body["origem_subsistema"]) == ("NE", "site")
    assert body["horas_sem_dados_da_rede"] == 24 and body["kwh_sem_dados_da_rede"] == 18.0
    kwh, renewable = expected_renewable("NE", [dt.date(2026, 8, d) for d in range(10, 27)])
    assert body["kwh_com_dados_da_rede"] == kwh == body["kwh_total"] - 18.0
    assert body["kwh_renovavel"] == pytest.approx(renewable, abs=0.01)
    assert body["dias"][-1] == {"dia": "2026-08-27", "kwh": 18.0, "kwh_renovavel": 0.0, "participacao_pct": None}

    r = await api.get("/api/v1/analytics/renovavel", headers=h, params={"site": "sem-subsistema"})
    assert r.status_code == 409 and "defina 'subsystem'" in r.json()["detail"]

    r = await api.get("/api/v1/analytics/sites", headers=h)  # each site with its subsystem, as /renovavel uses it
    assert r.status_code == 200, r.text
    assert {s["id"]: (s["subsistema"], s["nome_subsistema"], s["origem_subsistema"]) for s in r.json()} == {
        "bh": ("SE", "Sudeste/Centro-Oeste", "distribuidora"), "natal": ("NE", "Nordeste", "site"),
        "sem-subsistema": (None, None, None)}


# --- tests that change something: an app, a database and a fake ONS of their own ----------------------------


@pytest.mark.asyncio
async def test_tokens_roles_and_the_admin_pull(fresh_api: AsyncTestClient[Any]) -> None:
    assert (await fresh_api.get("/api/v1/ons/agora")).status_code == 401
    assert (await fresh_api.post("/api/v1/ons/sync", headers=auth(fresh_api))).status_code == 403
    r = await fresh_api.post("/api/v1/ons/sync", headers=auth(fresh_api, "admin"))
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["files_read"] == 0
    assert {f["acao"] for f in r.json()["files"]} == {"inalterado"}


@pytest.mark.asyncio
async def test_ons_down_then_influxdb_down_the_last_good_data_is_served_with_its_age(
        fresh_api: AsyncTestClient[Any], fake: FakeOns, influx: Any) -> None:
    fake.down = True
    r = await fresh_api.post("/api/v1/ons/sync", headers=auth(fresh_api, "admin"))
    assert r.status_code == 200 and r.json()["ok"] is False and "ONS indisponível" in r.json()["errors"][0]
    r = await fresh_api.get("/api/v1/ons/agora", headers=auth(fresh_api))
    assert r.status_code == 200 and len(r.json()["subsistemas"]) == 5
    age = r.json()["idade_dos_dados"]
    assert "ONS indisponível" in age["erro_ultima_tentativa"] and age["ultima_sincronizacao"]
    assert age["hora_mais_recente"] == "2026-08-26T23:00:00-03:00"

    influx.stop()
    try:
        r = await fresh_api.get("/api/v1/ons/agora", headers=auth(fresh_api))
        assert r.status_code == 200, r.text
        assert r.json()["idade_dos_dados"]["fonte"] == "memoria" and len(r.json()["subsistemas"]) == 5
        assert r.json()["idade_dos_dados"]["desatualizado"] is True
        r = await fresh_api.get("/api/v1/ons/balanco", headers=auth(fresh_api), params={"fim": "2026-08-26"})
        assert r.status_code == 503 and "indisponível" in r.json()["detail"]
    finally:
        influx.start(timeout=60)
