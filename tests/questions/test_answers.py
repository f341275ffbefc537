"""``POST /api/v1/perguntas`` end to end: real InfluxDB with a real month of readings, the ANEEL pull from the fake
CKAN, and every number an answer gives checked against the analytics endpoint it names in ``consulta``."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from backend.errors import BadRequestError
from backend.questions.interpretation import Interpretation
from backend.questions.service import Contexto, QuestionService, Resposta
from devstack.aneel_fake import FakeCkan
from devstack.influxdb import InfluxService
from devstack.mosquitto import MosquittoService
from protocol.timebase import TZ
from tests.analytics.test_api import DEV1, app_settings, auth, serving, sites_toml
from tests.conftest import module_db, running_broker, running_influx

OFFICE = "00000000000000c3"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(mosquitto: MosquittoService, influxdb: InfluxService,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[AsyncTestClient[Any], str, str]]:
    """Two sites: the month of tests/analytics (DEV1 14 kWh/day, 16/04–15/05/2026) and an office without data.

    One server and database for the whole module: asking questions changes nothing on the server, so every test
    here only reads (``loop_scope="module"`` on them)."""
    db = module_db("answers_module")
    site = db.replace("_", "-")[:40]
    office = f"esc-{site}"[:40]
    sites = tmp_path_factory.mktemp("sites") / "sites.toml"
    sites.write_text(sites_toml(site) + f"""
