"""``POST /api/v1/consultas/influxql`` end to end against an InfluxDB with authentication on: admin only,
one read-only statement, row cap, time-range cap, timeout, and the setup of the READ-only user."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from devstack.influxdb import InfluxService
from tests.consultas.conftest import auth, console_settings, drop

URL = "/api/v1/consultas/influxql"
RECENT = "time > now() - 2h"


def count(influx: InfluxService, db: str) -> int:
    rows = influx.rows('SELECT count(p) FROM "readings"', db=db)
    return int(rows[0]["count"]) if rows else 0


@pytest.mark.asyncio
async def test_setup_creates_a_user_that_may_only_read_the_backends_database(
        console: AsyncTestClient[Any], secure_influx: InfluxService, unique_id: str) -> None:
    users = {u["user"]: u["admin"] for u in secure_influx.rows("SHOW USERS", epoch=None)}
    assert users[f"ro_{unique_id}"] is False
    grants = secure_influx.rows(f'SHOW GRANTS FOR "ro_{unique_id}"', epoch=None)
    assert [(g["database"], g["privilege"]) for g in grants] == [(unique_id, "READ")]


@pytest.mark.asyncio
@pytest.mark.parametrize("role", ["viewer", "operator"])
async def test_only_admins_may_use_the_console(console: AsyncTestClient[Any], role: str) -> None:
    r = await console.post(URL, json={"consulta": "SHOW MEASUREMENTS"}, headers=auth(console, role))
    assert r.status_code == 403
    assert "admin" in r.json()["detail"]
    assert (await console.post(URL, json={"consulta": "SHOW MEASUREMENTS"})).status_code == 401


@pytest.mark.asyncio
async def test_admin_runs_a_select(console: AsyncTestClient[Any], unique_id: str) -> None:
    q = f"SELECT p FROM readings WHERE {RECENT} AND device = '00000000000000a1' LIMIT 5"
    r = await console.post(URL, json={"consulta": q + ";"}, headers=auth(console))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["consulta"] == q and body["db"] == unique_id
    assert body["linhas"] == 5 and body["truncada"] is False and body["limite_linhas"] == 20
    [series] = body["series"]
    assert series["name"] == "readings" and series["columns"] == ["time", "p"]
    assert [v[1] for v in series["values"]] == [1, 3, 5, 7, 9]
    assert isinstance(series["values"][0][0], int)  # epoch ms, like the rest of the API


@pytest.mark.asyncio
async def test_show_statements_explore_the_schema(console: AsyncTestClient[Any], unique_id: str) -> None:
    r = await console.post(URL, json={"consulta": "SHOW MEASUREMENTS"}, headers=auth(console))
    assert r.status_code == 200, r.text
    assert r.json()["series"][0]["values"] == [["readings"]]
    r = await console.post(URL, json={"consulta": "SHOW DATABASES"}, headers=auth(console))
    assert r.json()["series"][0]["values"] == [[unique_id]]  # InfluxDB lists only what the user may read
    r = await console.post(URL, json={"consulta": "SHOW TAG VALUES WITH KEY = device"}, headers=auth(console))
    assert [v[1] for v in r.json()["series"][0]["values"]] == ["00000000000000a0", "00000000000000a1"]


@pytest.mark.asyncio
async def test_rollups_are_not_time_capped(console: AsyncTestClient[Any]) -> None:
    r = await console.post(URL, json={"consulta": "SELECT * FROM r1h.readings"}, headers=auth(console))
    assert r.status_code == 200, r.text
    assert r.json()["linhas"] == 0


@pytest.mark.asyncio
async def test_row_cap_truncates_the_answer(console: AsyncTestClient[Any]) -> None:
    r = await console.post(URL, json={"consulta": f"SELECT p FROM readings WHERE {RECENT}"}, headers=auth(console))
    body = r.json()
    assert body["linhas"] == 20 and body["truncada"] is True
    assert len(body["series"][0]["values"]) == 20
    r = await console.post(URL, json={"consulta": f"SELECT p FROM readings WHERE {RECENT} GROUP BY device"},
                           headers=auth(console))
    body = r.json()
    assert body["linhas"] == 20 and body["truncada"] is True
    assert sum(len(s["values"]) for s in body["series"]) == 20
    assert body["series"][0]["tags"] == {"device": "00000000000000a0"}


@pytest.mark.asyncio
@pytest.mark.parametrize(("statement", "detail"), [
    ("DROP DATABASE cds", "Só consultas SELECT ou SHOW são aceitas no console; 'DROP' foi recusado."),
    ("drop measurement readings", "'DROP' foi recusado"),
    ("DELETE FROM readings", "'DELETE' foi recusado"),
    ("CREATE USER eve WITH PASSWORD 'x' WITH ALL PRIVILEGES", "'CREATE' foi recusado"),
    ("GRANT ALL PRIVILEGES TO eve", "'GRANT' foi recusado"),
    ("ALTER RETENTION POLICY raw ON cds DURATION 1h", "'ALTER' foi recusado"),
    ("KILL QUERY 1", "'KILL' foi recusado"),
    ("EXPLAIN ANALYZE SELECT * FROM readings", "'EXPLAIN' foi recusado"),
    (f"SELECT * INTO copy FROM readings WHERE {RECENT}", "SELECT ... INTO grava dados"),
    (f"SELECT * INTO other..copy FROM readings WHERE {RECENT} GROUP BY *", "SELECT ... INTO grava dados"),
    (f"SELECT p FROM readings WHERE {RECENT}; DROP DATABASE cds", "Envie uma única consulta por vez"),
    (f"SELECT p FROM readings WHERE {RECENT}; SELECT p FROM readings WHERE {RECENT}", "uma única consulta"),
    ("SHOW USERS", "SHOW USERS não é aceito no console"),
    ("SHOW GRANTS FOR admin", "SHOW GRANTS FOR não é aceito"),
    ("SHOW QUERIES", "SHOW QUERIES não é aceito"),
    ("SHOW DIAGNOSTICS", "SHOW DIAGNOSTICS não é aceito"),
    ("SELECT p FROM readings", "precisam de um início de período"),
    ("SELECT p FROM readings WHERE time > now() - 30d", "passa do máximo de 7 dias"),
    ("SELECT p FROM raw.readings WHERE time > '2020-01-01' AND time < '2020-02-01'", "(31 dias) passa do máximo"),
    ("SELECT max(c) FROM (SELECT count(p) AS c FROM readings GROUP BY time(1m))", "início de período"),
    (f"SELECT p FROM readings WHERE {RECENT} -- DROP", "Comentários"),
    ("SELECT p FROM readings WHERE time > $inicio", "Parâmetros ($nome) não são aceitos"),
    ("SELECT p FROM readings WHERE time > p", "Condição de tempo não reconhecida"),
    ('from(bucket: "cds") |> range(start: -1h)', "Flux não é aceito"),
    ("", "Informe a consulta InfluxQL"),
    ("SELECT p FROM \"readings WHERE time > now()", "não fechado"),
], ids=lambda v: v[:40] if isinstance(v, str) else v)
async def test_refused_statements_are_400_in_portuguese_and_change_nothing(
        console: AsyncTestClient[Any], secure_influx: InfluxService, unique_id: str, statement: str,
        detail: str) -> None:
    users = secure_influx.rows("SHOW USERS", epoch=None)
    r = await console.post(URL, json={"consulta": statement}, headers=auth(console))
    assert r.status_code == 400, r.text
    assert detail in r.json()["detail"]
    assert count(secure_influx, unique_id) == 50
    assert secure_influx.rows("SHOW USERS", epoch=None) == users


@pytest.mark.asyncio
async def test_another_database_is_refused_by_influxdb(console: AsyncTestClient[Any],
                                                       secure_influx: InfluxService, unique_id: str) -> None:
    other = f"{unique_id}_other"
    secure_influx.create_database(other)
    secure_influx.write(other, ["secret v=1"])
    try:
        r = await console.post(URL, json={"consulta": "SHOW MEASUREMENTS", "db": other}, headers=auth(console))
        assert r.status_code == 403, r.text
        assert "O InfluxDB recusou a consulta" in r.json()["detail"] and f"requires READ on {other}" in \
            r.json()["detail"]
        q = f'SELECT * FROM "{other}"."autogen"."secret" WHERE {RECENT}'
        r = await console.post(URL, json={"consulta": q}, headers=auth(console))
        assert r.status_code == 403
    finally:
        secure_influx.query(f'DROP DATABASE "{other}"', epoch=None)


@pytest.mark.asyncio
@pytest.mark.parametrize("body", [{"consulta": "SHOW DATABASES", "db": "a b"}, {"consulta": "SHOW DATABASES",
                                                                                 "db": "x" * 65},
                                  {"consulta": "SHOW DATABASES", "banco": "cds"}, {"query": "SHOW DATABASES"},
                                  {"consulta": 1}])
async def test_bad_bodies_are_400(console: AsyncTestClient[Any], body: dict[str, Any]) -> None:
    r = await console.post(URL, json=body, headers=auth(console))
    assert r.status_code == 400, r.text


@pytest.mark.asyncio
async def test_timeout_stops_the_statement_in_influxdb_too(secure_influx: InfluxService, unique_id: str,
                                                           wait_for_async: Any) -> None:
    settings = console_settings(secure_influx, unique_id, influxql_timeout_s=0.5, retention_raw="INF",
                                influxql_max_raw_range_s=10 * 365 * 86400)
    # about 190 million one-second buckets filled with zeros: minutes of work before the first row
    slow = ("SELECT max(c) FROM (SELECT count(p) AS c FROM readings WHERE time >= '2020-01-01T00:00:00Z' "
            "AND time < '2026-01-01T00:00:00Z' GROUP BY time(1s) fill(0))")
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            secure_influx.write(unique_id, ["readings,device=00000000000000a0 p=1 1700000000000"])
            r = await client.post(URL, json={"consulta": slow}, headers=auth(client))
            assert r.status_code == 504, r.text
            assert "passou do tempo limite de 0.5 s" in r.json()["detail"]

            def console_queries() -> list[str]:
                return [q["query"] for q in secure_influx.rows("SHOW QUERIES", epoch=None) if "fill(0)" in q["query"]]

            await wait_for_async(lambda: not console_queries(), timeout=10,
                                 what=lambda: f"the aborted query to leave InfluxDB: {console_queries()}")
    finally:
        drop(secure_influx, unique_id)


@pytest.mark.asyncio
async def test_console_is_off_without_a_read_only_user(secure_influx: InfluxService, unique_id: str) -> None:
    settings = console_settings(secure_influx, unique_id, influx_readonly_username="", influx_readonly_password="")
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            r = await client.post(URL, json={"consulta": "SHOW DATABASES"}, headers=auth(client))
            assert r.status_code == 503
            assert "BACKEND_INFLUX_READONLY_USERNAME" in r.json()["detail"]
    finally:
        drop(secure_influx, unique_id)


@pytest.mark.asyncio
async def test_console_refuses_to_run_on_an_influxdb_without_authentication(influx: InfluxService,
                                                                              unique_id: str) -> None:
    settings = console_settings(influx, unique_id, influx_username="", influx_password="")
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            r = await client.post(URL, json={"consulta": "SHOW DATABASES"}, headers=auth(client))
            assert r.status_code == 503
            assert "sem autenticação" in r.json()["detail"]
    finally:
        drop(influx, unique_id)
