"""ANEEL client against the local fake CKAN: shapes, paging, parsing and every fault the portal shows."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio

from backend.aneel.client import AneelClient, AneelNotFound, AneelUnavailable, AneelUnknownAction, AneelValidationError
from backend.aneel.records import (
    BANDEIRA_ACIONAMENTO_RESOURCE,
    TARIFFS_RESOURCE,
    AneelFormatError,
    parse_decimal,
    parse_tariff,
)
from devstack.aneel_fake import FakeCkan
from devstack.aneel_rows import tariff_row


@pytest.fixture
def fake() -> Iterator[FakeCkan]:
    server = FakeCkan(bulk=2500).start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def client(fake: FakeCkan) -> AsyncIterator[AneelClient]:
    async with AneelClient(fake.url, timeout_s=0.5, attempts=4, backoff_s=0.01, backoff_max_s=0.05) as c:
        yield c


@pytest.mark.parametrize(("text", "value"), [
    ("593,08", "593.08"), (",00", "0.00"), ("1172,93", "1172.93"), ("1.361,78", "1361.78"), ("18,85", "18.85"),
    ("7", "7"), (" 44,63 ", "44.63"),
])
def test_parse_decimal_comma_formats(text: str, value: str) -> None:
    assert parse_decimal(text) == Decimal(value)


@pytest.mark.parametrize("bad", ["", "abc", "1.5", "12,3,4", "--1,0"])
def test_parse_decimal_rejects_garbage(bad: str) -> None:
    with pytest.raises(AneelFormatError):
        parse_decimal(bad)


def test_units_follow_dsc_unidade_terciaria() -> None:
    mwh = parse_tariff(tariff_row("R", "X", "1", "2026-01-01", "2026-12-31", "B1", "Convencional", "Não se aplica",
                                  "593,08", "310,21"))
    kw = parse_tariff(tariff_row("R", "X", "1", "2026-01-01", "2026-12-31", "A2", "Azul", "Fora ponta", "10,97",
                                 ",00", unit="kW"))
    assert (mwh.tusd_unit, mwh.energy_rs_kwh) == ("R$/MWh", Decimal("0.90329"))
    assert (kw.tusd_unit, kw.tusd, kw.te_rs_mwh, kw.cnpj) == ("R$/kW", Decimal("10.97"), Decimal("0.00"),
                                                             "00000000000001")
    with pytest.raises(ValueError):
        _ = kw.energy_rs_kwh


@pytest.mark.asyncio
async def test_response_envelope_matches_ckan(fake: FakeCkan) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{fake.url}/api/3/action/datastore_search", params={
            "resource_id": TARIFFS_RESOURCE, "filters": json.dumps({"SigAgente": "CEMIG-D", "DscSubGrupo": "B1"}),
            "sort": "DatInicioVigencia desc", "limit": 1})
    body = r.json()
    assert body["success"] is True and body["help"].endswith("help_show?name=datastore_search")
    res = body["result"]
    assert list(res)[:5] == ["include_total", "limit", "records_format", "resource_id",
                             "total_estimation_threshold"]
    assert res["records"][0]["DatInicioVigencia"] == "2026-05-28"
    assert res["records"][0]["VlrTUSD"] in ("593,08", "553,12", "418,31")
    assert isinstance(res["records"][0]["_id"], int)
    assert res["_links"]["next"].endswith("offset=1") and "offset" not in res["_links"]["start"]
    assert res["total"] > 1 and res["fields"][0] == {"id": "_id", "type": "int"}


@pytest.mark.asyncio
async def test_paging_reads_every_row_with_include_total_false(fake: FakeCkan, client: AneelClient) -> None:
    rows = await client.tariffs({"SigAgente": "DIST-LOTE"})
    assert len(rows) == 2500
    assert len({r.start for r in rows}) == 2500
    calls = fake.action_calls()
    assert [c.get("offset") for c in calls] == [None, "1000", "2000"]
    assert all(c["include_total"] == "false" and c["limit"] == "1000" for c in calls)


@pytest.mark.asyncio
async def test_paging_follows_a_server_capped_limit(fake: FakeCkan) -> None:
    fake.rows_max = 300
    async with AneelClient(fake.url, page_size=1000, backoff_s=0.01) as c:
        rows = await c.records(TARIFFS_RESOURCE, filters={"SigAgente": "DIST-LOTE"})
    assert len(rows) == 2500
    assert len(fake.action_calls()) == 9  # 8 full pages of 300 + a short one


@pytest.mark.asyncio
async def test_list_filter_means_in(client: AneelClient) -> None:
    rows = await client.tariffs({"NumCNPJDistribuidora": "06981180000116", "DscSubGrupo": ["B1", "A2"]})
    assert {r.subgroup for r in rows} == {"B1", "A2"}


@pytest.mark.asyncio
async def test_http_404_unknown_resource_is_not_retried(fake: FakeCkan, client: AneelClient) -> None:
    with pytest.raises(AneelNotFound) as err:
        await client.records("00000000-0000-0000-0000-000000000000")
    assert err.value.status == 404 and err.value.kind == "Not Found Error"
    assert "was not found" in str(err.value)
    assert len(fake.action_calls()) == 1


@pytest.mark.asyncio
async def test_http_409_unknown_filter_field_is_a_validation_error(fake: FakeCkan, client: AneelClient) -> None:
    with pytest.raises(AneelValidationError) as err:
        await client.tariffs({"Distribuidora": "CEMIG-D"})
    assert err.value.status == 409
    assert err.value.error["filters"] == ['invalid value "Distribuidora"']
    assert len(fake.action_calls()) == 1


@pytest.mark.asyncio
async def test_datastore_search_sql_unknown_action(client: AneelClient) -> None:
    with pytest.raises(AneelUnknownAction) as err:
        await client.datastore_search_sql('SELECT * FROM "fcf2906c-7c32-4b9b-a637-054e7a5234f4"')
    assert err.value.error == "Bad request - Action name not known: datastore_search_sql"


@pytest.mark.asyncio
async def test_http_500_then_success_is_retried(fake: FakeCkan, client: AneelClient) -> None:
    fake.inject("500", count=2)
    rows = await client.bandeira_months()
    assert len(rows) == 24 and client.retries == 2


@pytest.mark.asyncio
async def test_html_maintenance_page_is_retried(fake: FakeCkan, client: AneelClient) -> None:
    fake.inject("html")
    fake.inject("html200")
    rows = await client.bandeira_adders()
    assert {r.flag for r in rows} >= {"Amarela", "Vermelha P1", "Vermelha P2", "Escassez Hídrica"}
    assert client.retries == 2


@pytest.mark.asyncio
async def test_slow_response_times_out_then_retry_succeeds(fake: FakeCkan, client: AneelClient) -> None:
    fake.inject("slow", delay=1.5)  # client timeout is 0.5 s
    rows = await client.bandeira_months()
    assert len(rows) == 24 and client.retries == 1


@pytest.mark.asyncio
async def test_dropped_connection_is_retried(fake: FakeCkan, client: AneelClient) -> None:
    fake.inject("drop")
    assert len(await client.bandeira_months()) == 24


@pytest.mark.asyncio
async def test_persistent_500_raises_unavailable_after_all_attempts(fake: FakeCkan, client: AneelClient) -> None:
    fake.inject("500", count=10)
    with pytest.raises(AneelUnavailable) as err:
        await client.bandeira_months()
    assert err.value.attempts == 4 and len(fake.action_calls()) == 4


@pytest.mark.asyncio
async def test_bad_record_is_skipped_and_counted_not_fatal(fake: FakeCkan, client: AneelClient) -> None:
    fake.add_records(BANDEIRA_ACIONAMENTO_RESOURCE, [
        {"DatGeracaoConjuntoDados": "2026-10-05", "DatCompetencia": "2026-10-01", "NomBandeiraAcionada": "Verde",
         "VlrAdicionalBandeira": "n/d"}])
    rows = await client.bandeira_months()
    assert len(rows) == 24 and client.skipped_records == 1


@pytest.mark.asyncio
async def test_bandeira_values_parsed_in_rs_per_mwh(client: AneelClient) -> None:
    months = {m.month: m for m in await client.bandeira_months()}
    assert months[dt.date(2026, 5, 1)].flag == "Amarela"
    assert months[dt.date(2026, 5, 1)].adder_rs_mwh == Decimal("18.85")
    assert months[dt.date(2026, 1, 1)].adder_rs_mwh == Decimal("0")


@pytest.mark.asyncio
async def test_cnpj_of_renamed_distributor(client: AneelClient) -> None:
    assert await client.cnpj_of("RGE SUL") == await client.cnpj_of("RGE") == "02016440000162"


@pytest.mark.asyncio
async def test_post_json_body_and_q_search(fake: FakeCkan) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{fake.url}/api/3/action/datastore_search", json={
            "resource_id": BANDEIRA_ACIONAMENTO_RESOURCE, "q": "2025-09", "limit": 5})
    res = r.json()["result"]
    assert [x["DatCompetencia"] for x in res["records"]] == ["2025-09-01"]
    assert "rank" in res["records"][0]
    assert res["_links"]["next"] == "/api/3/action/datastore_search?offset=5"


@pytest.mark.asyncio
async def test_package_show_resource_show_and_csv_download(fake: FakeCkan) -> None:
    async with httpx.AsyncClient() as http:
        pkg = (await http.get(f"{fake.url}/api/3/action/package_show",
                              params={"id": "bandeiras-tarifarias"})).json()["result"]
        assert {r["id"] for r in pkg["resources"]} >= {BANDEIRA_ACIONAMENTO_RESOURCE}
        res = (await http.get(f"{fake.url}/api/3/action/resource_show",
                              params={"id": TARIFFS_RESOURCE})).json()["result"]
        csv_resp = await http.get(res["url"])
    text = csv_resp.content.decode("utf-8")
    header, first = text.split("\r\n")[:2]
    assert header.startswith('"DatGeracaoConjuntoDados";"DscREH";"SigAgente"') and header.count(";") == 16
    assert '"593,08";"310,21"' in first