[[site]]
id = "{office}"
name = "Escritório Centro"
distributor = "LIGHT SESA"
billing_day = 15
devices = ["{OFFICE}"]
""", encoding="utf-8")
    broker, influx = running_broker(mosquitto), running_influx(influxdb)
    with FakeCkan() as fake:
        async with serving(app_settings(broker, influx, db, sites, fake), site) as client:
            yield client, site, office


async def ask(client: AsyncTestClient[Any], pergunta: str, site: str | None = None,
              status: int = 200) -> dict[str, Any]:
    body: dict[str, Any] = {"pergunta": pergunta}
    if site is not None:
        body["site"] = site
    r = await client.post("/api/v1/perguntas", json=body, headers=auth(client))
    assert r.status_code == status, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def run(client: AsyncTestClient[Any], consulta: str) -> Any:
    """Run the ``GET ...`` an answer says it ran, as a client would."""
    method, url = consulta.split(" ", 1)
    assert method == "GET"
    r = await client.get(url, headers=auth(client))
    assert r.status_code == 200, r.text
    return r.json()


def values(answer: dict[str, Any], nome: str) -> list[Decimal]:
    return [Decimal(v["valor"]) for v in answer["valores"] if v["nome"] == nome]


@pytest.mark.asyncio(loop_scope="module")
async def test_consumption_answers_equal_the_consumption_endpoint(api: tuple[AsyncTestClient[Any], str, str]) -> None:
    client, site, office = api
    a = await ask(client, "Quanto consumi de 16 de abril a 15 de maio de 2026?", site)
    assert a["interpretacao"]["intencao"] == "consumo" and a["disponivel"] is True
    assert a["consulta"] == (f"GET /api/v1/analytics/consumo?site={site}&inicio=2026-04-16&fim=2026-05-15"
                             "&granularidade=day")
    direct = await run(client, a["consulta"])
    assert values(a, "consumo") == [Decimal(str(direct["kwh_total"]))] == [Decimal("420.0")]
    assert "420,0 kWh" in a["resposta"] and "de 16/04/2026 a 15/05/2026" in a["resposta"]

    a = await ask(client, "quanto a cozinha consumiu por dia em maio de 2026?", site)
    assert a["interpretacao"]["escopo"]["grupo"] == "cozinha" and a["interpretacao"]["granularidade"] == "day"
    assert "grupo=cozinha" in a["consulta"] and "inicio=2026-05-01&fim=2026-05-31" in a["consulta"]
    direct = await run(client, a["consulta"])
    total, *per_day = values(a, "consumo")
    assert total == Decimal(str(direct["kwh_total"])) == Decimal("210.0")
    assert per_day == [Decimal(str(b["kwh"])) for b in direct["buckets"]] and len(per_day) == 31
    assert "Maior consumo por dia: 14,0 kWh" in a["resposta"]

    # relative periods are resolved against the server's clock: yesterday has no readings, and says so
    yesterday = dt.datetime.now(TZ).date() - dt.timedelta(days=1)
    a = await ask(client, "qnto consumi ontem?", site)
    assert a["interpretacao"]["periodo"]["inicio"] == a["interpretacao"]["periodo"]["fim"] == yesterday.isoformat()
    direct = await run(client, a["consulta"])
    assert values(a, "consumo") == [Decimal(str(direct["kwh_total"]))] and a["avisos"]

    # the site is named in the question, not in the body
    a = await ask(client, "quanto consumiu o escritório centro em abril de 2026?")
    assert a["interpretacao"]["escopo"]["site"] == office and f"site={office}" in a["consulta"]
    assert values(a, "consumo") == [Decimal(str((await run(client, a["consulta"]))["kwh_total"]))] == [Decimal(0)]

    a = await ask(client, "qual foi a demanda máxima em maio de 2026?", site)
    assert a["interpretacao"]["intencao"] == "demanda"
    direct = await run(client, a["consulta"])
    assert values(a, "demanda_maxima") == [Decimal(str(direct["peak_kw"]))] == [Decimal("1.5")]
    assert "1,5 kW" in a["resposta"]


@pytest.mark.asyncio(loop_scope="module")
async def test_bill_tarifa_branca_and_bandeira_answers_equal_their_endpoints(
        api: tuple[AsyncTestClient[Any], str, str]) -> None:
    client, site, _ = api
    # "a conta de maio" is the cycle read in May: 16/04–15/05, the hand-computed bill of test_billing_month
    a = await ask(client, "quanto deu a conta de maio de 2026?", site)
    assert a["consulta"] == f"GET /api/v1/analytics/custo?site={site}&referencia=2026-05-15"
    conta = (await run(client, a["consulta"]))["conta"]
    assert values(a, "total") == [Decimal(conta["total"])] == [Decimal("528.28")]
    assert values(a, "consumo") == [Decimal(conta["kwh_total"])] and values(a, "tributos")
    assert "R$ 528,28" in a["resposta"] and "de 16/04/2026 a 15/05/2026" in a["resposta"]
    assert a["interpretacao"]["periodo"]["inicio"] == "2026-04-16"

    a = await ask(client, "qto gastei de luz de 16/04/2026 a 15/05/2026", site)
    assert a["consulta"] == f"GET /api/v1/analytics/custo?site={site}&inicio=2026-04-16&fim=2026-05-15"
    assert values(a, "total") == [Decimal((await run(client, a["consulta"]))["conta"]["total"])]

    a = await ask(client, "compensa a tarifa branca de 16/04/2026 a 15/05/2026?", site)
    tb = await run(client, a["consulta"])
    assert values(a, "branca") == [Decimal(tb["branca"]["total"])] == [Decimal("558.58")]
    assert values(a, "convencional") == [Decimal(tb["convencional"]["total"])] == [Decimal("528.28")]
    assert values(a, "economia_com_branca") == [Decimal(tb["saving_rs"])] == [Decimal("-30.30")]
    assert "R$ 30,30 mais cara" in a["resposta"]

    a = await ask(client, "qual foi a bandeira de maio de 2026?")
    months = {m["mes"]: m for m in (await run(client, a["consulta"]))["meses"]}
    assert [v["detalhe"] for v in a["valores"]] == [months["2026-05-01"]["bandeira"]] == ["Amarela"]
    assert values(a, "adicional_bandeira") == [Decimal(months["2026-05-01"]["adicional_rs_mwh"])]
    assert "R$ 18,85 por MWh" in a["resposta"]

    a = await ask(client, "relatório mensal de 16/04/2026 a 15/05/2026", site)
    rep = await run(client, a["consulta"])
    assert values(a, "consumo")[0] == Decimal(str(rep["total_kwh"])) == Decimal("420.0")
    assert values(a, "custo_estimado") == [Decimal(rep["total_cost_rs"])]

    a = await ask(client, "quanto vou gastar este mês?", site)  # this month: what was used + the forecast
    fc = await run(client, a["consulta"])
    kwh = Decimal(str(round(fc["forecast"]["rest_of_month"]["kwh"] + fc["month_to_date_kwh"], 3)))
    assert values(a, "consumo_previsto") == [kwh]
    assert values(a, "custo_previsto") == [(kwh * Decimal(fc["price_rs_kwh"])).quantize(Decimal("0.01"))]

    a = await ask(client, "tá caro?", site)  # no period: the running billing cycle, as /custo without dates
    today = dt.datetime.now(TZ).date()
    assert a["consulta"] == f"GET /api/v1/analytics/custo?site={site}&referencia={today.isoformat()}"
    assert values(a, "total") == [Decimal((await run(client, a["consulta"]))["conta"]["total"])]

    a = await ask(client, "previsão de consumo do medidor a1")
    assert a["consulta"] == f"GET /api/v1/analytics/previsao?device={DEV1}"
    fc = await run(client, a["consulta"])
    assert values(a, "consumo_previsto") == [Decimal(str(fc["forecast"]["next_7_days"]["kwh"]))]


@pytest.mark.asyncio(loop_scope="module")
async def test_knowledge_answers_cite_their_source_and_grid_answers_without_ons_data_give_no_number(
        api: tuple[AsyncTestClient[Any], str, str]) -> None:
    client, _, _ = api
    a = await ask(client, "o que é bandeira tarifária?")
    assert a["disponivel"] is True and a["interpretacao"]["termo"] == "bandeira tarifaria"
    (cited,) = a["citacoes"]
    assert cited["ref"] == "backend/knowledge/artigos/bandeiras-tarifarias.md"
    assert cited["fonte"].startswith("ANEEL — REN nº 1.000/2021") and f"(Fonte: {cited['fonte']}.)" in a["resposta"]
    assert a["resposta"].startswith("Bandeiras tarifárias: A bandeira tarifária é um acréscimo mensal")
    assert a["consulta"] == "GET /api/v1/conhecimento?q=bandeira+tarifaria"
    best = (await run(client, a["consulta"]))["passages"][0]
    assert (best["ref"], best["source"], best["title"]) == (cited["ref"], cited["fonte"], cited["titulo"])

    a = await ask(client, "por que minha conta veio tão alta?")
    assert a["disponivel"] is True and a["citacoes"][0]["ref"].endswith("por-que-a-conta-mudou.md")

    a = await ask(client, "o que é a geladeira?")  # no article is about it: said so, related ones only named
    assert a["disponivel"] is False and a["resposta"].startswith(
        "Não encontrei na base de conhecimento um texto que explique “geladeira”.")
    assert a["citacoes"] and "Artigos que mencionam essas palavras" in a["resposta"]

    # ONS never pulled on this server (ons_sync_enabled=False): the grid questions are understood, not answered
    a = await ask(client, "Qual é a geração eólica no Nordeste agora?")
    assert a["disponivel"] is False and a["valores"] == [] and a["consulta"] == "GET /api/v1/ons/agora"
    assert a["resposta"].startswith("Ainda não há dados da rede elétrica (ONS) neste servidor: nenhuma "
                                    "sincronização com o ONS foi feita ainda.")
    assert (a["interpretacao"]["intencao"], a["interpretacao"]["fonte"], a["interpretacao"]["subsistema"]) == (
        "geracao", "eolica", "NE")
    for pergunta in ("carga do sul ontem", "qual o cmo hoje?", "participação renovável no nordeste em maio"):
        a = await ask(client, pergunta)
        assert a["disponivel"] is False and a["valores"] == [], a
        assert a["resposta"].startswith("Ainda não há dados da rede elétrica (ONS) neste servidor"), a


@pytest.mark.asyncio(loop_scope="module")
async def test_alerts_meters_and_what_the_server_cannot_answer(api: tuple[AsyncTestClient[Any], str, str]) -> None:
    client, site, _ = api
    a = await ask(client, "quanto consumiu a geladeira ontem?", site)
    assert a["resposta"].startswith("Não sei responder a essa pergunta.") and "geladeira" in a["resposta"]
    assert a["exemplos"] and a["interpretacao"]["intencao"] == "desconhecido" and a["valores"] == []
    a = await ask(client, "tem algum alerta?", site)
    alerts = (await run(client, a["consulta"]))[0]["alerts"]
    assert values(a, "alertas") == [Decimal(len(alerts))] == [Decimal(2)]  # both meters offline since May
    a = await ask(client, "quais medidores estão funcionando?", site)
    assert values(a, "medidores") == [Decimal(2)] and values(a, "sem_comunicacao") == [Decimal(2)]
    assert f"{DEV1} (cozinha)" in a["resposta"]

    assert (await ask(client, "   ", site, status=400))["detail"] == "Escreva uma pergunta."
    assert "no máximo 300" in (await ask(client, "consumo " * 40, site, status=400))["detail"]
    assert (await ask(client, "quanto consumi ontem?", "nao-existe", status=404))["detail"] == (
        "Site 'nao-existe' não configurado.")
    detail = (await ask(client, "quanto consumi ontem?", status=400))["detail"]  # two sites, none named
    assert detail.startswith("Informe o site da pergunta")
    r = await client.post("/api/v1/perguntas", json={"pergunta": "quanto consumi ontem?"})
    assert r.status_code == 401


@pytest.mark.asyncio
async def test_handlers_come_from_the_registry_and_a_single_site_is_the_default() -> None:
    async def echo(q: Interpretation, ctx: Contexto) -> Resposta:
        return Resposta(resposta=ctx.site.id if ctx.site else "-", disponivel=True, interpretacao=q)

    now = dt.datetime(2026, 5, 20, 10, tzinfo=TZ)
    casa = SimpleNamespace(id="casa", name="Casa", groups={}, devices=[])
    one = QuestionService(SimpleNamespace(sites={"casa": casa}), {"consumo": echo})  # type: ignore[arg-type]
    r = await one.answer("quanto consumi ontem?", None, now)
    assert r.resposta == "casa" and r.interpretacao.escopo.site == "casa"
    r = await one.answer("quanto custou ontem?", None, now)  # no handler registered for custo
    assert r.disponivel is False and "não está disponível" in r.resposta
    r = await one.answer("geração solar no sul hoje", None, now)  # the grid is about no site
    assert r.disponivel is False and r.interpretacao.escopo.site is None and r.interpretacao.subsistema == "S"

    loja = SimpleNamespace(id="loja", name="Loja", groups={}, devices=[])
    two = QuestionService(SimpleNamespace(sites={"casa": casa, "loja": loja}), {"consumo": echo})  # type: ignore[arg-type]
    assert (await two.answer("quanto a loja consumiu ontem?", None, now)).resposta == "loja"
    with pytest.raises(BadRequestError, match="fala do site 'loja'"):
        await two.answer("quanto a loja consumiu ontem?", "casa", now)
    with pytest.raises(BadRequestError, match="Informe o site"):
        await two.answer("quanto consumi ontem?", None, now)
