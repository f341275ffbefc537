"""Grid questions end to end: the app pulls from the fake ONS into the real InfluxDB, then ``POST /api/v1/perguntas``
answers generation, load, CMO and renewable share — of a subsystem and of a site's own kWh — and every number an
answer gives is checked against the endpoint it names in ``consulta``. Where ONS has published nothing yet
("hoje"), the answer says so with the newest hour held instead of giving a number.

Asking changes nothing, so the tests share one app, database and fake ONS for the module (loading the readings,
the first pull and the app's start cost seconds)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from devstack.influxdb import InfluxService
from devstack.ons_fake import FakeOns
from protocol.timebase import TZ
from tests.ons.conftest import UNTIL
from tests.ons.test_api import DEV_NE, DEV_SE, auth, shared_app

NEWEST = "2026-08-26T23:00:00-03:00"
"""The newest hour the fake has published (UNTIL, 23 h)."""


SITES = f"""
[[site]]
id = "bh"
name = "Casa em BH"
distributor = "CEMIG-D"
devices = ["{DEV_SE}"]
[[site]]
id = "natal"
name = "Casa em Natal"
distributor = "COOPERATIVA SEM TABELA"
subsystem = "NE"
devices = ["{DEV_NE}"]
"""


@pytest.fixture(scope="module")
def module_fake() -> Iterator[FakeOns]:
    with FakeOns(until=UNTIL) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_api(influxdb: InfluxService, module_fake: FakeOns,
                     tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncTestClient[Any]]:
    """Two sites with the known consumption of tests/ons (2 kWh/h from 10 h to 14 h, 0.5 kWh/h otherwise, from
    10/08/2026): "bh" in the Sudeste by its distributor, "natal" in the Nordeste by the sites file."""
    folder = tmp_path_factory.mktemp("grid_answers")
    async with shared_app(influxdb, module_fake, "grid_answers", SITES, folder) as client:
        yield client


@pytest.fixture
def api(shared_api: AsyncTestClient[Any], influx: InfluxService) -> AsyncTestClient[Any]:
    """The module's app (``influx``: InfluxDB restarted first if an earlier test left it stopped)."""
    return shared_api


async def ask(client: AsyncTestClient[Any], pergunta: str, site: str | None = None) -> dict[str, Any]:
    body = {"pergunta": pergunta} | ({"site": site} if site else {})
    r = await client.post("/api/v1/perguntas", json=body, headers=auth(client))
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def run(client: AsyncTestClient[Any], consulta: str) -> Any:
    """Run the ``GET ...`` an answer says it ran, as a client would."""
    method, url = consulta.split(" ", 1)
    assert method == "GET"
    r = await client.get(url, headers=auth(client))
    assert r.status_code == 200, r.text
    return r.json()


def dec(value: object) -> Decimal:
    return Decimal(str(value))


def named(answer: dict[str, Any]) -> dict[str, Decimal]:
    """The answer's values that belong to the whole period (no ``inicio``), by name."""
    return {v["nome"]: Decimal(v["valor"]) for v in answer["valores"] if "inicio" not in v}


