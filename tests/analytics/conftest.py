"""Shared fixtures for the analytics tests that run against the real InfluxDB."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from backend.analytics.service import AnalyticsService
from backend.aneel.store import AneelData, AneelStore
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ensure_schema


def ms(d: dt.datetime) -> int:
    return int(d.timestamp() * 1000)


@pytest_asyncio.fixture
async def env(influx, unique_id: str) -> AsyncIterator[tuple[Settings, InfluxClient]]:  # type: ignore[no-untyped-def]
    """Settings for a fresh database named after the test (schema created, no retention limit, rollups settle
    at once) and a client on it; the database is dropped afterwards."""
    settings = Settings(influx_url=influx.url, influx_db=unique_id, retention_raw="INF", retention_1m="INF",
                        rollup_settle_s=0.0)
    async with InfluxClient(influx.url) as client:
        await ensure_schema(client, settings)
        yield settings, client
        await client.execute(f'DROP DATABASE "{unique_id}"', epoch=None)


def service(settings: Settings, client: InfluxClient, sites: dict[str, Any] | None = None) -> AnalyticsService:
    store = AneelStore(client, settings.influx_db)
    return AnalyticsService(settings=settings, influx=client, sites=sites or {}, data=AneelData(store), store=store)
