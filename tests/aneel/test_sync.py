"""Scheduled ANEEL pulls into the real InfluxDB: idempotent upserts, change reports, ANEEL down, two replicas."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import pytest
import pytest_asyncio

from backend.aneel.client import AneelClient
from backend.aneel.records import TARIFFS_RESOURCE
from backend.aneel.sites import parse_sites
from backend.aneel.store import AneelData, AneelStore
from backend.aneel.sync import sync
from backend.store.influx import InfluxClient
from devstack.aneel_fake import FakeCkan
from devstack.aneel_rows import REAL_TARIFFS

SITES = list(parse_sites("""
[[site]]
id = "bh"
distributor = "CEMIG-D"
[[site]]
id = "rio"
distributor = "60444437000146"
modality = "Branca"
""").values())


@pytest.fixture
def fake() -> Iterator[FakeCkan]:
    server = FakeCkan().start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def store(influx, unique_id: str) -> AsyncIterator[AneelStore]:  # type: ignore[no-untyped-def]
    async with InfluxClient(influx.url) as client:
        s = AneelStore(client, unique_id)
        await s.ensure_schema()
        yield s
        await client.execute(f'DROP DATABASE "{unique_id}"', epoch=None)


def client_for(fake: FakeCkan) -> AneelClient:
    return AneelClient(fake.url, timeout_s=0.5, attempts=2, backoff_s=0.01, backoff_max_s=0.02)


@pytest.mark.asyncio
async def test_sync_stores_tariffs_and_flags_and_repull_is_idempotent(fake: FakeCkan, store: AneelStore) -> None:
    async with client_for(fake) as c:
        first = await sync(c, store, SITES)
        assert first.ok, first.error
        assert first.distributors == ["06981180000116", "60444437000146"]
        # CEMIG-D B1 rows with base "Tarifa de Aplicação": 3.589 (3 subclasses/details) + 3.459 twice; Light 4
        # plus its 4 SCEE rows (DscDetalhe "SCEE" is kept: the GD bill prices compensated energy with it).
        assert first.tariffs == 13 and len(first.added) == 13 and first.unchanged == 0
        assert first.components == 0  # no GD site: Componentes Tarifárias are not pulled
        assert len(first.flags_added) == 24
        second = await sync(c, store, SITES)
    assert second.ok and second.added == [] and second.changed == [] and second.unchanged == 13
    assert len(await store.tariffs()) == 13
    assert len(await store.months()) == 24
    data = AneelData(store)
    await data.load()
    choice = data.tariffs.energy_tariffs("06981180000116", dt.date(2026, 6, 1), subgroup="B1",
                                         modality="Convencional")
    assert choice["Não se aplica"].record.energy_rs_kwh == Decimal("0.90329")
    assert data.flags.flag_for(dt.date(2026, 5, 1)).adder_rs_mwh == Decimal("18.85")


GD_SITES = list(parse_sites("""
[[site]]
id = "bh-solar"
distributor = "CEMIG-D"
[site.gd]
regime = "GD II"
state = "MG"
""").values())


@pytest.mark.asyncio
async def test_sync_pulls_fio_b_for_gd_sites_from_the_newest_component_resources(
    fake: FakeCkan, store: AneelStore
) -> None:
    """package_show finds componentes-tarifarias-2024..2026; the newest two are searched for TUSD_FioB of CEMIG-D
    (whose CNPJ lost its leading zero in the 2026 resource); other components (TUSD, TUSD_PT) stay out."""
    async with client_for(fake) as c:
        first = await sync(c, store, GD_SITES)
        assert first.ok and first.components_error == ""
        assert first.components == 3  # 2025: SCEE; 2026: SCEE and "Não se aplica"
        calls = fake.action_calls()
        assert [p["resource_id"] for p in calls[-2:]] == ["a4060165-3a0c-404f-926c-83901088b67c",
                                                          "e8717aa8-2521-453f-bf16-fbb9a16eea39"]
        assert (await sync(c, store, GD_SITES)).components == 3
    assert len(await store.components()) == 3  # the re-pull overwrote the same points
    data = AneelData(store)
    await data.load()
    fb = data.fio_b.fio_b("06981180000116", dt.date(2026, 7, 1), subgroup="B1", modality="Convencional",
                          posto="Não se aplica")
    assert (fb.rs_mwh, fb.source) == (Decimal("441.478264"), "ANEEL")


@pytest.mark.asyncio
async def test_a_failed_components_pull_keeps_the_tariffs(fake: FakeCkan, store: AneelStore) -> None:
    fake.resources.pop("e8717aa8-2521-453f-bf16-fbb9a16eea39")  # listed by nobody: package_show finds 2024/2025
    fake.resources["a4060165-3a0c-404f-926c-83901088b67c"].fields = ("Outro",)  # 409 on the filters
    async with client_for(fake) as c:
        report = await sync(c, store, GD_SITES)
    assert report.ok and report.tariffs > 0 and "409" in report.components_error


@pytest.mark.asyncio
async def test_sync_reports_a_changed_tariff_and_a_new_month(fake: FakeCkan, store: AneelStore) -> None:
    async with client_for(fake) as c:
        assert (await sync(c, store, SITES)).ok
        rows = [dict(r) for r in REAL_TARIFFS]
        for r in rows:
            if r["SigAgente"] == "LIGHT SESA" and r["DscModalidadeTarifaria"] == "Convencional":
                r["VlrTUSD"] = "580,00"  # a retified REH
        fake.replace_records(TARIFFS_RESOURCE, rows)
        fake.add_records("0591b8f6-fe54-437b-b72b-1aa2efd46e42", [{
            "DatGeracaoConjuntoDados": "2026-10-05", "DatCompetencia": "2026-10-01", "NomBandeiraAcionada": "Verde",
            "VlrAdicionalBandeira": ",00"}])
        report = await sync(c, store, SITES)
    assert report.ok
    assert len(report.changed) == 1 and "TUSD 578.56->580.00" in report.changed[0]
    assert report.flags_added == ["10/2026 Verde"]
    light = [r for r in await store.tariffs() if r.distributor == "LIGHT SESA" and r.modality == "Convencional"
             and r.detail == "Não se aplica"]
    assert [r.tusd for r in light] == [Decimal("580.00")]


@pytest.mark.asyncio
async def test_aneel_down_keeps_last_good_data_and_reports_age(fake: FakeCkan, store: AneelStore) -> None:
    async with client_for(fake) as c:
        assert (await sync(c, store, SITES)).ok
        data = AneelData(store, refresh_s=0)
        await data.load()
        fake.inject("html", count=50)
        report = await sync(c, store, SITES)
    assert not report.ok and "indisponível" in report.error
    status = await store.status()
    assert status.last_error and status.age_s is not None and status.age_s >= 0
    assert status.last_ok_at is not None and status.last_attempt_at is not None
    await data.load(force=True)
    assert len(data.tariffs.records) == 13  # still served


@pytest.mark.asyncio
async def test_influx_down_serves_the_in_memory_copy(fake: FakeCkan, store: AneelStore, influx) -> None:  # type: ignore[no-untyped-def]
    async with client_for(fake) as c:
        assert (await sync(c, store, SITES)).ok
    data = AneelData(store, refresh_s=0)
    await data.load()
    influx.stop()
    try:
        await data.load(force=True)
        assert data.load_error and len(data.tariffs.records) == 13
    finally:
        influx.start(timeout=60)


@pytest.mark.asyncio
async def test_two_replicas_syncing_at_once_write_the_same_data(fake: FakeCkan, store: AneelStore) -> None:
    async with client_for(fake) as a, client_for(fake) as b:
        ra, rb = await asyncio.gather(sync(a, store, SITES, replica="r1"), sync(b, store, SITES, replica="r2"))
    assert ra.ok and rb.ok
    stored = await store.tariffs()
    assert len(stored) == 13 and len({r.natural_key() for r in stored}) == 13
    assert len(await store.months()) == 24


@pytest.mark.asyncio
async def test_scheduler_waits_an_interval_after_success_and_retry_delay_after_failure(
        fake: FakeCkan, store: AneelStore) -> None:
    from backend.aneel.sync import AneelScheduler
    from backend.settings import Settings

    settings = Settings(aneel_sync_interval_s=86400, aneel_retry_s=900)
    async with client_for(fake) as c:
        sched = AneelScheduler(settings, store, AneelData(store), SITES, c)
        assert await sched._due_in() == 0.0  # never pulled: now
        assert (await sched.run_once()).ok
        assert 86000 < await sched._due_in() <= 86400
        fake.inject("500", count=10)
        assert not (await sched.run_once()).ok  # a failed manual pull does not advance a fresh schedule
        assert 86000 < await sched._due_in() <= 86400
        # Once the data is due, a failed pull is retried after aneel_retry_s: not a day later, not at once.
        sched.settings = Settings(aneel_sync_interval_s=0.001, aneel_retry_s=900)
        fake.inject("500", count=10)
        assert not (await sched.run_once()).ok
        assert 800 < await sched._due_in() <= 900
        assert len(sched.data.tariffs.records) == 13  # the last good data is still loaded