@pytest.mark.asyncio(loop_scope="module")
async def test_now_answers_are_the_newest_published_hour_of_ons_agora(api: AsyncTestClient[Any]) -> None:
    a = await ask(api, "qual a geração solar no nordeste agora?")
    assert a["disponivel"] is True and a["consulta"] == "GET /api/v1/ons/agora"
    assert (a["interpretacao"]["fonte"], a["interpretacao"]["subsistema"]) == ("solar", "NE")
    assert a["interpretacao"]["periodo"] == {"inicio": "2026-08-26", "fim": "2026-08-26", "tipo": "agora",
                                             "texto": "agora"}
    now = {s["subsistema"]: s for s in (await run(api, a["consulta"]))["subsistemas"]}
    (solar,) = a["valores"]
    assert (solar["nome"], solar["unidade"], solar["inicio"], solar["detalhe"]) == ("solar", "MWmed", NEWEST, "NE")
    assert Decimal(solar["valor"]) == dec(now["NE"]["geracao"]["solar"])
    assert "26/08/2026 às 23:00" in a["resposta"] and "a mais recente publicada pelo ONS" in a["resposta"]
    assert "encerrada há" in a["resposta"] and "Dados do ONS desatualizados" in a["avisos"][0]  # the fake is old

    a = await ask(api, "geração no sudeste agora")  # the mix: every source, the total and the renewable share
    entry = now["SE"]
    assert named(a) == {} and {v["nome"] for v in a["valores"]} == {
        "hidraulica", "termica", "eolica", "solar", "geracao_total", "renovavel_pct"}
    for v in a["valores"]:
        expected = entry["geracao"].get(v["nome"], entry.get(v["nome"]))
        assert Decimal(v["valor"]) == dec(expected), v
    assert "renováveis:" in a["resposta"] and "hidráulica" in a["resposta"]

    a = await ask(api, "carga do sul agora")
    values = {v["nome"]: Decimal(v["valor"]) for v in a["valores"]}
    assert values == {"carga": dec(now["S"]["carga"]), "intercambio": dec(now["S"]["intercambio"])}

    a = await ask(api, "quanto da energia agora é renovável?")  # no subsystem named: the whole SIN
    assert a["interpretacao"]["subsistema"] == "SIN"
    assert [Decimal(v["valor"]) for v in a["valores"]] == [dec(now["SIN"]["renovavel_pct"])]
    assert a["valores"][0]["unidade"] == "%"

    a = await ask(api, "qual o cmo do nordeste agora?")  # the newest half-hour and the mean of its 7 days
    assert a["consulta"] == "GET /api/v1/ons/cmo?subsistema=NE&inicio=2026-08-20&fim=2026-08-26"
    (series,) = (await run(api, a["consulta"]))["series"]
    latest = next(v for v in a["valores"] if v["nome"] == "cmo")
    assert (latest["inicio"], Decimal(latest["valor"])) == (series["pontos"][-1]["inicio"],
                                                            dec(series["pontos"][-1]["rs_mwh"]))
    assert next(Decimal(v["valor"]) for v in a["valores"] if v["nome"] == "media") == dec(series["media"])
    assert "/MWh" in a["resposta"] and "Nordeste" in a["resposta"]

    a = await ask(api, "cmo no brasil agora")  # there is no CMO of the SIN: the four, said so
    assert a["consulta"] == "GET /api/v1/ons/cmo?inicio=2026-08-20&fim=2026-08-26"
    assert {v["detalhe"] for v in a["valores"]} == {"SE", "S", "NE", "N"}
    assert any("não existe um CMO do SIN" in w for w in a["avisos"])


