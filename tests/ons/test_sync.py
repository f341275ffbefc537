"""Pulls from the fake ONS into the real InfluxDB: HEAD-only re-pulls, the growing current year, a file rewritten
with revised values, DST years, the SIN row, CSV = Parquet, two replicas at once, ONS down, the schedule."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from typing import Any

import pytest

from backend.ons.catalog import DataFile
from backend.ons.client import OnsClient
from backend.ons.datasets import BALANCE, DATASETS, SUBSYSTEMS
from backend.ons.grid import GridData
from backend.ons.store import OnsStore
from backend.ons.sync import OnsScheduler, slots_around, sync, sync_file
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ONS_BALANCE, ONS_BALANCE_DAY, ONS_CMO, ONS_LOAD
from devstack.ons_fake import FakeOns
from protocol.timebase import TZ
from tests.ons.conftest import ms

ALL = list(DATASETS.values())


async def value(store: OnsStore, wall: str, subsystem: str, source: str) -> list[float]:
    rows = await store.influx.rows(
        f"SELECT mwh FROM {store.t(ONS_BALANCE)} WHERE time = {ms(wall)}ms AND subsystem = $s AND source = $src",
        db=store.db, params={"s": subsystem, "src": source})
    return [r["mwh"] for r in rows]


async def count(store: OnsStore, measurement: str, field: str = "mwh") -> int:
    rows = await store.influx.rows(f"SELECT count({field}) FROM {store.t(measurement)}", db=store.db)
    return int(rows[0]["count"]) if rows else 0


@pytest.mark.asyncio
async def test_first_pull_stores_the_literal_rows_and_a_second_pull_only_asks_head(
        fake: FakeOns, client: OnsClient, store: OnsStore) -> None:
    first = await sync(client, store, ALL, first_year=2026)
    assert first.ok, first.errors
    assert first.files_checked == first.files_read == 3
    assert first.parse.sin_rows == 238 * 24 and first.parse.bad == 0
    n = {s: (await value(store, "2026-01-01T00:00", "N", s))[0] for s in ("hidraulica", "termica", "eolica", "solar",
                                                                          "carga", "intercambio")}
    assert n == {"hidraulica": 11587.046, "termica": 1864.907, "eolica": 263.019, "solar": 0.0, "carga": 7622.606,
                 "intercambio": 6094.172}
    tags = await store.influx.rows(f"SHOW TAG VALUES FROM {store.t(ONS_BALANCE).split('.', 1)[1]} "
                                   "WITH KEY = subsystem", db=store.db)
    assert sorted(r["value"] for r in tags) == sorted(SUBSYSTEMS)  # the SIN row is never stored
    assert await count(store, ONS_BALANCE) == 238 * 24 * 4 * 6 == first.points - await count(store, ONS_LOAD) \
        - await count(store, ONS_CMO, "rs_mwh") - await count(store, ONS_BALANCE_DAY)
    assert await count(store, ONS_BALANCE_DAY) == 238 * 4 * 6

    gets_before = len(fake.file_requests("GET"))
    second = await sync(client, store, ALL, first_year=2026)
    assert second.ok and second.files_read == 0 and second.points == 0
    assert {f.acao for f in second.files} == {"inalterado"}
    assert len(fake.file_requests("GET")) == gets_before and len(fake.file_requests("HEAD")) == 6


@pytest.mark.asyncio
async def test_the_growing_current_year_file_rewrites_only_the_month_that_changed(
        fake: FakeOns, client: OnsClient, store: OnsStore) -> None:
    assert (await sync(client, store, ALL, first_year=2026)).ok
    before = await count(store, ONS_BALANCE)
    fake.publish(dt.date(2026, 8, 28))  # two more days in the 2026 files
    report = await sync(client, store, ALL, first_year=2026)
    assert report.ok and report.files_read == 3
    assert {f.arquivo.split("/")[1]: f.meses_gravados for f in report.files} == {
        "balanco_energia_subsistema_ho": ["2026-08"], "curva-carga-ho": ["2026-08"], "cmo_tm": ["2026-08"]}
    assert await count(store, ONS_BALANCE) == before + 2 * 24 * 4 * 6
    assert await value(store, "2026-08-28T23:00", "NE", "eolica")


@pytest.mark.asyncio
async def test_a_file_rewritten_with_revised_values_is_reread_and_overwritten_not_duplicated(
        fake: FakeOns, client: OnsClient, store: OnsStore) -> None:
    assert (await sync(client, store, [BALANCE], first_year=2025)).ok
    old_2025 = await value(store, "2025-03-10T14:00", "NE", "eolica")
    before = await count(store, ONS_BALANCE)
    grid = GridData(store, stale_s=1e9)
    day = (ms("2025-03-10T00:00"), ms("2025-03-11T00:00"))
    (old_day,) = await grid.balance("NE", *day, "dia")
    fake.revise("balanco", 2025, "2025-03-10 14:00:00", "NE", "val_gereolica", 1234.5)  # a closed year, too
    fake.revise("balanco", 2025, "2025-03-10 15:00:00", "NE", "val_carga", 0.0)
    report = await sync(client, store, [BALANCE], first_year=2025)
    assert report.ok and [(f.arquivo.rsplit("/", 1)[1], f.acao, f.meses_gravados) for f in report.files] == [
        ("BALANCO_ENERGIA_SUBSISTEMA_2026.parquet", "inalterado", []),
        ("BALANCO_ENERGIA_SUBSISTEMA_2025.parquet", "lido", ["2025-03"])]
    assert await value(store, "2025-03-10T14:00", "NE", "eolica") == [1234.5] != old_2025
    assert await value(store, "2025-03-10T15:00", "NE", "carga") == [0.0]
    assert await count(store, ONS_BALANCE) == before
    (new_day,) = await grid.balance("NE", *day, "dia")  # the daily series follows the revision
    assert new_day.eolica == pytest.approx((old_day.eolica or 0) - old_2025[0] + 1234.5, abs=1e-3)


@pytest.mark.asyncio
async def test_dst_years_drop_the_placeholder_hour_and_keep_the_repeated_one_once(
        fake: FakeOns, client: OnsClient, store: OnsStore) -> None:
    url = f"{fake.url}/dataset/balanco_energia_subsistema_ho/BALANCO_ENERGIA_SUBSISTEMA_2018.csv"
    f = DataFile(dataset="balanco", year=2018, month=0, format="csv", url=url, name="2018", modified="")
    report, stats = await sync_file(client, store, BALANCE, f, None)
    assert report.acao == "lido" and stats.dst_placeholders == 4 and stats.bad == 0
    assert await value(store, "2018-11-04T01:00", "SE", "hidraulica") == [29274.58299999]
    grid = GridData(store, stale_s=1e9)
    days = {b.inicio[:10]: b for b in await grid.balance("SE", ms("2018-02-17T00:00"), ms("2018-02-19T00:00"),
                                                         "dia")}
    assert days["2018-02-17"].horas == 24  # a 25-hour local day: the repeated hour is in the file once
    nov = await grid.balance("SIN", ms("2018-11-03T00:00"), ms("2018-11-06T00:00"), "dia")
    assert [b.horas for b in nov] == [24, 23, 24]  # the skipped hour has no row and no energy
    assert nov[1].inicio == "2018-11-04T01:00:00-02:00"  # the local day began at 01:00: midnight did not exist
    assert nov[2].inicio == "2018-11-05T00:00:00-02:00"


def sin_rows(fake: FakeOns, day: str) -> dict[str, float]:
    """The SIN row's sums for one day, read straight from the fake's CSV (ONS's own total)."""
    body = fake.file(fake.package("balanco"), int(day[:4]), "csv").body.decode()
    out: dict[str, float] = {}
    for row in csv.DictReader(io.StringIO(body), delimiter=";"):
        if row["id_subsistema"].strip() == "SIN" and row["din_instante"].startswith(day):
            for k in ("val_gerhidraulica", "val_carga"):
                out[k] = out.get(k, 0.0) + float(row[k])
    return out


@pytest.mark.asyncio
async def test_sin_is_the_sum_of_the_four_and_matches_onss_own_sin_row_never_twice(
        fake: FakeOns, client: OnsClient, store: OnsStore) -> None:
    assert (await sync(client, store, [BALANCE], first_year=2026)).ok
    grid = GridData(store, stale_s=1e9)
    a, b = ms("2026-01-01T00:00"), ms("2026-01-02T00:00")
    (sin,) = await grid.balance("SIN", a, b, "dia")
    parts = [(await grid.balance(s, a, b, "dia"))[0] for s in SUBSYSTEMS]
    assert sin.carga == pytest.approx(sum(p.carga or 0 for p in parts), abs=0.01)
    own = sin_rows(fake, "2026-01-01")
    assert sin.carga == pytest.approx(own["val_carga"], abs=0.01)
    assert sin.hidraulica == pytest.approx(own["val_gerhidraulica"], abs=0.01)
    assert sin.horas == 24
    hourly = await grid.balance("SIN", a, a + 3_600_000, "hora")
    assert hourly[0].carga == 72695.81  # the research notes' SIN load of 2026-01-01 00:00


@pytest.mark.asyncio
async def test_csv_and_parquet_pulls_store_the_same_points(fake: FakeOns, client: OnsClient, store: OnsStore,
                                                           influx: Any) -> None:
    other = OnsStore(store.influx, store.db + "_csv")
    await other.ensure_schema()
    try:
        assert (await sync(client, store, [BALANCE], first_year=2026)).ok
        report = await sync(client, other, [BALANCE], first_year=2026, prefer="csv")
        assert report.ok and report.files[0].arquivo.endswith(".csv")
        q = "SELECT sum(mwh) FROM {} WHERE time >= '2026-05-01T00:00:00Z' GROUP BY subsystem, source"
        mine = {(r["subsystem"], r["source"]): r["sum"] for r in await store.influx.rows(
            q.format(store.t(ONS_BALANCE)), db=store.db)}
        theirs = {(r["subsystem"], r["source"]): r["sum"] for r in await other.influx.rows(
            q.format(other.t(ONS_BALANCE)), db=other.db)}
        assert mine.keys() == theirs.keys() and len(mine) == 24
        assert all(mine[k] == pytest.approx(theirs[k], rel=1e-12) for k in mine)
    finally:
        await store.influx.execute(f'DROP DATABASE "{other.db}"', epoch=None)


@pytest.mark.asyncio
async def test_two_replicas_pulling_at_once_write_identical_points(fake: FakeOns, store: OnsStore) -> None:
    async with OnsClient(fake.url, attempts=2, backoff_s=0.01) as c1, OnsClient(fake.url, attempts=2) as c2, \
            InfluxClient(store.influx.url) as influx2:
        twin = OnsStore(influx2, store.db)
        r1, r2 = await asyncio.gather(sync(c1, store, [BALANCE], first_year=2026, replica="a"),
                                      sync(c2, twin, [BALANCE], first_year=2026, replica="b"))
    assert r1.ok and r2.ok
    assert await count(store, ONS_BALANCE) == 238 * 24 * 4 * 6
    assert len(await store.file_states()) == 1


@pytest.mark.asyncio
async def test_ons_down_keeps_the_last_good_data_served_with_its_age(fake: FakeOns, client: OnsClient,
                                                                     store: OnsStore) -> None:
    assert (await sync(client, store, [BALANCE], first_year=2026)).ok
    fake.down = True
    report = await sync(client, store, [BALANCE], first_year=2026)
    assert not report.ok and "ONS indisponível após 3 tentativas" in report.errors[0]
    status = await store.status()
    assert status.last_error and status.age_s is not None and status.last_ok_at is not None
    now = await GridData(store, stale_s=4 * 86400).now()
    assert [s.subsistema for s in now.subsistemas] == ["SE", "S", "NE", "N", "SIN"]
    age = now.idade_dos_dados
    assert age.hora_mais_recente == "2026-08-26T23:00:00-03:00" and age.idade_s and age.idade_s > 0
    assert "ONS indisponível" in age.erro_ultima_tentativa and age.ultima_sincronizacao == status.last_ok_at
    assert await count(store, ONS_BALANCE) == 238 * 24 * 4 * 6


def test_pulls_are_scheduled_after_the_12h_and_19h_publications_brasilia_time() -> None:
    times = [dt.time(12, 40), dt.time(19, 40)]
    latest, upcoming = slots_around(dt.datetime(2026, 8, 28, 13, 0, tzinfo=TZ), times)
    assert (latest, upcoming) == (dt.datetime(2026, 8, 28, 12, 40, tzinfo=TZ), dt.datetime(2026, 8, 28, 19, 40,
                                                                                           tzinfo=TZ))
    latest, upcoming = slots_around(dt.datetime(2026, 8, 28, 2, 0, tzinfo=dt.UTC), times)  # 23:00 the day before
    assert latest == dt.datetime(2026, 8, 27, 19, 40, tzinfo=TZ) and upcoming == dt.datetime(2026, 8, 28, 12, 40,
                                                                                            tzinfo=TZ)


@pytest.mark.asyncio
async def test_scheduler_waits_for_the_next_publication_after_a_pull_and_backs_off_after_a_failure(
        fake: FakeOns, client: OnsClient, store: OnsStore) -> None:
    in_six_hours = (dt.datetime.now(TZ) + dt.timedelta(hours=6)).strftime("%H:%M")  # far from any boundary
    settings = Settings(ons_retry_s=600.0, ons_sync_times=in_six_hours)
    scheduler = OnsScheduler(settings, store, client, [BALANCE], first_year=2026)
    assert await scheduler.due_in() == 0.0  # never pulled: now
    assert (await scheduler.run_once()).ok
    _, upcoming = slots_around(dt.datetime.now(dt.UTC), scheduler.times)
    assert abs(await scheduler.due_in() - (upcoming - dt.datetime.now(dt.UTC)).total_seconds()) < 5
    fake.down = True
    await store.influx.execute('DROP MEASUREMENT "ons_sync"', db=store.db, epoch=None)  # forget the good pull
    assert not (await scheduler.run_once()).ok and not (await scheduler.run_once()).ok
    assert scheduler.failures == 2
    assert 1100 < await scheduler.due_in() <= 1200  # 600 s doubled, minus the seconds since the attempt
