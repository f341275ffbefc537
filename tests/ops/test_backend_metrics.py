"""The backend metrics the alert rules added: readings per site (CDSSiteReadingsStopped) and the time of the last
ANEEL and ONS pull (CDSAneelDataStale, CDSOnsDataStale), against the real broker, InfluxDB and the fake portals."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

import backend.metrics
from backend.aneel.client import AneelClient
from backend.aneel.sites import parse_sites
from backend.aneel.store import AneelData, AneelStore
from backend.aneel.sync import AneelScheduler
from backend.api.app import create_app
from backend.metrics import OTHER_SITE, Metrics
from backend.ons.client import OnsClient
from backend.ons.datasets import BALANCE
from backend.ons.store import OnsStore
from backend.ons.sync import OnsScheduler
from backend.settings import Settings
from backend.store.influx import InfluxClient
from devstack.aneel_fake import FakeCkan
from devstack.influxdb import InfluxService
from devstack.mosquitto import MosquittoService
from devstack.ons_fake import FakeOns
from tests.backend.conftest import Publisher, batch_bytes, make_settings, purge_session, reading

SITES = list(parse_sites('[[site]]\nid = "bh"\ndistributor = "CEMIG-D"\n').values())


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def test_site_label_values_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend.metrics, "MAX_SITE_LABELS", 2)
    m = Metrics()
    for site, n in (("casa-1", 5), ("casa-2", 7), ("casa-3", 1), ("casa-1", 5), ("invented-4", 2)):
        m.count_site_readings(site, n)
    assert sample(m, "cds_ingest_site_readings_total", site="casa-1") == 10
    assert sample(m, "cds_ingest_site_readings_total", site="casa-2") == 7
    assert sample(m, "cds_ingest_site_readings_total", site=OTHER_SITE) == 3  # casa-3 and invented-4


def test_error_and_outcome_series_exist_before_the_first_event() -> None:
    """increase() cannot see a series' first increment: the alerts need these at 0 from the start."""
    m = Metrics()
    for kind in ("unavailable", "rejected"):
        assert sample(m, "cds_influx_write_errors_total", kind=kind) == 0
    assert sample(m, "cds_rollup_passes_total", outcome="error") == 0
    assert sample(m, "cds_ingest_receipts_total", outcome="failed") == 0


@pytest.mark.asyncio
async def test_ingest_counts_readings_per_site(broker: MosquittoService, influx: InfluxService, unique_id: str,
                                              wait_for_async: Any) -> None:
    settings = make_settings(broker, influx, unique_id)
    app = create_app(settings)
    publisher = Publisher(broker)
    try:
        async with AsyncTestClient(app) as http:
            metrics = app.state.services.metrics
            # the shared subscription exists once connected: a batch published before it would go nowhere
            assert await app.state.services.ingest.bridge.wait_connected(10)
            now = int(time.time() * 1000)
            sites = ((f"{unique_id}-a", 3, "00000000000000c1"), (f"{unique_id}-b", 5, "00000000000000c2"))
            for site, n, device in sites:  # a meter belongs to one site
                publisher.publish(f"cds/v1/{site}/gw/up/readings", batch_bytes(
                    site, "gw", [reading(device, i, now - 1000 * (n - i)) for i in range(n)]))
            publisher.wait_all_acked()
            await wait_for_async(lambda: sample(metrics, "cds_ingest_site_readings_total", site=f"{unique_id}-b"),
                                 timeout=30, what="readings of site b counted")
            assert sample(metrics, "cds_ingest_site_readings_total", site=f"{unique_id}-a") == 3
            assert sample(metrics, "cds_ingest_site_readings_total", site=f"{unique_id}-b") == 5
            text = (await http.get("/metrics")).text  # served without a token, as Prometheus scrapes it
            assert f'cds_ingest_site_readings_total{{site="{unique_id}-b"}} 5.0' in text
    finally:
        publisher.close()
        purge_session(broker.host, broker.port, settings.resolved_client_id())
        influx.query(f'DROP DATABASE "{unique_id}"', epoch=None)


@pytest.fixture
def ckan() -> Iterator[FakeCkan]:
    server = FakeCkan().start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def client(influx: InfluxService, unique_id: str) -> AsyncIterator[InfluxClient]:
    async with InfluxClient(influx.url) as c:
        yield c
        await c.execute(f'DROP DATABASE "{unique_id}"', epoch=None)


@pytest.mark.asyncio
async def test_aneel_scheduler_exports_the_last_pull_of_any_replica(ckan: FakeCkan, client: InfluxClient,
                                                                    unique_id: str) -> None:
    store = AneelStore(client, unique_id)
    await store.ensure_schema()
    settings = Settings(aneel_sync_interval_s=86400, aneel_retry_s=900)
    mine, peers = Metrics(), Metrics()
    async with AneelClient(ckan.url, timeout_s=0.5, attempts=2, backoff_s=0.01, backoff_max_s=0.02) as c:
        sched = AneelScheduler(settings, store, AneelData(store), SITES, c, metrics=mine)
        assert await sched._due_in() == 0.0
        assert sample(mine, "cds_aneel_last_sync_timestamp_seconds") == 0  # never pulled: not known
        before = time.time()
        assert (await sched.run_once()).ok
        pulled = sample(mine, "cds_aneel_last_sync_timestamp_seconds")
        assert pulled is not None and before <= pulled <= time.time()
        ckan.inject("500", count=10)
        assert not (await sched.run_once()).ok
        assert sample(mine, "cds_aneel_last_sync_timestamp_seconds") == pulled  # a failed pull changes nothing
        # another replica, which did not pull, learns it from the sync log when it checks its schedule
        peer = AneelScheduler(settings, store, AneelData(store), SITES, c, metrics=peers)
        assert await peer._due_in() > 86000
        assert abs(sample(peers, "cds_aneel_last_sync_timestamp_seconds") - pulled) < 2  # type: ignore[operator]


@pytest.mark.asyncio
async def test_ons_scheduler_exports_the_last_pull_of_any_replica(client: InfluxClient, unique_id: str) -> None:
    store = OnsStore(client, unique_id)
    await store.ensure_schema()
    in_six_hours = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)).strftime("%H:%M")
    settings = Settings(ons_retry_s=600.0, ons_sync_times=in_six_hours)
    fake = FakeOns(until=dt.date(2026, 1, 7)).start()
    try:
        async with OnsClient(fake.url, timeout_s=5, attempts=2, backoff_s=0.01, backoff_max_s=0.02) as c:
            mine = Metrics()
            sched = OnsScheduler(settings, store, c, [BALANCE], first_year=2026, metrics=mine)
            assert await sched.due_in() == 0.0
            assert sample(mine, "cds_ons_last_sync_timestamp_seconds") == 0
            before = time.time()
            assert (await sched.run_once()).ok
            pulled = sample(mine, "cds_ons_last_sync_timestamp_seconds")
            assert pulled is not None and before <= pulled <= time.time()
            fake.down = True
            assert not (await sched.run_once()).ok
            assert sample(mine, "cds_ons_last_sync_timestamp_seconds") == pulled
            peers = Metrics()
            await OnsScheduler(settings, store, c, [BALANCE], first_year=2026, metrics=peers).due_in()
            assert abs(sample(peers, "cds_ons_last_sync_timestamp_seconds") - pulled) < 2  # type: ignore[operator]
    finally:
        fake.stop()
