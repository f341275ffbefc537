"""What slips past the console's checks cannot write, drop or read another database: InfluxDB refuses it.

These tests skip :mod:`backend.store.console` on purpose and hand statements straight to the READ-only user's
client (:class:`backend.store.readonly.ReadOnlyInflux`), against an InfluxDB with authentication on. Every one
must be refused by InfluxDB itself, and the data, users and retention policies must be as they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from backend.store.console import check_statement
from backend.store.influx import InfluxClient
from backend.store.influxql import StatementRefused
from backend.store.layout import AGGREGATED_RPS, ensure_schema
from backend.store.readonly import ConsoleForbidden, ReadOnlyInflux, ensure_readonly_user
from devstack.influxdb import InfluxService
from tests.consultas.conftest import ADMIN, RO_PASSWORD, console_settings, drop, readings

RECENT = "time > now() - 2h"


@pytest_asyncio.fixture
async def ro(secure_influx: InfluxService, unique_id: str) -> AsyncIterator[ReadOnlyInflux]:
    """The schema, the console's user (made by the backend's setup code) and 50 readings; its client."""
    settings = console_settings(secure_influx, unique_id)
    async with InfluxClient(secure_influx.url, username=ADMIN[0], password=ADMIN[1]) as admin:
        await ensure_schema(admin, settings)
    secure_influx.write(unique_id, readings())
    secure_influx.create_database(f"{unique_id}_other")
    secure_influx.write(f"{unique_id}_other", ["secret v=42"])
    async with ReadOnlyInflux(secure_influx.url, f"ro_{unique_id}", RO_PASSWORD, timeout_s=10,
                              max_rows=100) as client:
        yield client
    secure_influx.query(f'DROP DATABASE "{unique_id}_other"', epoch=None)
    drop(secure_influx, unique_id)


def state(influx: InfluxService, db: str) -> dict[str, Any]:
    """Everything a successful escape would change."""
    return {
        "databases": sorted(r["name"] for r in influx.rows("SHOW DATABASES", epoch=None)),
        "users": influx.rows("SHOW USERS", epoch=None),
        "grants": influx.rows(f'SHOW GRANTS FOR "ro_{db}"', epoch=None),
        "policies": influx.rows(f'SHOW RETENTION POLICIES ON "{db}"', epoch=None),
        "measurements": influx.rows("SHOW MEASUREMENTS", db=db, epoch=None),
        "count": influx.rows('SELECT count(p) FROM "readings"', db=db)[0]["count"],
        "other": influx.rows('SELECT v FROM "secret"', db=f"{db}_other"),
    }


ESCAPES = [
    "DROP DATABASE {db}",
    "DROP DATABASE {db}_other",
    "DROP MEASUREMENT readings",
    "DROP SERIES FROM readings",
    "DELETE FROM readings",
    "DELETE FROM readings WHERE time < now()",
    "SELECT * INTO {db}..copied FROM readings WHERE " + RECENT + " GROUP BY *",
    "SELECT * INTO {db}_other..stolen FROM readings WHERE " + RECENT + " GROUP BY *",
    "CREATE USER eve WITH PASSWORD 'eve' WITH ALL PRIVILEGES",
    "CREATE USER eve WITH PASSWORD 'eve'",
    "GRANT ALL PRIVILEGES TO ro_{db}",
    "GRANT WRITE ON {db} TO ro_{db}",
    "SET PASSWORD FOR admin = 'owned'",
    "REVOKE ALL PRIVILEGES FROM admin",
    "CREATE DATABASE eve",
    "CREATE RETENTION POLICY eve ON {db} DURATION 1h REPLICATION 1 DEFAULT",
    "ALTER RETENTION POLICY raw ON {db} DURATION 1h",
    "DROP RETENTION POLICY r1h ON {db}",
    "CREATE CONTINUOUS QUERY eve ON {db} BEGIN SELECT count(p) INTO {db}..copied FROM readings GROUP BY time(1m) "
    "END",
    "CREATE CONTINUOUS QUERY eve ON {db} BEGIN SELECT count(p) INTO {db}_other..copied FROM readings GROUP BY "
    "time(1m) END",
    "KILL QUERY 1",
    "SHOW USERS",
    "SHOW GRANTS FOR admin",
    "SHOW DIAGNOSTICS",
    "SHOW SHARDS",
    "SELECT * FROM {db}_other..secret",
]
OTHER_DATABASE = [  # statements the console's checks accept (they do not know the privileges): InfluxDB decides
    "SELECT * FROM \"{db}_other\".\"autogen\".\"secret\" WHERE " + RECENT,
    "SELECT count(v) FROM {db}_other.autogen.secret WHERE " + RECENT,
    "SHOW MEASUREMENTS ON {db}_other",
    "SHOW RETENTION POLICIES ON {db}_other",
    "SHOW SERIES ON {db}_other",
    "SHOW FIELD KEYS ON {db}_other",
]


def checks(statement: str) -> None:
    check_statement(statement, now_ns=time.time_ns(), max_raw_range_ns=7 * 86400 * 10**9,
                    uncapped_rps=AGGREGATED_RPS)


@pytest.mark.asyncio
@pytest.mark.parametrize("template", ESCAPES + OTHER_DATABASE, ids=lambda t: t[:48])
async def test_influxdb_refuses_what_the_read_only_user_may_not_do(
        ro: ReadOnlyInflux, secure_influx: InfluxService, unique_id: str, template: str) -> None:
    statement = template.format(db=unique_id)
    if template in ESCAPES:
        with pytest.raises(StatementRefused):  # the first line refuses it too; here we go around it
            checks(statement)
    else:
        checks(statement)  # slips past the checks
    before = state(secure_influx, unique_id)
    with pytest.raises(ConsoleForbidden) as refused:
        await ro.run(statement, unique_id)
    assert "not authorized" in refused.value.detail
    assert state(secure_influx, unique_id) == before


@pytest.mark.asyncio
async def test_influxdb_refuses_a_write_through_the_read_only_user(
        ro: ReadOnlyInflux, secure_influx: InfluxService, unique_id: str) -> None:
    before = state(secure_influx, unique_id)
    async with httpx.AsyncClient(base_url=secure_influx.url, auth=(f"ro_{unique_id}", RO_PASSWORD)) as client:
        for db in (unique_id, f"{unique_id}_other"):
            r = await client.post("/write", params={"db": db}, content=b"readings,device=00000000000000ee p=666 1")
            assert r.status_code == 403, r.text
            assert f'"ro_{unique_id}" user is not authorized to write to database' in r.json()["error"]
    assert state(secure_influx, unique_id) == before


@pytest.mark.asyncio
async def test_the_read_only_user_still_reads(ro: ReadOnlyInflux, unique_id: str) -> None:
    result = await ro.run(f"SELECT count(p) FROM readings WHERE {RECENT}", unique_id)
    assert result.series[0].values[0][1] == 50


@pytest.mark.asyncio
async def test_setup_takes_extra_privileges_away_from_an_existing_user(secure_influx: InfluxService,
                                                                       unique_id: str) -> None:
    user = f"ro_{unique_id}"
    secure_influx.create_database(f"{unique_id}_other")
    secure_influx.query(f"CREATE USER \"{user}\" WITH PASSWORD 'old' WITH ALL PRIVILEGES", epoch=None)
    secure_influx.query(f'GRANT ALL ON "{unique_id}_other" TO "{user}"', epoch=None)
    try:
        settings = console_settings(secure_influx, unique_id)
        async with InfluxClient(secure_influx.url, username=ADMIN[0], password=ADMIN[1]) as admin:
            await ensure_schema(admin, settings)
            await ensure_schema(admin, settings)  # idempotent
        users = {u["user"]: u["admin"] for u in secure_influx.rows("SHOW USERS", epoch=None)}
        assert users[user] is False
        grants = {(g["database"], g["privilege"]) for g in secure_influx.rows(f'SHOW GRANTS FOR "{user}"',
                                                                               epoch=None)}
        assert grants - {(f"{unique_id}_other", "NO PRIVILEGES")} == {(unique_id, "READ")}
        async with ReadOnlyInflux(secure_influx.url, user, RO_PASSWORD, timeout_s=5, max_rows=10) as client:
            await client.run("SHOW MEASUREMENTS", unique_id)  # the password was reset to the configured one
    finally:
        secure_influx.query(f'DROP DATABASE "{unique_id}_other"', epoch=None)
        drop(secure_influx, unique_id)


@pytest.mark.asyncio
async def test_setup_without_admin_rights_logs_and_goes_on(secure_influx: InfluxService, unique_id: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    secure_influx.create_database(unique_id)
    secure_influx.query(f"CREATE USER \"be_{unique_id}\" WITH PASSWORD 'be'", epoch=None)
    secure_influx.query(f'GRANT ALL ON "{unique_id}" TO "be_{unique_id}"', epoch=None)
    try:
        settings = console_settings(secure_influx, unique_id, influx_username=f"be_{unique_id}",
                                    influx_password="be")
        with caplog.at_level(logging.WARNING, logger="backend.store.readonly"):
            async with InfluxClient(secure_influx.url, username=f"be_{unique_id}", password="be") as backend:
                await ensure_readonly_user(backend, settings)
        assert "read-only user not managed" in caplog.text
        assert f"ro_{unique_id}" not in {u["user"] for u in secure_influx.rows("SHOW USERS", epoch=None)}
    finally:
        secure_influx.query(f'DROP USER "be_{unique_id}"', epoch=None)
        drop(secure_influx, unique_id)


@pytest.mark.asyncio
async def test_known_gap_influxdb_1x_lets_a_read_user_create_a_same_database_continuous_query(
        ro: ReadOnlyInflux, secure_influx: InfluxService, unique_id: str, caplog: pytest.LogCaptureFixture) -> None:
    """InfluxDB 1.x asks only READ for a continuous query whose INTO target names no database. The console's
    checks refuse it (first line); InfluxDB does not (this test fails, as good news, the day it does); the
    backend's setup reports it."""
    statement = f"CREATE CONTINUOUS QUERY eve ON {unique_id} BEGIN SELECT count(p) INTO copied FROM readings " \
                "GROUP BY time(1m) END"
    with pytest.raises(StatementRefused, match="'CREATE' foi recusado"):
        check_statement(statement, now_ns=0, max_raw_range_ns=1, uncapped_rps=AGGREGATED_RPS)
    await ro.run(statement, unique_id)  # accepted by InfluxDB 1.6
    assert [r["name"] for r in secure_influx.rows("SHOW CONTINUOUS QUERIES", epoch=None) if r["name"] == "eve"]
    with pytest.raises(ConsoleForbidden, match="requires WRITE"):  # and the user cannot drop it again
        await ro.run(f"DROP CONTINUOUS QUERY eve ON {unique_id}", unique_id)
    with caplog.at_level(logging.WARNING, logger="backend.store.readonly"):
        async with InfluxClient(secure_influx.url, username=ADMIN[0], password=ADMIN[1]) as admin:
            await ensure_schema(admin, console_settings(secure_influx, unique_id))
    assert "continuous queries found on the backend's database" in caplog.text
    secure_influx.query(f"DROP CONTINUOUS QUERY eve ON {unique_id}", epoch=None)


@pytest.mark.asyncio
@pytest.mark.parametrize(("cap", "rows", "truncated", "series"), [(25, 25, True, 1), (50, 50, False, 2),
                                                                  (26, 26, True, 2), (49, 49, True, 2)])
async def test_row_cap_across_series_boundaries(ro: ReadOnlyInflux, secure_influx: InfluxService, unique_id: str,
                                                cap: int, rows: int, truncated: bool, series: int) -> None:
    """50 readings, 25 per device, GROUP BY device: the cap falls at, before and after the series boundary."""
    async with ReadOnlyInflux(secure_influx.url, f"ro_{unique_id}", RO_PASSWORD, timeout_s=5,
                              max_rows=cap) as client:
        result = await client.run(f"SELECT p FROM readings WHERE {RECENT} GROUP BY device", unique_id)
    assert (result.linhas, result.truncada, len(result.series)) == (rows, truncated, series)
    assert sum(len(s.values) for s in result.series) == rows
    assert all(s.values for s in result.series)