@pytest.mark.asyncio(loop_scope="module")
async def test_period_answers_equal_the_balance_and_cmo_endpoints(api: AsyncTestClient[Any]) -> None:
    a = await ask(api, "geração eólica no nordeste de 10/08/2026 a 12/08/2026")
    assert a["consulta"] == ("GET /api/v1/ons/balanco?subsistema=NE&inicio=2026-08-10&fim=2026-08-12"
                             "&granularidade=dia")
    body = await run(api, a["consulta"])
    assert named(a) == {"eolica": dec(body["totais"]["eolica"])} and a["valores"][0]["unidade"] == "MWh"
    assert a["interpretacao"]["unidade"] == "MWh"
    assert [w for w in a["avisos"] if not w.startswith("Dados do ONS desatualizados")] == []  # every hour there
    assert "de 10/08/2026 a 12/08/2026" in a["resposta"] and "MWmed" in a["resposta"]

    a = await ask(api, "carga do nordeste por hora em 11/08/2026")  # a value per hour, each the endpoint's
    assert a["interpretacao"]["granularidade"] == "hour" and "granularidade=hora" in a["consulta"]
    body = await run(api, a["consulta"])
    per_hour = {v["inicio"]: Decimal(v["valor"]) for v in a["valores"] if "inicio" in v}
    assert per_hour == {b["inicio"]: dec(b["carga"]) for b in body["buckets"]} and len(per_hour) == 24
    assert named(a) == {"carga": dec(body["totais"]["carga"])}

    a = await ask(api, "geração no nordeste em agosto de 2026")  # the mix over a month ONS published in part
    body = await run(api, a["consulta"])
    assert named(a) == {k: dec(body["totais"][k]) for k in (
        "hidraulica", "termica", "eolica", "solar", "geracao_total", "renovavel_pct")}
    assert any("Só há dados do ONS para 624 das 744 horas" in w for w in a["avisos"])

    a = await ask(api, "renovável no SIN de 01/08/2026 a 26/08/2026")
    body = await run(api, a["consulta"])
    assert named(a) == {"renovavel_pct": dec(body["totais"]["renovavel_pct"])} and "%" in a["resposta"]

    a = await ask(api, "cmo do sul por hora em 20/08/2026")
    body = await run(api, a["consulta"])
    (series,) = body["series"]
    assert {k: Decimal(v) for k, v in named(a).items()} == {k: dec(series[k]) for k in ("media", "minimo", "maximo")}
    points = {v["inicio"]: Decimal(v["valor"]) for v in a["valores"] if v["nome"] == "cmo"}
    assert points == {p["inicio"]: dec(p["rs_mwh"]) for p in series["pontos"]}
    assert "O CMO é publicado por meia hora: os valores são semi-horários." in a["avisos"]

    # ONS publishes a day or two late: today has nothing yet, and the answer says so instead of a number
    a = await ask(api, "geração solar no nordeste hoje")
    today = dt.datetime.now(TZ).date()
    assert a["disponivel"] is False and a["valores"] == []
    assert a["resposta"].startswith(f"Ainda não há dados do ONS em {today:%d/%m/%Y}: a hora mais recente publicada "
                                    "pelo ONS é a de 26/08/2026 às 23:00")
    assert (await run(api, a["consulta"]))["buckets"] == []


@pytest.mark.asyncio(loop_scope="module")
async def test_renewable_share_of_my_consumption_equals_analytics_renovavel(api: AsyncTestClient[Any]) -> None:
    a = await ask(api, "quanto do meu consumo foi renovável de 10/08/2026 a 12/08/2026?", "bh")
    assert a["consulta"] == "GET /api/v1/analytics/renovavel?site=bh&inicio=2026-08-10&fim=2026-08-12"
    assert a["interpretacao"]["escopo"]["usuario"] is True and a["interpretacao"]["subsistema"] == "SE"
    body = await run(api, a["consulta"])
    assert named(a) == {k: dec(body[k]) for k in ("participacao_renovavel_pct", "kwh_renovavel",
                                                   "kwh_com_dados_da_rede", "kwh_total",
                                                   "participacao_media_da_rede_pct")}
    assert body["kwh_total"] == 54.0 and "Sudeste/Centro-Oeste" in a["resposta"] and "54,0 kWh" in a["resposta"]

    # the site named in the question; the days ONS has not published are left out, and said so
    a = await ask(api, "quanto da energia de natal foi renovável de 10/08/2026 a 27/08/2026?")
    body = await run(api, a["consulta"])
    assert "site=natal" in a["consulta"] and a["interpretacao"]["subsistema"] == "NE"
    assert named(a)["participacao_renovavel_pct"] == dec(body["participacao_renovavel_pct"])
    assert any(w.startswith("24 hora(s) de consumo (18,0 kWh) sem dados do ONS") for w in a["avisos"])

    a = await ask(api, "minha energia veio de fontes renováveis?", "bh")  # this month: nothing measured
    assert a["disponivel"] is False and a["valores"] == [] and "nenhum consumo medido" in a["resposta"]
